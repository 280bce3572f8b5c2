"""The env table of a distributed job: which processes a node starts, with which variables (pure)."""

from __future__ import annotations

import json
import socket

import pytest

from cible.launch.distribution import (
    DistributionError,
    free_ports,
    node_processes,
    plan_processes,
    process_envs,
    tensorflow_tasks,
    world_size,
)

ONE_NODE = {"instance_count": 1, "node_rank": 0, "master_addr": "127.0.0.1", "master_port": 29500,
            "node_addrs": ["127.0.0.1"]}


def nodes(count: int, rank: int, port: int = 6105) -> dict:
    addrs = [f"10.0.0.{4 + i}" for i in range(count)]
    return {"instance_count": count, "node_rank": rank, "master_addr": addrs[0], "master_port": port,
            "node_addrs": addrs}


# -- no distribution -----------------------------------------------------------
@pytest.mark.parametrize("distribution", [None, {}])
def test_no_distribution_is_one_process_with_no_extra_variables(distribution):
    assert process_envs(distribution, **ONE_NODE) == [{}]
    assert node_processes(distribution, **ONE_NODE) == [(0, {})]


def test_ray_is_not_acted_on_one_process_per_node():
    assert node_processes({"type": "ray"}, **nodes(3, 2)) == [(2, {})]


# -- pytorch -------------------------------------------------------------------
def test_pytorch_single_node_two_processes():
    envs = process_envs({"type": "pytorch", "process_count_per_instance": 2}, **ONE_NODE)
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "NODE_RANK": "0"}
    assert envs == [{**common, "RANK": "0", "LOCAL_RANK": "0"}, {**common, "RANK": "1", "LOCAL_RANK": "1"}]


def test_pytorch_default_is_one_process_per_node():
    assert process_envs({"type": "pytorch"}, **ONE_NODE) == [
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "1", "NODE_RANK": "0",
         "RANK": "0", "LOCAL_RANK": "0"}
    ]


@pytest.mark.parametrize("node_rank", [0, 1, 2])
def test_pytorch_multi_node_ranks_are_node_rank_times_per_node_plus_local(node_rank: int):
    processes = node_processes({"type": "pytorch", "process_count_per_instance": 4}, **nodes(3, node_rank))
    assert [rank for rank, _ in processes] == [node_rank * 4 + i for i in range(4)]
    for local, (rank, env) in enumerate(processes):
        assert env == {"MASTER_ADDR": "10.0.0.4", "MASTER_PORT": "6105", "WORLD_SIZE": "12",
                       "NODE_RANK": str(node_rank), "RANK": str(rank), "LOCAL_RANK": str(local)}


def test_pytorch_every_rank_appears_once_across_the_nodes():
    dist = {"type": "pytorch", "process_count_per_instance": 3}
    ranks = [int(env["RANK"]) for n in range(4) for env in process_envs(dist, **nodes(4, n))]
    assert sorted(ranks) == list(range(12))


# -- mpi -----------------------------------------------------------------------
def test_mpi_single_node_names_the_master_host_without_port():
    envs = process_envs({"type": "mpi", "process_count_per_instance": 3}, **ONE_NODE)
    assert envs == [
        {"AZ_BATCHAI_MPI_MASTER_NODE": "127.0.0.1", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
         "OMPI_COMM_WORLD_RANK": str(i), "OMPI_COMM_WORLD_LOCAL_RANK": str(i)}
        for i in range(3)
    ]


def test_mpi_multi_node_master_is_ip_and_port_and_ranks_are_global():
    envs = process_envs({"type": "mpi", "process_count_per_instance": 2}, **nodes(2, 1, port=4000))
    assert envs == [
        {"AZ_BATCH_MASTER_NODE": "10.0.0.4:4000", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
         "OMPI_COMM_WORLD_RANK": str(2 + i), "OMPI_COMM_WORLD_LOCAL_RANK": str(i)}
        for i in range(2)
    ]
    assert all("AZ_BATCHAI_MPI_MASTER_NODE" not in env for env in envs)


def test_mpi_per_node_launcher_tip_one_process_per_node_rank_is_node_rank():
    for n in range(3):
        (env,) = process_envs({"type": "mpi", "process_count_per_instance": 1}, **nodes(3, n))
        assert env["OMPI_COMM_WORLD_RANK"] == str(n) and env["OMPI_COMM_WORLD_SIZE"] == "3"


# -- tensorflow ----------------------------------------------------------------
def tf_configs(dist: dict, ports: list[int] | None = None, **where) -> list[dict]:
    return [json.loads(env["TF_CONFIG"]) for env in process_envs(dist, ports=ports, **where)]


def test_tensorflow_single_node_workers_then_parameter_servers_on_given_ports():
    dist = {"type": "tensorflow", "worker_count": 2, "parameter_server_count": 1}
    configs = tf_configs(dist, ports=[5001, 5002, 5003], **ONE_NODE)
    cluster = {"worker": ["127.0.0.1:5001", "127.0.0.1:5002"], "ps": ["127.0.0.1:5003"]}
    assert configs == [
        {"cluster": cluster, "task": {"type": "worker", "index": 0}, "environment": "cloud"},
        {"cluster": cluster, "task": {"type": "worker", "index": 1}, "environment": "cloud"},
        {"cluster": cluster, "task": {"type": "ps", "index": 0}, "environment": "cloud"},
    ]
    ranks = [r for r, _ in node_processes(dist, ports=[5001, 5002, 5003], **ONE_NODE)]
    assert ranks == [0, 1, 2]


def test_tensorflow_without_parameter_servers_has_no_ps_job_and_default_ports_follow_master_port():
    (config,) = tf_configs({"type": "tensorflow", "worker_count": 1}, **ONE_NODE)
    assert config == {"cluster": {"worker": ["127.0.0.1:29500"]}, "task": {"type": "worker", "index": 0},
                      "environment": "cloud"}


def test_tensorflow_worker_count_defaults_to_one_per_instance():
    dist = {"type": "tensorflow", "parameter_server_count": 0}
    per_node = [tf_configs(dist, **nodes(3, n, port=2222)) for n in range(3)]
    assert [len(c) for c in per_node] == [1, 1, 1]
    for n, (config,) in enumerate(per_node):
        assert config["cluster"] == {"worker": ["10.0.0.4:2222", "10.0.0.5:2222", "10.0.0.6:2222"]}
        assert config["task"] == {"type": "worker", "index": n}


def test_tensorflow_multi_node_tasks_are_dealt_in_turn_and_every_node_agrees_on_the_cluster():
    dist = {"type": "tensorflow", "worker_count": 3, "parameter_server_count": 2}
    assert tensorflow_tasks(dist, 2) == [
        ("worker", 0, 0, 0), ("worker", 1, 1, 0), ("worker", 2, 0, 1), ("ps", 0, 1, 1), ("ps", 1, 0, 2),
    ]
    node0, node1 = (tf_configs(dist, **nodes(2, n, port=2222)) for n in range(2))
    cluster = {"worker": ["10.0.0.4:2222", "10.0.0.5:2222", "10.0.0.4:2223"], "ps": ["10.0.0.5:2223", "10.0.0.4:2224"]}
    assert all(c["cluster"] == cluster for c in node0 + node1)
    assert [c["task"] for c in node0] == [{"type": "worker", "index": 0}, {"type": "worker", "index": 2},
                                         {"type": "ps", "index": 1}]
    assert [c["task"] for c in node1] == [{"type": "worker", "index": 1}, {"type": "ps", "index": 0}]
    # Global ranks (log file names): workers first, then parameter servers.
    assert [r for r, _ in node_processes(dist, **nodes(2, 1, port=2222))] == [1, 3]


def test_tensorflow_too_few_ports_is_refused():
    with pytest.raises(DistributionError, match="port"):
        process_envs({"type": "tensorflow", "worker_count": 2}, ports=[5001], **ONE_NODE)


# -- the node layout itself ----------------------------------------------------
@pytest.mark.parametrize(
    ("where", "match"),
    [
        ({**ONE_NODE, "node_rank": 1}, "node rank 1 is outside"),
        ({**ONE_NODE, "instance_count": 2}, "1 node address"),
        ({**ONE_NODE, "instance_count": 0, "node_addrs": []}, "at least 1"),
    ],
)
def test_impossible_layouts_are_refused(where: dict, match: str):
    with pytest.raises(DistributionError, match=match):
        process_envs({"type": "pytorch"}, **where)


def test_plan_processes_one_node_picks_a_free_master_port_on_loopback():
    processes = plan_processes({"distribution": {"type": "pytorch", "process_count_per_instance": 2},
                                "instance_count": 1})
    assert [r for r, _ in processes] == [0, 1]
    env = processes[0][1]
    assert env["MASTER_ADDR"] == "127.0.0.1" and 1024 <= int(env["MASTER_PORT"]) < 65536
    assert processes[1][1]["MASTER_PORT"] == env["MASTER_PORT"]


def test_plan_processes_tensorflow_one_node_gets_distinct_free_ports():
    processes = plan_processes({"distribution": {"type": "tensorflow", "worker_count": 3,
                                                 "parameter_server_count": 1}})
    cluster = json.loads(processes[0][1]["TF_CONFIG"])["cluster"]
    addrs = cluster["worker"] + cluster["ps"]
    assert len(addrs) == 4 and len(set(addrs)) == 4 and all(a.startswith("127.0.0.1:") for a in addrs)


def test_plan_processes_uses_the_node_facts_a_cluster_agent_writes():
    plan = {"distribution": {"type": "pytorch", "process_count_per_instance": 2}, "instance_count": 2,
            "node_rank": 1, "node_addrs": ["10.1.0.1", "10.1.0.2"], "master_port": 6105}
    assert [(r, e["MASTER_ADDR"], e["MASTER_PORT"]) for r, e in plan_processes(plan)] == [
        (2, "10.1.0.1", "6105"), (3, "10.1.0.1", "6105")]


def test_plan_processes_several_nodes_without_node_facts_is_refused():
    with pytest.raises(DistributionError, match="local is one node; multi-node jobs need a cluster"):
        plan_processes({"distribution": {"type": "pytorch"}, "instance_count": 2})


@pytest.mark.parametrize(("distribution", "instances", "expected"), [
    ({"type": "pytorch", "process_count_per_instance": 2}, 2, 4),
    ({"type": "mpi", "process_count_per_instance": 3}, 2, 6),
    ({"type": "tensorflow", "worker_count": 3, "parameter_server_count": 1}, 2, 4),
    ({"type": "ray"}, 3, 3),
    (None, 1, 1),
])
def test_world_size_counts_every_process_of_every_node(distribution, instances, expected):
    assert world_size(distribution, instances) == expected
    every_rank = sorted(rank for node in range(instances)
                        for rank, _ in node_processes(distribution, **nodes(instances, node)))
    if distribution and distribution["type"] != "ray":  # no distribution/ray: each node is its own rank 0..n
        assert every_rank == list(range(expected))


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
