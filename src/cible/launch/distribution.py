"""Distributed jobs: which processes a node starts and the variables each one sees.

Azure (azureml-spec §3.3, §8.2) starts `instance_count x process_count_per_instance`
processes for `pytorch` and `mpi`, and `worker_count + parameter_server_count` tasks
for `tensorflow`, with these variables:

- pytorch: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NODE_RANK, RANK, LOCAL_RANK
  (scripts call `init_process_group(init_method="env://")`);
- mpi: OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE and
  AZ_BATCHAI_MPI_MASTER_NODE=<host> (one node) or AZ_BATCH_MASTER_NODE=<host>:<port>
  (several). cible starts the processes itself, no `mpirun`: scripts that read
  OMPI_COMM_WORLD_RANK (the docs' per-node launcher tip) work unchanged;
- tensorflow: TF_CONFIG, workers first then parameter servers, tasks dealt to the
  nodes in turn (task t runs on node t % instance_count);
- ray: not acted on yet (submit warns): one process per node, no variables.

Everything here is pure but `free_ports` and `plan_processes` (which reads the
plan's node facts and takes free ports for a single node). Stdlib only: the
launcher imports it.
"""

from __future__ import annotations

import json
import socket
from typing import Any

SINGLE_NODE_ADDR = "127.0.0.1"
SUPPORTED = ("pytorch", "mpi", "tensorflow")


class DistributionError(ValueError):
    """The job's distribution cannot run as asked (an unsupported type, a node layout that does not fit)."""


def node_processes(distribution: dict[str, Any] | None, *, instance_count: int, node_rank: int,
                   master_addr: str, master_port: int, node_addrs: list[str],
                   ports: list[int] | None = None) -> list[tuple[int, dict[str, str]]]:
    """(global rank, extra env) of each process that node `node_rank` starts, in local-rank order.

    `ports` (tensorflow only): the port of each task by its index on its node; by
    default master_port + that index, the same on every node so that every node
    computes the same cluster spec.
    """
    if instance_count < 1:
        raise DistributionError(f"resources.instance_count must be at least 1, got {instance_count}")
    if not 0 <= node_rank < instance_count:
        raise DistributionError(f"node rank {node_rank} is outside a job of {instance_count} node(s)")
    if len(node_addrs) != instance_count:
        raise DistributionError(f"{len(node_addrs)} node address(es) for a job of {instance_count} node(s)")
    if not distribution:
        return [(0, {})]
    kind = distribution.get("type")
    if kind == "pytorch":
        return _pytorch(distribution, instance_count, node_rank, master_addr, master_port)
    if kind == "mpi":
        return _mpi(distribution, instance_count, node_rank, master_addr, master_port)
    if kind == "tensorflow":
        return _tensorflow(distribution, instance_count, node_rank, master_port, node_addrs, ports)
    if kind == "ray":  # accepted with a warning at submit (specs.azureml.ignored): the command runs once
        return [(node_rank, {})]
    raise DistributionError(
        f"distribution.type '{kind}' is not supported by cible yet; use one of {', '.join(SUPPORTED)}"
    )


def world_size(distribution: dict[str, Any] | None, instance_count: int) -> int:
    """How many processes the whole job starts, over every node: what a global rank is out of."""
    kind = (distribution or {}).get("type")
    if kind in ("pytorch", "mpi"):
        return instance_count * _per_instance(distribution)
    if kind == "tensorflow":
        return len(tensorflow_tasks(distribution, instance_count))
    return instance_count  # no distribution (or ray): the command once per node


def process_envs(distribution: dict[str, Any] | None, *, instance_count: int, node_rank: int,
                 master_addr: str, master_port: int, node_addrs: list[str],
                 ports: list[int] | None = None) -> list[dict[str, str]]:
    """One env dict (the distribution's variables only) per process on this node, in local-rank order.

    No distribution: one process and no extra variables.
    """
    return [env for _, env in node_processes(
        distribution, instance_count=instance_count, node_rank=node_rank, master_addr=master_addr,
        master_port=master_port, node_addrs=node_addrs, ports=ports,
    )]


def _per_instance(distribution: dict[str, Any]) -> int:
    count = distribution.get("process_count_per_instance") or 1
    if count < 1:
        raise DistributionError(f"distribution.process_count_per_instance must be at least 1, got {count}")
    return int(count)


def _pytorch(distribution: dict[str, Any], instances: int, node_rank: int, master_addr: str,
             master_port: int) -> list[tuple[int, dict[str, str]]]:
    per_node = _per_instance(distribution)
    common = {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
              "WORLD_SIZE": str(instances * per_node), "NODE_RANK": str(node_rank)}
    out = []
    for local in range(per_node):
        rank = node_rank * per_node + local
        out.append((rank, {**common, "RANK": str(rank), "LOCAL_RANK": str(local)}))
    return out


def _mpi(distribution: dict[str, Any], instances: int, node_rank: int, master_addr: str,
         master_port: int) -> list[tuple[int, dict[str, str]]]:
    per_node = _per_instance(distribution)
    if instances == 1:
        master = {"AZ_BATCHAI_MPI_MASTER_NODE": master_addr}
    else:
        master = {"AZ_BATCH_MASTER_NODE": f"{master_addr}:{master_port}"}
    common = {**master, "OMPI_COMM_WORLD_SIZE": str(instances * per_node),
              "OMPI_COMM_WORLD_LOCAL_SIZE": str(per_node)}
    out = []
    for local in range(per_node):
        rank = node_rank * per_node + local
        out.append((rank, {**common, "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_LOCAL_RANK": str(local)}))
    return out


def tensorflow_tasks(distribution: dict[str, Any], instances: int) -> list[tuple[str, int, int, int]]:
    """(type, index, node, index on that node) of every task: workers, then parameter servers."""
    workers = distribution.get("worker_count") or instances
    servers = distribution.get("parameter_server_count") or 0
    if workers < 1 or servers < 0:
        raise DistributionError(
            f"distribution: worker_count must be at least 1 and parameter_server_count at least 0, "
            f"got {workers} and {servers}"
        )
    tasks, on_node = [], [0] * instances
    for t, (kind, index) in enumerate([*(("worker", i) for i in range(workers)), *(("ps", i) for i in range(servers))]):
        node = t % instances
        tasks.append((kind, index, node, on_node[node]))
        on_node[node] += 1
    return tasks


def _tensorflow(distribution: dict[str, Any], instances: int, node_rank: int, master_port: int,
                node_addrs: list[str], ports: list[int] | None) -> list[tuple[int, dict[str, str]]]:
    tasks = tensorflow_tasks(distribution, instances)
    busiest = max(local for *_, local in tasks) + 1
    if ports is not None and len(ports) < busiest:
        raise DistributionError(f"{len(ports)} port(s) for {busiest} tensorflow task(s) on a node")

    def address(node: int, local: int) -> str:
        port = ports[local] if ports is not None else master_port + local
        return f"{node_addrs[node]}:{port}"

    cluster: dict[str, list[str]] = {"worker": []}
    for kind, _, node, local in tasks:
        cluster.setdefault(kind, []).append(address(node, local))
    out = []
    for rank, (kind, index, node, _) in enumerate(tasks):
        if node != node_rank:
            continue
        config = {"cluster": cluster, "task": {"type": kind, "index": index}, "environment": "cloud"}
        out.append((rank, {"TF_CONFIG": json.dumps(config)}))
    return out


def free_ports(count: int, host: str = SINGLE_NODE_ADDR) -> list[int]:
    """`count` distinct ports free on `host` now (all held open until every one is found)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = SINGLE_NODE_ADDR) -> int:
    return free_ports(1, host)[0]


def plan_processes(plan: dict[str, Any]) -> list[tuple[int, dict[str, str]]]:
    """The processes this launcher starts for `plan`: (global rank, extra env) each.

    A plan runs on one node unless it names its nodes (`node_addrs`, `node_rank`,
    `master_port`: what a cluster's node agent writes); on one node the master is
    127.0.0.1 on a free port, and tensorflow tasks get free ports of their own.
    """
    distribution = plan.get("distribution")
    instances = plan.get("instance_count") or 1
    addrs = plan.get("node_addrs")
    if addrs is None:
        if instances != 1:
            raise DistributionError(
                f"resources.instance_count is {instances} but this job runs on one node "
                "(local is one node; multi-node jobs need a cluster)"
            )
        addrs = [SINGLE_NODE_ADDR]
    master_port = plan.get("master_port")
    ports = None
    if master_port is None:
        master_port = free_port()
        if distribution and distribution.get("type") == "tensorflow" and instances == 1:
            ports = free_ports(len(tensorflow_tasks(distribution, 1)))
    return node_processes(distribution, instance_count=instances, node_rank=plan.get("node_rank", 0),
                          master_addr=addrs[0], master_port=master_port, node_addrs=list(addrs), ports=ports)
