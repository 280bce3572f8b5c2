"""Dispatch latency: from `job create` to the first line of the user's command on `local`.

Floor: spawning the same `python -c` from Python (Popen of the same interpreter), in
the same run. Prints medians, the ratio and the added milliseconds, plus the idle
server's resident memory.

Also the CLI's start-up: `cible --help` and `cible job list` (against the running server), each
against `python -c pass` of the same interpreter, interleaved.

    .venv/bin/python bench/dispatch.py [--runs 30] [--cli-runs 10] [--startup-runs 10]
    .venv/bin/python bench/dispatch.py --startup-only      # the CLI's start-up alone (no MLflow)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

FIRST_LINE = "import time; print(time.time_ns(), flush=True)"


def floor_once() -> float:
    t0 = time.time_ns()
    out = subprocess.run([sys.executable, "-c", FIRST_LINE], capture_output=True, text=True, check=True).stdout
    return (int(out.split()[0]) - t0) / 1e6


def first_line_ns(client, name: str) -> int:  # noqa: ANN001
    job = client.jobs.wait(name, timeout=60)
    assert job["status"] == "Completed", job
    log = client._client.request("GET", f"/jobs/{name}/logs").content.decode()
    user_lines = [line for line in log.splitlines() if not line.startswith("[cible]")]  # cible's own progress
    return int(user_lines[0])


def sdk_once(client, job) -> float:  # noqa: ANN001
    t0 = time.time_ns()
    name = client.jobs.create_or_update(job)["name"]
    return (first_line_ns(client, name) - t0) / 1e6


def cli_once(client, job_file: Path, env: dict[str, str]) -> float:  # noqa: ANN001
    t0 = time.time_ns()
    out = subprocess.run([sys.executable, "-m", "cible", "job", "create", "-f", str(job_file), "-o", "json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return (first_line_ns(client, json.loads(out)["name"]) - t0) / 1e6


def spawn_ms(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=True)
    return (time.perf_counter() - t0) * 1e3


def startup(env: dict[str, str], runs: int) -> None:
    """`cible --help` and `cible job list` against `python -c pass`, interleaved (a server runs)."""
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "cible --help": [sys.executable, "-m", "cible", "--help"],
                "cible job list": [sys.executable, "-m", "cible", "job", "list"]}
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs + 1):  # the first round warms the page cache; not counted
        for name, argv in commands.items():
            samples[name].append(spawn_ms(argv, env))
    floor = median(samples["python -c pass"][1:])
    print(f"floor  python -c pass            {floor:8.1f} ms")
    for name in list(commands)[1:]:
        took = median(samples[name][1:])
        print(f"cible  {name:<24} {took:8.1f} ms   ratio {took / floor:5.2f}x")


def _is_tracking(proc: psutil.Process) -> bool:
    try:
        return "cible.server.tracking" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def tree_rss_mb(proc: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def settled_rss_mb(proc: psutil.Process, quiet_s: float = 3.0, limit_s: float = 60.0) -> float:
    """The process tree's resident memory once it stopped growing for `quiet_s` (children a server
    starts in the background, such as an MLflow child that takes seconds to import, are counted whole)."""
    deadline, last, since = time.monotonic() + limit_s, tree_rss_mb(proc), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.5)
        now = tree_rss_mb(proc)
        if now > last * 1.01:
            last, since = now, time.monotonic()
    return tree_rss_mb(proc)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cli-runs", type=int, default=10)
    parser.add_argument("--startup-runs", type=int, default=10)
    parser.add_argument("--startup-only", action="store_true", help="only the CLI's start-up")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="cible-bench-"))
    os.environ["CIBLE_HOME"] = str(home)
    os.environ.setdefault("CIBLE_TRACKING", "0" if args.startup_only else "1")  # 0: without the MLflow run
    env = {**os.environ}
    from cible import MLClient, command

    client = MLClient(home=home)
    if args.startup_only:
        try:
            startup(env, args.startup_runs)
        finally:
            subprocess.run([sys.executable, "-m", "cible", "server", "stop"], env=env, capture_output=True)
        return
    server = psutil.Process(json.loads((home / "server.json").read_text())["pid"])
    job = command(command=f'python -c "{FIRST_LINE}"', compute="local", experiment_name="bench")
    # The same job in a (cached) conda-file environment: the warm-reuse cost of environments.
    env_job = command(command=f'python -c "{FIRST_LINE}"', compute="local", experiment_name="bench",
                      environment={"image": "python", "conda_file": {"dependencies": ["python=3.11",
                                                                                      {"pip": ["six"]}]}})
    job_file = home / "job.yml"
    job_file.write_text(f"command: python -c \"{FIRST_LINE}\"\ncompute: local\nexperiment_name: bench\n")
    try:
        client.compute.list()  # the server answers
        idle_all = settled_rss_mb(server)  # an idle workspace, before any job: the server and its children
        first_job = sdk_once(client, job)  # the first job after a server start (MLflow starts with it)
        client.jobs.wait(client.jobs.create_or_update(env_job)["name"], timeout=300)  # builds the environment once
        for _ in range(3):  # warm-up: imports, page cache, SQLite file
            floor_once(), sdk_once(client, job), sdk_once(client, env_job)
        floor, sdk, sdk_env = [], [], []
        for _ in range(args.runs):  # interleaved, so machine noise hits all alike
            floor.append(floor_once())
            sdk.append(sdk_once(client, job))
            sdk_env.append(sdk_once(client, env_job))
        cli = [cli_once(client, job_file, env) for _ in range(args.cli_runs)]
        startup(env, args.startup_runs)
        client.jobs.wait(client.jobs.list(max_results=1)[0]["name"], timeout=30)
        busy_rss = server.memory_info().rss / 2**20
        tracking_rss = sum(c.memory_info().rss for c in server.children() if _is_tracking(c)) / 2**20
    finally:
        subprocess.run([sys.executable, "-m", "cible", "server", "stop"], env=env, capture_output=True)

    f, s, c, e = median(floor), median(sdk), median(cli), median(sdk_env)
    print(f"runs: {args.runs} (SDK), {args.cli_runs} (CLI); medians")
    print(f"floor  Popen(python -c)          {f:8.1f} ms")
    print(f"cible  SDK create -> first line  {s:8.1f} ms   ratio {s / f:5.2f}x   added {s - f:+7.1f} ms")
    print(f"cible  CLI create -> first line  {c:8.1f} ms   ratio {c / f:5.2f}x   added {c - f:+7.1f} ms")
    print(f"cible  SDK, cached conda env     {e:8.1f} ms   warm environment reuse adds {e - s:+7.1f} ms over the "
          "host-Python job")
    print(f"cible  first job after a start  {first_job:8.1f} ms   ratio {first_job / f:5.2f}x   (MLflow starting "
          f"with it: tracking {os.environ['CIBLE_TRACKING']})")
    print(f"idle workspace before any job    {idle_all:8.1f} MB   (server and children, resident; target < 150 MB)")
    print(f"server resident after the runs   {busy_rss:8.1f} MB")
    print(f"MLflow tracking child            {tracking_rss:8.1f} MB   (tracking {os.environ['CIBLE_TRACKING']})")


if __name__ == "__main__":
    main()
