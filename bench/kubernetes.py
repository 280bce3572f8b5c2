"""Kubernetes computes: warm and cold dispatch of a job to a pod, against a bare pod of the same line.

The cluster is EMULATED, not real (cible.testing.kubernetes): the API server is kmock's emulator on
loopback HTTP, and this process plays the scheduler and the kubelet (a container is a local process,
`python3` this interpreter; the kubelet looks at the pods every 0.1 s). cible talks to it with the
official `kubernetes` client and a kubeconfig, as to a cluster. So the ratios measure cible's own path
(its API calls, the pod's bootstrap, the agent, the dispatch), never a real cluster's image pulls,
scheduling or container start-up: a real cluster adds the same seconds to the floor and to cible's cold pod.

- Floor: a bare pod created through the official client (what `kubectl run` of the line costs there),
  its one container `python3 -c "import time; print(time.time_ns(), flush=True)"`: from the create call
  to that printed timestamp (read from the pod's log once it has Succeeded).
- Warm: from `create_or_update` (the in-process SDK) of a job running that same line (an image-only
  environment: the pod's Python) on a compute whose pod is warm (cible.idle_time_before_scale_down: 600),
  to the first line's timestamp.
- Cold: the same job on a compute that keeps no pod (idle_time_before_scale_down: 0): a new pod per job,
  whose bootstrap fetches cible's node code and uv from the server before the agent starts.

    .venv/bin/python bench/kubernetes.py [--runs 10] [--cold-runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named kubernetes.py: run as a script, its folder comes first on sys.path and would hide the
# official `kubernetes` client (which the emulated cluster's helpers import) behind it.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from cible.backends.kubernetes.pods import pod_name
from cible.testing.kubernetes import EmulatedKubernetes, EmulatedNode

FIRST_LINE = "import time; print(time.time_ns(), flush=True)"
NAMESPACE = "ml"
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"  # image-only: the pod's own Python
SMALL = {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}


def floor_ms(k8s: EmulatedKubernetes, n: int) -> float:
    """A bare pod of the line through the official client: create -> its printed timestamp."""
    name = f"floor-{n}"
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "python:3.12-slim", "command": ["python3", "-c", FIRST_LINE]}]}}
    t0 = time.time_ns()
    k8s.core.create_namespaced_pod(NAMESPACE, body)
    k8s.wait_for(lambda: ((k8s.pod(NAMESPACE, name) or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                 60, f"floor pod {name} to end", interval=0.005)
    phase = k8s.pod(NAMESPACE, name)["status"]["phase"]
    log = k8s.log(NAMESPACE, name)
    assert phase == "Succeeded", (phase, log)
    k8s.core.delete_namespaced_pod(name, NAMESPACE)
    return (int(log.split()[0]) - t0) / 1e6


def first_line_ms(client, job) -> tuple[float, dict]:
    t0 = time.time_ns()
    name = client.jobs.create_or_update(job)["name"]
    done = client.jobs.wait(name, timeout=300)
    assert done["status"] == "Completed", done
    log = client._client.request("GET", f"/jobs/{name}/logs").content.decode()
    user_lines = [line for line in log.splitlines() if not line.startswith(("[cible]", "cible:"))]
    return (int(user_lines[0]) - t0) / 1e6, done


def settle(k8s: EmulatedKubernetes, job: dict) -> None:
    """Wait until the cold job's pod is deleted and its processes ended (the compute keeps none), so
    that a dying agent does not take the CPU from the next measurement."""
    names = {pod_name(node) for node in job.get("nodes") or []}
    k8s.wait_for(lambda: not any(p["metadata"]["name"] in names for p in k8s.pods(NAMESPACE))
                 and not any(k8s.kubelet.running_pids(NAMESPACE, name) for name in names),
                 120, f"the cold pods {sorted(names)} to go", interval=0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10, help="warm dispatches (and bare pods)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold dispatches (a new pod each)")
    parser.add_argument("--each", action="store_true", help="print every run's numbers, not only the medians")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cible-bench-kubernetes-"))
    home = root / "ws"
    os.chdir(root)  # the server this starts gets no bench/ (this file) on its path from its cwd either
    os.environ["CIBLE_HOME"] = str(home)
    os.environ.setdefault("CIBLE_TRACKING", "0")
    from cible import MLClient, command

    nodes = tuple(EmulatedNode(f"node-{n}", cpu="8", memory="16Gi") for n in "ab")
    floor, warm, cold = [], [], []
    client = None
    try:
        with EmulatedKubernetes(root / "cluster", namespaces=("default", NAMESPACE), nodes=nodes) as k8s:
            try:
                k8s.add_instance_type("small", SMALL)
                client = MLClient(home=home)
                for name, idle in (("k8s", 600), ("k8s-cold", 0)):
                    client.compute.begin_create_or_update({
                        "name": name, "type": "kubernetes", "namespace": NAMESPACE,
                        "cible": {"kubeconfig": str(k8s.kubeconfig), "idle_time_before_scale_down": idle}}).result()
                job, cold_job = (command(command=f"python3 -c '{FIRST_LINE}'", compute=f"azureml:{name}",
                                         environment={"image": IMAGE}, resources={"instance_type": "small"},
                                         experiment_name="bench")
                                 for name in ("k8s", "k8s-cold"))
                n = 0
                first_line_ms(client, job)  # the warm pool's pod starts (bootstrap, agent)
                for _ in range(3):  # warm-up
                    n += 1
                    floor_ms(k8s, n), first_line_ms(client, job)
                settle(k8s, first_line_ms(client, cold_job)[1])
                for i in range(max(args.runs, args.cold_runs)):  # interleaved, so machine noise hits all alike
                    n += 1
                    floor.append(floor_ms(k8s, n))
                    if i < args.runs:
                        warm.append(first_line_ms(client, job)[0])
                    if i < args.cold_runs:
                        ms, done = first_line_ms(client, cold_job)
                        cold.append(ms)
                        settle(k8s, done)
            finally:  # the server first (its pods' agents then end with the emulated kubelet)
                if client is not None:
                    client.close()
                subprocess.run([sys.executable, "-m", "cible", "server", "stop"], env=os.environ,
                               capture_output=True, check=False, timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    f, w, c = statistics.median(floor), statistics.median(warm), statistics.median(cold)
    if args.each:
        print("floor ms: " + "  ".join(f"{x:.0f}" for x in floor))
        print("warm ms:  " + "  ".join(f"{x:.0f}" for x in warm))
        print("cold ms:  " + "  ".join(f"{x:.0f}" for x in cold))
    print(f"runs: {len(floor)} bare pods, {args.runs} warm, {args.cold_runs} cold dispatches; medians; EMULATED "
          "Kubernetes (kmock API server, this process as kubelet polling every 0.1 s: no image pulls, no real "
          "scheduling; the ratios are cible's own path)")
    print(f"floor  bare pod python3 -c (kubectl run)  {f:8.1f} ms")
    print(f"cible  warm: job -> first line            {w:8.1f} ms   ratio {w / f:5.2f}x of the bare pod")
    print(f"cible  cold: job -> first line (new pod)  {c:8.1f} ms   ratio {c / f:5.2f}x of the bare pod")


if __name__ == "__main__":
    main()
