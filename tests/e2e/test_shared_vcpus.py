"""Azure's own cluster command on a small machine: `cible compute create -n cpu-cluster --type
amlcompute --min-instances 0 --max-instances 8` (no --size: Azure's default Standard_DS3_v2,
4 vCPUs, 14 GB) works on a 2-core machine. Its nodes share the host's CPUs, their CPU limit
capped at the host's, with a warning said once; a job in Azure's CUDA base image runs on them."""

from __future__ import annotations

import pytest
from e2e_support import Workspace, wait_until, write_yaml

from cible.node.limits import MECHANISMS, host_capacity

DEFAULT_SIZE = ("Standard_DS3_v2", 4, 14)  # Azure's default size for amlcompute: name, vCPUs, GB
# An Azure ML GPU base image: Azure runs it on any size, CPU-only ones included.
CUDA_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"


def test_azures_cluster_command_runs_a_cuda_named_job_on_this_machine(workspace: Workspace) -> None:
    ws = workspace
    host = host_capacity()
    name, vcpus, memory_gb = DEFAULT_SIZE
    if host.memory_gb < memory_gb:
        pytest.skip(f"this machine has {host.memory_gb:.1f} GB; {name} needs {memory_gb} GB")
    created = ws.json("compute", "create", "-n", "cpu-cluster", "--type", "amlcompute",
                      "--min-instances", "0", "--max-instances", "8")
    assert created["size"] == name
    shared = host.vcpus < vcpus
    warnings = [w for w in created.get("warnings", []) if "shares the machine's" in w]
    assert len(warnings) == (1 if shared else 0), created
    if shared:
        assert f"{name} has {vcpus} vCPUs and this machine {host.vcpus}" in warnings[0]

    gate = ws.cwd / "go"
    spec = write_yaml(ws.cwd, "cuda.yml", f"""
        command: 'echo on $AZUREML_COMPUTE; while [ ! -e {gate} ]; do sleep 0.05; done; echo done'
        environment:
          image: {CUDA_IMAGE}
        compute: azureml:cpu-cluster
        """)
    job = ws.json("job", "create", "-f", spec, "-n", "cuda-on-cpu")
    assert job["status"] in ("Queued", "Starting", "Preparing", "Running"), job
    # The image runs as the machine's Python (cible builds no container): nothing in it asks for a GPU.
    assert not any("GPU" in w for w in job["warnings"]), job["warnings"]
    ws.wait_status("cuda-on-cpu", "Running", timeout=90)

    # The node's CPU limit, as its agent reads it back from its cgroup (or the watchdog's CPU set):
    # the host's CPUs, not the size's 4.
    def usage() -> dict | None:
        nodes = ws.nodes("cpu-cluster")
        found = (nodes[0].get("usage") or {}) if nodes else {}
        return found if found.get("cpu_limit") is not None else None

    seen = wait_until(usage, 60, interval=0.2, message="the node to report its limits")
    assert seen["mechanism"] in MECHANISMS
    assert seen["cpu_limit"] == min(vcpus, host.vcpus), seen
    assert seen["memory_limit_bytes"] == memory_gb * 2**30  # memory is held to the size, as ever

    gate.touch()
    done = ws.wait_status("cuda-on-cpu", timeout=60)
    assert done["status"] == "Completed", done
    assert "on cpu-cluster" in ws.run_log("cuda-on-cpu") and "done" in ws.run_log("cuda-on-cpu")
    # Said once in the server log, at create: not at the node's start nor on each reconcile pass.
    log = (ws.home / "server.log").read_text(errors="replace")
    assert log.count("shares the machine's") == (1 if shared else 0), log[-3000:]
    # `show` still says it, for whoever looks later.
    shown = ws.json("compute", "show", "-n", "cpu-cluster")
    assert any("shares the machine's" in w for w in shown.get("warnings", [])) == shared
