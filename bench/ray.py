"""Warm dispatch on Ray: a cible cluster node already idle on Ray against Ray's own Jobs API.

A real Ray cluster on loopback (cible.testing.ray_cluster: a head with no CPU for work, one worker on
127.0.0.3 with 2 CPUs), and a fresh workspace whose server places nodes on it (CIBLE_RAY_ADDRESS). One
cluster compute on the `ray` provider with min_instances 1: its node is a Ray actor, idle, agent warm.
Then, interleaved, median of --runs each, the same script (bench/dispatch.py's FIRST_LINE: print
time.time_ns() and exit):

  peer   Ray Jobs: JobSubmissionClient.submit_job(entrypoint="python -c ...") -> get_job_status RUNNING
         (polled every 10 ms; SUCCEEDED counts: it was RUNNING before), and -> the script's first line
         (read back from get_job_logs once it ended).
  cible  SDK jobs.create_or_update -> the job's status Running (polled every 10 ms; Finalizing or
         Completed count), -> Running as the server recorded it (status history), and -> first line.

Prints the medians, the ratios ray/cible, and whether the target (cible >= 10x faster than Ray Jobs to
RUNNING, since its agent is already warm while Ray Jobs starts a supervisor actor per job) is met. The
floor beside them: Popen of the same `python -c` (floor_once).

    .venv/bin/python bench/ray.py [--runs 20] [--quick]

A fresh workspace in a temporary folder (CIBLE_TRACKING=0), its server stopped and the Ray cluster
stopped by PID at the end (never `ray stop`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from cluster import SIZE, clean_up, job, median, poll, status_marks, submit
from dispatch import FIRST_LINE, first_line_ns, floor_once

# This file is named ray.py: with bench/ on sys.path, `import ray` would find it instead of Ray.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]

COMPUTE = "raycpu"
RUN_POLL_S = 0.01
CIBLE_STARTED = ("Running", "Finalizing", "Completed")


def make_ray_compute(client) -> None:
    from cible.core.specs.azureml.loader import load_spec_dict

    spec = {"name": COMPUTE, "type": "amlcompute", "size": SIZE, "min_instances": 1, "max_instances": 1,
            "idle_time_before_scale_down": 600, "cible": {"provider": "ray"}}
    client.compute.begin_create_or_update(load_spec_dict(spec, "compute", source="bench").entity).result()
    idle = lambda: [n for n in client.compute.list_nodes(COMPUTE) if n["node_state"] == "idle"] or None
    node = poll(idle, timeout=300)[0]
    print(f"cible node {node['node_id']} idle on Ray at {node.get('private_ip_address')}")


def until(probe, timeout: float = 120):
    """probe() every RUN_POLL_S until it returns something other than None; returns time.time() then."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing after {timeout} s")
        time.sleep(RUN_POLL_S)
    return found


def cible_once(client, spec) -> dict[str, float]:
    t0, name = submit(client, spec)
    called = time.time()

    def started() -> float | None:
        status = client.jobs.get(name)["status"]
        if status in ("Failed", "Canceled"):
            raise RuntimeError(f"cible job {name} {status}")
        return time.time() if status in CIBLE_STARTED else None

    running = until(started)
    first = first_line_ns(client, name) / 1e9
    return {"name": name, "t0": t0, "submit call": (called - t0) * 1e3, "running": (running - t0) * 1e3,
            "first line": (first - t0) * 1e3}


def ray_once(ray_client) -> dict[str, float]:
    from ray.job_submission import JobStatus

    t0 = time.time()
    job_id = ray_client.submit_job(entrypoint=f'python -c "{FIRST_LINE}"')
    called = time.time()

    def started() -> float | None:
        status = ray_client.get_job_status(job_id)
        if status in (JobStatus.FAILED, JobStatus.STOPPED):
            raise RuntimeError(f"Ray job {job_id} {status}: {ray_client.get_job_logs(job_id)[-2000:]}")
        return time.time() if status in (JobStatus.RUNNING, JobStatus.SUCCEEDED) else None

    running = until(started)
    until(lambda: True if ray_client.get_job_status(job_id).is_terminal() else None, timeout=120)
    lines = [line for line in ray_client.get_job_logs(job_id).splitlines() if line.strip().isdigit()]
    first = int(lines[0]) / 1e9
    return {"submit call": (called - t0) * 1e3, "running": (running - t0) * 1e3, "first line": (first - t0) * 1e3}


def report(runs: int, floor: list[float], ray: list[dict], cible: list[dict], home: Path) -> None:
    col = lambda rows, key: median([r[key] for r in rows])
    marks = status_marks(home, "bench")
    recorded = median([(marks[r["name"]]["Running"] - r["t0"]) * 1e3 for r in cible if "Running" in marks[r["name"]]])
    f = median(floor)
    r_run, c_run = col(ray, "running"), col(cible, "running")
    r_first, c_first = col(ray, "first line"), col(cible, "first line")
    late = sum(marks[r["name"]].get("Running", 0) - r["t0"] > r["first line"] / 1e3 for r in cible)
    how = f"(polled {RUN_POLL_S * 1e3:.0f} ms)"
    rows = [("floor     Popen(python -c) -> first line", f),
            ("Ray Jobs  submit_job call returned", col(ray, "submit call")),
            (f"Ray Jobs  submit_job -> RUNNING {how}", r_run),
            ("Ray Jobs  submit_job -> first line", r_first),
            ("cible     create_or_update call returned", col(cible, "submit call")),
            (f"cible     create -> Running {how}", c_run),
            ("cible     create -> Running (server's history)", recorded),
            ("cible     create -> first line", c_first)]
    print(f"\nwarm dispatch on Ray (1 idle cible node, {SIZE}), medians of {runs}, interleaved")
    for label, value in rows:
        print(f"  {label:<48} {value:8.1f} ms")
    print(f"  (cible recorded Running after the user's first line in {late} of {len(cible)} runs)")
    ratio = r_run / c_run
    print(f"  ratio ray/cible, to RUNNING (polled)   {ratio:6.1f}x   target cible >= 10x faster: "
          f"{'met' if ratio >= 10 else 'NOT met'}")
    print(f"  ratio ray/cible, to first line         {r_first / c_first:6.1f}x")
    print(f"  ranges (min-max) to RUNNING: Ray {min(r['running'] for r in ray):.0f}-"
          f"{max(r['running'] for r in ray):.0f} ms, cible {min(r['running'] for r in cible):.0f}-"
          f"{max(r['running'] for r in cible):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="a short run: --runs 5")
    args = parser.parse_args()
    if args.quick:
        args.runs = 5

    from cible.testing.ray_cluster import RayTestCluster

    started = time.time()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster's nodes (a ~/.ray/auth_token would turn it on)
    cluster = RayTestCluster()
    home = Path(tempfile.mkdtemp(prefix="cible-bench-ray-"))
    client = None
    try:
        cluster.start(num_cpus=0, memory_gb=1)  # the head takes no cible node
        cluster.add_node("127.0.0.3", num_cpus=2, memory_gb=4)
        print(f"Ray up in {time.time() - started:.0f} s: GCS {cluster.address}, dashboard {cluster.dashboard_url}")
        os.environ.update(CIBLE_HOME=str(home), CIBLE_TRACKING="0", CIBLE_RAY_ADDRESS=cluster.address)
        from ray.job_submission import JobSubmissionClient

        from cible import MLClient

        client = MLClient(home=home)  # starts the workspace's server, which connects to Ray
        make_ray_compute(client)
        ray_client = JobSubmissionClient(cluster.dashboard_url)
        spec = job(f'python -c "{FIRST_LINE}"', f"azureml:{COMPUTE}")
        for _ in range(3):  # warm-up: imports, page cache, SQLite, Ray's job manager and workers
            floor_once(), ray_once(ray_client), cible_once(client, spec)
        floor, ray, cible = [], [], []
        for _ in range(args.runs):  # interleaved, so machine noise hits all alike
            floor.append(floor_once())
            ray.append(ray_once(ray_client))
            cible.append(cible_once(client, spec))
        report(args.runs, floor, ray, cible, home)
    finally:
        if client is not None:
            clean_up(client, home)  # deletes the compute, stops the server, kills any left-over agent
        cluster.stop()  # the cible node actors die with their Ray nodes
    print(f"\ntotal {time.time() - started:.0f} s; workspace {home}; Ray logs {cluster.root}")


if __name__ == "__main__":
    main()
