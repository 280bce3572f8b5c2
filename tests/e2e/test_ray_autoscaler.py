"""cible's demand drives Ray's own autoscaler: a Ray head alone (no CPU for work) with Ray's
fake multi-node provider, whose autoscaler starts real Ray worker processes for pending
demand and removes them when idle. A cible cluster on it (the workspace's default provider
is `ray`, so its YAML has no `cible:` key) asks for two nodes for a 2-node job: Ray adds two
machines; once cible scales its idle nodes down, Ray removes them again.

Slow (a minute or two of real Ray), so behind the `slow` marker; CI runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from e2e_support import Workspace, wait_until, write_yaml

pytest.importorskip("ray")
from cible.testing.ray_cluster import RayTestCluster  # noqa: E402

pytestmark = pytest.mark.slow

WORKER = {"resources": {"CPU": 2, "memory": 4 * 2**30, "object_store_memory": 80_000_000},
          "node_config": {}, "min_workers": 0, "max_workers": 2}
# The wheel lacks fake_multinode/example.yaml: the whole config is written here (backends.md §1).
AUTOSCALING = {
    "cluster_name": "fake_multinode", "max_workers": 2,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                             "ray.worker.cpu": WORKER},
    "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
    "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    "rsync_exclude": [], "rsync_filter": [],
}


# Ray rewrites 127.0.0.1 to the machine's own network address unless this says not to; the fake
# provider's machines take 127.0.0.1, so the head, its machines and the server's driver all say it.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# The fake provider cannot give its machines a memory size without this (see its docstring).
FAKE_MEMORY_FIX = str(Path(__file__).parent / "fake_ray_memory")


@pytest.fixture
def autoscaling_ray():
    cluster = RayTestCluster(head_ip="127.0.0.1", env={
        "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", **LOOPBACK_ONLY,
        "PYTHONPATH": os.pathsep.join(filter(None, [FAKE_MEMORY_FIX, os.environ.get("PYTHONPATH")]))})
    try:
        yield cluster.start(num_cpus=0, memory_gb=1, autoscaling_config=AUTOSCALING)
    finally:
        cluster.stop()


def test_cible_demand_makes_ray_add_machines_and_idleness_makes_it_remove_them(tmp_path, autoscaling_ray) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.env.update(CIBLE_RAY_ADDRESS=autoscaling_ray.address, CIBLE_RAY_AUTOSCALING="1", CIBLE_DEFAULT_PROVIDER="ray",
                  **LOOPBACK_ONLY)
    try:
        assert len(autoscaling_ray.alive_nodes()) == 1  # the head alone
        created = ws.json("compute", "create", "-n", "auto", "--type", "amlcompute", "--size", "Standard_DS1_v2",
                          "--min-instances", "0", "--max-instances", "2", "--idle-time-before-scale-down", "2")
        assert created["cible"]["provider"] == "ray"  # the workspace's default, stored with the cluster
        spec = write_yaml(ws.cwd, "two.yml", """
            command: echo node $NODE_RANK of $AZUREML_COMPUTE
            distribution:
              type: pytorch
            resources:
              instance_count: 2
            compute: azureml:auto
            """)
        name = ws.json("job", "create", "-f", spec, "-n", "two-nodes")["name"]
        # The two pending nodes are demand Ray's autoscaler sees: it starts two worker machines.
        wait_until(lambda: len(autoscaling_ray.alive_nodes()) == 3, 180, interval=0.5,
                   message="Ray's autoscaler to add 2 machines for cible's 2 nodes")
        job = ws.wait_status(name, timeout=180)
        assert job["status"] == "Completed", job
        # cible gives its idle nodes back after 2 s; Ray then finds its machines idle and removes them.
        ws.wait_nodes("auto", lambda states: states == [], timeout=60, message="cible's nodes scaled down")
        wait_until(lambda: len(autoscaling_ray.alive_nodes()) == 1, 180, interval=0.5,
                   message="Ray's autoscaler to remove its idle machines")
    finally:
        ws.stop()
