"""GPU sizes on a machine whose GPUs are a device list (CIBLE_FAKE_GPUS: two H100 NVL), through the CLI and
a real server, agents and launchers: each GPU node gets a GPU of its own, a CPU node none; the CUDA
preflight reads the torch build the job would import (a stand-in torch on the job's PYTHONPATH) and
refuses a build too old for Hopper before the command runs; `compute show` and `job show` show the GPUs
in use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from e2e_support import Workspace, wait_until, write_yaml

from cible.node.gpus import ENV_FAKE

FAKE_GPUS = [{"uuid": f"GPU-e2e-{i}", "name": "NVIDIA H100 NVL", "memory_mb": 95830, "minor": 100 + i,
              "utilization_percent": 40 + i, "memory_used_mb": 1000 * (i + 1)} for i in range(2)]
# torch 2.0.1 for CUDA 11.7: runs on a T4 (Turing, sm_75), not on an H100 (Hopper needs CUDA 11.8).
TORCH_CU117 = ("2.0.1+cu117", "11.7", "sm_37 sm_50 sm_60 sm_70 sm_75 sm_80 sm_86")
SHOW_GPUS = "echo \"CVD=[$CUDA_VISIBLE_DEVICES] NVD=[$NVIDIA_VISIBLE_DEVICES]\""


@pytest.fixture(scope="module")
def gpu_ws(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gpu")
    (root / "gpus.json").write_text(json.dumps(FAKE_GPUS))
    torch = root / "site" / "torch"
    torch.mkdir(parents=True)
    version, cuda, archs = TORCH_CU117
    (torch / "__init__.py").write_text(f"__version__ = {version!r}\nfrom . import _C, version\n")
    (torch / "version.py").write_text(f"cuda = {cuda!r}\nhip = None\n")
    (torch / "_C.py").write_text(f"def _cuda_getArchFlags():\n    return {archs!r}\n")
    ws = Workspace(root / "ws")
    ws.env[ENV_FAKE] = str(root / "gpus.json")
    ws.site = root / "site"  # what the GPU jobs put on their PYTHONPATH
    yield ws
    ws.stop()


def _log_line(ws: Workspace, job: str, pattern: str) -> re.Match:
    return wait_until(lambda: re.search(pattern, ws.run_log(job)), 60, message=f"{pattern!r} in {job}'s log")


def test_each_gpu_node_gets_its_own_gpu_and_a_cpu_node_none(gpu_ws: Workspace) -> None:
    ws = gpu_ws
    created = ws.json("compute", "create", "-n", "t4", "--type", "amlcompute", "--size", "Standard_NC4as_T4_v3",
                      "--min-instances", "0", "--max-instances", "2", "--overcommit")
    assert created["size"] == "Standard_NC4as_T4_v3"
    ws.cible("compute", "create", "-n", "cpu", "--type", "amlcompute", "--size", "Standard_DS1_v2",
             "--max-instances", "1")
    gate = ws.cwd / "go"
    hold = f"{SHOW_GPUS}; while [ ! -e {gate} ]; do sleep 0.05; done"
    for name in ("g1", "g2"):  # both held running, so the second needs a second node
        ws.cible("job", "create", "-f", write_yaml(ws.cwd, f"{name}.yml", f"""
            command: '{hold}'
            compute: azureml:t4
            environment_variables: {{PYTHONPATH: {ws.site}}}
            """), "-n", name)
    ws.cible("job", "create", "-f", write_yaml(ws.cwd, "c.yml", f"""
        command: '{SHOW_GPUS}'
        compute: azureml:cpu
        """), "-n", "c1")
    seen = {name: _log_line(ws, name, r"CVD=\[(.*)\] NVD=\[(.*)\]").groups() for name in ("g1", "g2")}
    assert sorted(cvd for cvd, _ in seen.values()) == ["GPU-e2e-0", "GPU-e2e-1"], seen
    assert all(cvd == nvd for cvd, nvd in seen.values()), seen
    # The preflight ran before the command: this torch has Turing's sm_75.
    assert "CUDA preflight: torch 2.0.1+cu117 (CUDA 11.7) can run on Standard_NC4as_T4_v3's" in ws.run_log("g1")
    assert ws.wait_status("c1")["status"] == "Completed"
    assert "CVD=[] NVD=[void]" in ws.run_log("c1")
    assert "CUDA preflight" not in ws.run_log("c1")  # a CPU size: nothing to check

    def gpus_shown() -> dict | None:
        usage = ws.json("compute", "show", "-n", "t4").get("gpu_usage") or {}
        return usage if len(usage) == 2 else None

    usage = wait_until(gpus_shown, 60, message="both nodes' GPU readings in compute show")
    readings = sorted((r["uuid"], r["utilization_percent"], r["memory_total_mb"]) for rs in usage.values() for r in rs)
    assert readings == [("GPU-e2e-0", 40.0, 95830), ("GPU-e2e-1", 41.0, 95830)]
    job = ws.json("job", "show", "-n", "g1")
    assert list(job["gpu_usage"]) == job["nodes"]
    table = ws.cible("compute", "show", "-n", "t4").stdout
    assert "GPUs" in table and "NVIDIA H100 NVL" in table and "40 %" in table
    gate.touch()
    for name in ("g1", "g2"):
        assert ws.wait_status(name)["status"] == "Completed"


def test_the_preflight_refuses_a_build_too_old_for_the_size_s_gpu(gpu_ws: Workspace) -> None:
    ws = gpu_ws
    ws.cible("compute", "create", "-n", "h100", "--type", "amlcompute", "--size", "Standard_NC40ads_H100_v5",
             "--max-instances", "1", "--overcommit")
    shown = ws.json("compute", "show-size", "Standard_NC40ads_H100_v5")
    assert shown["gpu_architecture"] == "Hopper" and shown["min_cuda"] == "11.8"
    ran = ws.cwd / "ran"
    ws.cible("job", "create", "-f", write_yaml(ws.cwd, "h.yml", f"""
        command: 'touch {ran}'
        compute: azureml:h100
        environment_variables: {{PYTHONPATH: {ws.site}}}
        """), "-n", "h1")
    job = ws.wait_status("h1", timeout=90)
    assert job["status"] == "Failed", job
    assert job["error"]["code"] == "EnvironmentIncompatible"
    message = job["error"]["message"]
    for part in ("torch 2.0.1+cu117 (CUDA 11.7) cannot run on Standard_NC40ads_H100_v5", "Hopper",
                 "CUDA 11.8 or newer"):
        assert part in message, message
    assert not Path(ran).exists()  # refused before the command


def test_pytorch_ranks_find_their_gpu_by_local_rank(gpu_ws: Workspace) -> None:
    ws = gpu_ws
    ws.cible("compute", "create", "-n", "a10x2", "--type", "amlcompute", "--size", "Standard_NV72ads_A10_v5",
             "--max-instances", "1", "--overcommit")
    out = ws.cwd / "ranks"
    out.mkdir()
    job = ws.json("job", "create", "-f", write_yaml(ws.cwd, "ranks.yml", f"""
        command: 'echo "$LOCAL_RANK $CUDA_VISIBLE_DEVICES" > {out}/rank_$RANK'
        compute: azureml:a10x2
        distribution: {{type: pytorch, process_count_per_instance: 2}}
        """), "-n", "ranks")
    assert not any("process_count_per_instance" in w for w in job["warnings"])  # 2 ranks, 2 GPUs: as it should be
    assert ws.wait_status("ranks", timeout=90)["status"] == "Completed"
    lines = sorted((out / f"rank_{rank}").read_text().split() for rank in (0, 1))
    assert [local for local, _ in lines] == ["0", "1"]
    assert all(sorted(visible.split(",")) == ["GPU-e2e-0", "GPU-e2e-1"] for _, visible in lines), lines
