"""The GPU machine's check (issue 21), as one script: run it on a lent GPU machine, where python3 holds a
CUDA torch. It makes a workspace of its own (SQLite, `local` nodes) and prints a PASS/FAIL/SKIP line each:

1. discovery: the machine's GPUs through NVML (nvidia-ml-py), with model, memory and UUID;
2. a GPU size's node sees its GPU (CUDA_VISIBLE_DEVICES = its UUID) and trains a few torch steps on it;
3. a CPU size's node sees none (CUDA_VISIBLE_DEVICES empty, torch.cuda.is_available() False);
4. the CUDA preflight refuses a build the size's GPU cannot run (a stand-in torch for CUDA 11.7 on Hopper);
5. the node's memory limit holds (a 6 GB allocation on a 3.5 GB Standard_DS1_v2 node ends OutOfMemory);
6. compute show gives the GPU node's utilisation and memory, as its agent read them through NVML.

    python3 scripts/gpu_check.py [--gpu-size Standard_NC40ads_H100_v5]

cible's own dependencies must be importable (on the lent machines: carried as wheels, see the device
tool's README). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import subprocess
import textwrap
from pathlib import Path

TRAIN = textwrap.dedent("""\
    import os, torch
    print("CVD", os.environ.get("CUDA_VISIBLE_DEVICES"), "available", torch.cuda.is_available(), flush=True)
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), flush=True)
        model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(256, 512, device="cuda"), torch.randint(0, 10, (256,), device="cuda")
        for step in range(50):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        print("trained 50 steps, loss", round(loss.item(), 4), flush=True)
""")
ALLOCATE = "b = bytearray(6 * 2**30); b[::4096] = b'x' * len(b[::4096]); print('allocated')"
results: list[tuple[str, str, str]] = []


def report(check: str, ok: bool | None, detail: str) -> None:
    verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    results.append((verdict, check, detail))
    print(f"{verdict:4}  {check}: {detail}", flush=True)


def stand_in_torch(site: Path) -> Path:
    """A torch that answers the preflight's probe as torch 2.0.1+cu117 does (no Hopper code)."""
    package = site / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = '2.0.1+cu117'\nfrom . import _C, version\n")
    (package / "version.py").write_text("cuda = '11.7'\nhip = None\n")
    (package / "_C.py").write_text("def _cuda_getArchFlags():\n    return 'sm_37 sm_50 sm_60 sm_70 sm_75 sm_80 sm_86'\n")
    return site


def run_job(client, name: str, compute: str, command: str, env: dict[str, str] | None = None) -> tuple[dict, str]:  # noqa: ANN001
    from cible import command as job

    client.jobs.create_or_update(job(command=command, compute=compute, environment_variables=env or {},
                                     experiment_name="gpu-check", name=name))
    done = client.jobs.wait(name, timeout=300)
    log = client._client.request("GET", f"/jobs/{name}/logs").content.decode(errors="replace")
    return done, log


def make_cluster(client, name: str, size: str) -> None:  # noqa: ANN001
    from cible.core.specs.azureml.loader import load_spec_dict

    entity = load_spec_dict({"name": name, "type": "amlcompute", "size": size, "min_instances": 0,
                             "max_instances": 1, "cible": {"overcommit": True}}, "compute", source="gpu_check").entity
    client.compute.begin_create_or_update(entity).result()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu-size", default="Standard_NC40ads_H100_v5", help="a 1-GPU Hopper size")
    args = parser.parse_args()
    from cible.node import gpus
    from cible.node.limits import detect_mechanism

    found = gpus.discover()
    report("discovery", bool(found), "; ".join(f"{g.index}: {g.name}, {g.memory_mb} MB, {g.uuid}" for g in found)
           or "no GPU found (NVML, /dev/nvidia*)")
    home = Path(tempfile.mkdtemp(prefix="cible-gpu-check-"))
    os.environ.update(CIBLE_HOME=str(home), CIBLE_TRACKING="0")
    print(f"limits: {detect_mechanism()}; workspace {home}", flush=True)
    from cible import MLClient

    client = MLClient(home=home)
    try:
        make_cluster(client, "gpu", args.gpu_size)
        make_cluster(client, "cpu", "Standard_DS1_v2")
        job, log = run_job(client, "on-gpu", "gpu", f"python3 -c '{TRAIN}'")
        report("GPU node sees its GPU and trains", job["status"] == "Completed" and "trained 50 steps" in log
               and (not found or f"CVD {found[0].uuid}" in log), log.strip().replace("\n", " | ")[-400:])
        job, log = run_job(client, "on-cpu", "cpu", f"python3 -c '{TRAIN}'")
        report("CPU node sees no GPU", job["status"] == "Completed" and "CVD  available False" in log,
               log.strip().replace("\n", " | ")[-300:])
        site = stand_in_torch(home / "stand-in")
        job, log = run_job(client, "old-build", "gpu", "echo ran", env={"PYTHONPATH": str(site)})
        error = job.get("error") or {}
        report("preflight refuses a CUDA 11.7 build on Hopper",
               error.get("code") == "EnvironmentIncompatible" and "ran" not in log.split(),
               error.get("message") or f"{job['status']}: {log.strip()[-200:]}")
        job, log = run_job(client, "too-big", "cpu", f"python3 -c \"{ALLOCATE}\"")
        error = job.get("error") or {}
        report("memory limit holds", job["status"] == "Failed" and error.get("code") == "OutOfMemory",
               f"{job['status']} {error.get('code')}: {str(error.get('message'))[:200]}")
        usage = client.compute.get("gpu").get("gpu_usage")
        report("compute show has the GPU's readings", bool(usage) if found else None, str(usage)[:300])
    finally:
        for name in ("gpu", "cpu"):
            try:
                client.compute.begin_delete(name)
            except Exception as exc:  # noqa: BLE001  (clean-up: the report matters more)
                print(f"could not delete {name}: {exc}")
        subprocess.run([sys.executable, "-m", "cible", "server", "stop", "--home", str(home)], check=False)
    failed = [r for r in results if r[0] == "FAIL"]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks did not fail")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
