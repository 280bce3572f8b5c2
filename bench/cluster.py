"""Compute clusters (`type: amlcompute`, local node provider): dispatch, scale-up, scale-down, throughput.

Each figure is printed beside a floor measured in the same run, with the ratio:

1. warm dispatch: submit -> the user's first line on a cluster whose one node is idle (median of --runs);
   floor: Popen of the same `python -c` (bench/dispatch.py's floor_once). Target <= 2x.
2. scale-up: submit to an empty cluster (min 0, max 1) -> node ready -> the user's first line.
3. idle scale-down: when a node (idle_time_before_scale_down 3 s) leaves list-nodes, minus (job end + 3 s).
   Target +-1 s, 3 repetitions.
4. throughput: --jobs `true` jobs on a 2-node cluster, all submitted first (in one request per 1000, or
   one each with --one-by-one); jobs/s from the first submit to the last end; floor: as many
   `bash -c true` run two at a time (the launcher runs commands with bash -c). Target >= 0.3x the floor.
   Also the CPU spent per job (the machine's, and the server's share) and the rate the cores allow at that
   cost: past that bound only less CPU per job makes the rate higher.
5. serverless: submit -> the user's first line on `compute: serverless` (a node made for each job), without
   and with a warm agent pool (a second workspace, CIBLE_WARM_NODES=1); floor as in 1. Target <= 3x.

Breakdowns read the node state history from the workspace's SQLite file (the API does not show it) and
the launchers' state files under the nodes' roots. The throughput wait is capped (--max-wait, after the last
submit): past it, the rate counts the jobs that ended and says so.

    .venv/bin/python bench/cluster.py [--runs 30] [--jobs 1000] [--max-wait 90] [--quick] [--one-by-one]
                                      [--only dispatch|scale-up|scale-down|throughput|serverless]

A fresh workspace in a temporary folder (CIBLE_TRACKING=0: no MLflow child), stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dispatch import FIRST_LINE, first_line_ns, floor_once

SIZE = "Standard_DS1_v2"
TERMINAL = ("Completed", "Failed", "Canceled")
NODE_TYPES = ("amlcompute", "computeinstance")  # computes with nodes to drain at the end
POLL_S = 0.02
median = statistics.median


def ts(iso: str) -> float:
    at = datetime.fromisoformat(iso)
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()  # SQLite's are naive UTC


def query(home: Path, sql: str, *args: str) -> list[tuple]:
    """Read the workspace's SQLite file (node and status histories the API does not show in bulk)."""
    with sqlite3.connect(f"file:{home / 'cible.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, args).fetchall()


def node_history(home: Path, compute: str) -> list[tuple[str, str, float, str]]:
    """(node, to_state, at, reason) of a cluster's nodes, oldest first."""
    rows = query(home, "SELECT h.node_id, h.to_state, h.at, h.reason FROM node_state_history h JOIN nodes n "
                       "USING (node_id) WHERE n.compute = ? ORDER BY h.id", compute)
    return [(node, state, ts(at), reason) for node, state, at, reason in rows]


def node_marks(home: Path, compute: str) -> dict[str, dict[str, float]]:
    """job -> when its node was assigned to it and freed ("ended"), from the node history's reasons."""
    marks: dict[str, dict[str, float]] = {}
    for _, _, at, reason in node_history(home, compute):
        words = reason.split()
        if reason.startswith("assigned to job "):
            marks.setdefault(words[3], {})["assigned"] = at
        elif reason.startswith("job ") and reason.endswith(" ended"):
            marks.setdefault(words[1], {})["node freed"] = at
    return marks


def status_marks(home: Path, experiment: str) -> dict[str, dict[str, float]]:
    """job -> when the server first recorded each status of it."""
    marks: dict[str, dict[str, float]] = {}
    for name, status, at in query(home, "SELECT h.job_name, h.to_status, h.at FROM job_status_history h JOIN jobs j "
                                        "ON j.name = h.job_name WHERE j.experiment_name = ? ORDER BY h.id", experiment):
        marks.setdefault(name, {}).setdefault(status, ts(at))
    return marks


def launcher_marks(home: Path) -> dict[str, dict[str, float]]:
    """job -> when its node's agent wrote the plan, and the statuses its launcher recorded (the node's files)."""
    marks: dict[str, dict[str, float]] = {}
    for run in (home / "nodes").glob("*/runs/*.*"):
        try:
            mine = {"plan on node": (run / "plan.json").stat().st_mtime}
            for step in json.loads((run / "state.json").read_text())["history"]:
                mine.setdefault(f"launcher {step['status']}", ts(step["at"]))
        except (OSError, ValueError, KeyError):
            continue
        marks[run.name.rsplit(".", 1)[0]] = mine
    return marks


def poll(probe, timeout: float = 120):
    """probe() every POLL_S until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing after {timeout} s")
        time.sleep(POLL_S)
    return found


def make_cluster(client, name: str, lo: int, hi: int, idle: int, ready: int = 0) -> None:
    from cible.core.specs.azureml.loader import load_spec_dict

    entity = load_spec_dict({"name": name, "type": "amlcompute", "size": SIZE, "min_instances": lo,
                             "max_instances": hi, "idle_time_before_scale_down": idle}, "compute",
                            source="flags").entity
    client.compute.begin_create_or_update(entity).result()
    idle_nodes = lambda: sum(n["node_state"] == "idle" for n in client.compute.list_nodes(name)) >= ready or None
    poll(idle_nodes)


def job(cmd: str, compute: str, experiment: str = "bench"):
    from cible import command

    return command(command=cmd, compute=compute, experiment_name=experiment)


def submit(client, spec) -> tuple[float, str]:
    return time.time(), client.jobs.create_or_update(spec)["name"]


# -- 1. warm dispatch -------------------------------------------------------------------------------
def warm_dispatch(client, home: Path, runs: int) -> None:
    make_cluster(client, "warm", 1, 1, 600, ready=1)
    spec = job(f'python -c "{FIRST_LINE}"', "azureml:warm")
    for _ in range(3):  # warm-up: imports, page cache, SQLite
        floor_once(), first_line_ns(client, submit(client, spec)[1])
    local = job(f'python -c "{FIRST_LINE}"', "local")
    floor, cible, on_local, submitted = [], [], [], {}
    for _ in range(runs):  # interleaved, so machine noise hits all alike
        floor.append(floor_once())
        t0, name = submit(client, local)
        on_local.append(first_line_ns(client, name) / 1e6 - t0 * 1e3)
        t0, name = submit(client, spec)
        cible.append(first_line_ns(client, name) / 1e6 - t0 * 1e3)
        submitted[name] = t0
    f, c, loc = median(floor), median(cible), median(on_local)
    statuses, nodes, node_side = status_marks(home, "bench"), node_marks(home, "warm"), launcher_marks(home)
    phases = {"FIRST LINE": [c]}
    for name, t0 in submitted.items():
        for step, at in {**statuses[name], **nodes[name], **node_side.get(name, {})}.items():
            phases.setdefault(step, []).append((at - t0) * 1e3)
    print(f"\n1. warm dispatch (1 idle node), median of {runs}")
    print(f"   floor  Popen(python -c)              {f:8.1f} ms")
    print(f"   cible  SDK create -> first line      {c:8.1f} ms   ratio {c / f:5.2f}x   added {c - f:+7.1f} ms"
          f"   target <= 2x: {'met' if c <= 2 * f else 'NOT met'}")
    print(f"   (reference: the same job on compute: local {loc:8.1f} ms   ratio {loc / f:5.2f}x; the cluster adds "
          f"{c - loc:+.1f} ms)")
    print("   breakdown, median ms after submit (server: statuses, assigned, node freed; node: plan, launcher; "
          "user: first line):")
    marks = sorted((median(v), k) for k, v in phases.items() if k != "NotStarted")
    print("     " + " -> ".join(f"{k} {v:.0f}" for v, k in marks))


# -- 2. scale-up ------------------------------------------------------------------------------------
def scale_up(client, home: Path) -> None:
    make_cluster(client, "cold", 0, 1, 600)
    floor = median(floor_once() for _ in range(5))
    agent_import = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cible.agent", "--help"], capture_output=True, check=True)
    agent_import = (time.perf_counter() - agent_import) * 1e3
    t0, name = submit(client, job(f'python -c "{FIRST_LINE}"', "azureml:cold"))
    left = lambda: next((time.time() for n in client.compute.list_nodes("cold") if n["node_state"] != "preparing"), None)
    ready = (poll(left) - t0) * 1e3
    first = first_line_ns(client, name) / 1e6 - t0 * 1e3
    at = {state: (at - t0) * 1e3 for _, state, at, _ in reversed(node_history(home, "cold"))}
    print("\n2. scale-up (min 0, max 1), one job")
    print(f"   floor  Popen(python -c)              {floor:8.1f} ms (median of 5)")
    print(f"          python -m cible.agent --help  {agent_import:8.1f} ms (the agent's start-up alone)")
    print(f"   submit -> node requested             {at['preparing']:8.1f} ms")
    print(f"   submit -> node ready                 {ready:8.1f} ms   (left preparing: polled every "
          f"{POLL_S * 1e3:.0f} ms; {at['idle']:.0f} ms in the node history)")
    print(f"   node ready -> user's first line      {first - ready:8.1f} ms   (assigned at {at['running']:.0f} ms)")
    print(f"   submit -> user's first line          {first:8.1f} ms   ratio {first / floor:6.1f}x")
    client.compute.begin_delete("cold")


# -- 3. idle scale-down -------------------------------------------------------------------------------
def scale_down(client, home: Path, reps: int = 3, idle: int = 3) -> None:
    make_cluster(client, "shrink", 0, 1, idle)
    print(f"\n3. idle scale-down (idle_time_before_scale_down {idle} s); seconds after (job end + {idle} s)")
    for rep in range(reps):
        name = submit(client, job("true", "azureml:shrink"))[1]
        due = ts(client.jobs.wait(name, timeout=120)["end_time"]) + idle
        node = client.compute.list_nodes("shrink")[0]["node_id"]
        pid = json.loads((home / "nodes" / node / "agent.json").read_text())["pid"]
        seen: dict[str, float] = {}
        error = poll(removal_probe(client, pid, seen), timeout=60) - due
        steps = "   ".join(f"{k} {v - due:+.2f}" for k, v in seen.items())
        print(f"   rep {rep + 1}: {steps}   gone from list-nodes {error:+.2f}   "
              f"target +-1 s: {'met' if abs(error) <= 1 else 'NOT met'}")
    history = node_history(home, "shrink")
    removal = [b[2] - a[2] for a, b in pairwise(history) if (a[1], b[1]) == ("leaving", "removed")]
    print(f"   node history: leaving -> removed took {', '.join(f'{r:.2f}' for r in removal)} s")
    client.compute.begin_delete("shrink")


def removal_probe(client, pid: int, seen: dict[str, float]):
    """When the node is gone from list-nodes; notes in `seen` when it was leaving and when its agent exited."""
    def gone() -> float | None:
        nodes, now = client.compute.list_nodes("shrink"), time.time()
        if any(n["node_state"] == "leaving" for n in nodes):
            seen.setdefault("leaving", now)
        if not psutil.pid_exists(pid):
            seen.setdefault("agent exited", now)
        return None if nodes else now
    return gone


# -- 4. throughput ------------------------------------------------------------------------------------
def throughput(client, home: Path, jobs: int, max_wait: float, one_by_one: bool = False) -> None:
    make_cluster(client, "pair", 2, 2, 600, ready=2)
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: subprocess.run(["bash", "-c", "true"], check=True), range(jobs)))
    floor = jobs / (time.perf_counter() - t)
    spec = job("true", "azureml:pair", experiment="throughput")
    latencies = []
    server = psutil.Process(json.loads((home / "server.json").read_text())["pid"])
    cpu_before, server_before = busy_s(psutil.cpu_times()), busy_s(server.cpu_times())
    first = time.time()
    if one_by_one:
        for _ in range(jobs):
            t = time.perf_counter()
            client.jobs.create_or_update(spec)
            latencies.append((time.perf_counter() - t) * 1e3)
    else:  # one request per 1000 jobs (the SDK's create_or_update_many)
        client.jobs.create_or_update_many([spec] * jobs)
        latencies = [(time.time() - first) * 1e3 / jobs]
    submitted = time.time() - first
    done = wait_all(client, "throughput", jobs, timeout=max_wait)
    machine_cpu, server_cpu = busy_s(psutil.cpu_times()) - cpu_before, busy_s(server.cpu_times()) - server_before
    ends = sorted(ts(j["end_time"]) for j in done if j["end_time"])
    statuses = {s: sum(j["status"] == s for j in done) for s in {j["status"] for j in done}}
    rate = len(ends) / (ends[-1] - first)
    print(f"\n4. throughput: {jobs} jobs of `true` on 2 nodes (min 2, max 2)")
    print(f"   floor  ThreadPool(2) x subprocess.run(bash -c true)  {floor:8.1f} jobs/s")
    print(f"   cible  first submit -> last end                      {rate:8.1f} jobs/s   ratio {floor / rate:6.1f}x "
          f"slower (= {rate / floor:.3f}x the floor; target >= 0.3x)" + ("" if len(ends) == jobs else f"   (PARTIAL: {len(ends)} of {jobs} ended within --max-wait "
                                                     f"{max_wait:g} s; the rest are failed by the clean-up)"))
    step = max(1, len(ends) // 10)
    trend = [step / (ends[i + step - 1] - ends[i]) for i in range(0, len(ends) - step + 1, step)]
    print(f"   jobs/s by tenths of the ended jobs (queue draining): {' '.join(f'{r:.1f}' for r in trend)}")
    how = "create_or_update, one job per request" if one_by_one else "create_or_update_many, one request"
    print(f"   submitting alone ({how}): {submitted:.2f} s ({jobs / submitted:.1f} jobs/s; per job median "
          f"{median(latencies):.1f} ms, first 10% {median(latencies[:max(1, jobs // 10)]):.1f} ms, last 10% "
          f"{median(latencies[-max(1, jobs // 10):]):.1f} ms)")
    print(f"   last end {ends[-1] - first - submitted:.1f} s after the last submit; statuses {statuses}")
    # Where the machine's CPU went, per ended job: the rate can be no more than cores / CPU per job.
    per_job = machine_cpu / max(1, len(ends))
    print(f"   CPU per job: {per_job * 1e3:.0f} ms in all (server {server_cpu / max(1, len(ends)) * 1e3:.0f} ms; the "
          f"rest is agents, launchers, the commands and this client); {psutil.cpu_count()} cores allow at most "
          f"{psutil.cpu_count() / per_job:.1f} jobs/s at that cost")
    print("   a node's time per job, median ms after it was assigned (server and node marks, as in 1.):")
    print("     " + " -> ".join(f"{k} {v:.0f}" for k, v in node_cycle(home, "pair", "throughput").items()))


def busy_s(times) -> float:  # noqa: ANN001  (psutil's cpu_times, of the machine or of a process)
    """CPU seconds spent working: user and system time (a process's children are not counted)."""
    return times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0) + \
        getattr(times, "softirq", 0.0)


def node_cycle(home: Path, compute: str, experiment: str) -> dict[str, float]:
    """Median ms from a job's assignment to each later mark the server recorded for it."""
    statuses, node_side = status_marks(home, experiment), launcher_marks(home)
    offsets: dict[str, list[float]] = {}
    for name, marks in node_marks(home, compute).items():
        if "assigned" in marks and "node freed" in marks:
            for step, at in {**statuses.get(name, {}), **node_side.get(name, {}), **marks}.items():
                if at >= marks["assigned"] and step != "assigned":
                    offsets.setdefault(step, []).append((at - marks["assigned"]) * 1e3)
    return dict(sorted(((k, median(v)) for k, v in offsets.items()), key=lambda kv: kv[1]))


def wait_all(client, experiment: str, jobs: int, timeout: float) -> list:
    count = lambda s: client._client.json("GET", "/jobs", params={"status": s, "experiment_name": experiment,
                                                                  "top": 1})["count"]
    with contextlib.suppress(TimeoutError):
        poll(lambda: True if sum(map(count, TERMINAL)) >= jobs else time.sleep(1), timeout=timeout)
    return client.jobs.list(experiment_name=experiment)


# -- 5. serverless -------------------------------------------------------------------------------------
def serverless(client, home: Path, runs: int) -> None:
    """Jobs on `compute: serverless` (each gets a node of its own) in this workspace, and in a second one whose
    server keeps one warm agent (CIBLE_WARM_NODES=1), interleaved with the floor."""
    from cible import MLClient

    warm_home = Path(tempfile.mkdtemp(prefix="cible-bench-warm-"))
    os.environ["CIBLE_WARM_NODES"] = "1"
    try:
        warm = MLClient(home=warm_home)  # its server starts here, with the pool
    finally:
        del os.environ["CIBLE_WARM_NODES"]
    spec = job(f'python -c "{FIRST_LINE}"', "serverless")
    floor, cold, hot = [], [], []
    try:
        for each in (client, warm):  # warm-up: imports, page cache, SQLite
            first_line_ns(each, submit(each, spec)[1])
        for _ in range(runs):
            for each, out in ((client, cold), (warm, hot)):
                time.sleep(0.5)  # the last job's node leaving, and the pool's next agent starting, are not measured
                floor.append(floor_once())
                t0, name = submit(each, spec)
                out.append(first_line_ns(each, name) / 1e6 - t0 * 1e3)
    finally:
        clean_up(warm, warm_home)
    f, c, w = median(floor), median(cold), median(hot)
    print(f"\n5. serverless (a node made for each job), median of {runs}")
    print(f"   floor  Popen(python -c)                        {f:8.1f} ms")
    print(f"   cible  SDK create -> first line, no warm pool  {c:8.1f} ms   ratio {c / f:5.2f}x")
    print(f"   cible  the same, CIBLE_WARM_NODES=1            {w:8.1f} ms   ratio {w / f:5.2f}x   target <= 3x: "
          f"{'met' if w <= 3 * f else 'NOT met'}")


# -- set-up and clean-up ------------------------------------------------------------------------------
def clean_up(client, home: Path) -> None:
    try:
        for compute in client.compute.list():
            if compute["type"] in NODE_TYPES:
                client.compute.begin_delete(compute["name"])
        # Drained once no cluster is listed and the provider has removed every node's root (its agent exited).
        with contextlib.suppress(TimeoutError):
            poll(lambda: None if any(c["type"] in NODE_TYPES for c in client.compute.list()) else True, 60)
            poll(lambda: None if any((home / "nodes").glob("*/agent.json")) else True, timeout=30)
    finally:
        subprocess.run([sys.executable, "-m", "cible", "server", "stop", "--home", str(home)], check=False,
                       capture_output=True)
        for agent_file in (home / "nodes").glob("*/agent.json"):  # any agent the drain did not stop
            try:
                agent = psutil.Process(json.loads(agent_file.read_text())["pid"])
                for proc in [*agent.children(recursive=True), agent]:
                    proc.kill()
                print(f"killed a left-over agent: {agent_file.parent.name}")
            except (psutil.Error, OSError, ValueError, KeyError):
                pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--max-wait", type=float, default=90,
                        help="seconds to wait for the throughput jobs after the last submit; then the rate is partial")
    parser.add_argument("--quick", action="store_true", help="a short run: --runs 5 --jobs 50")
    parser.add_argument("--one-by-one", action="store_true",
                        help="submit the throughput jobs one request each (create_or_update), not in one batch")
    parser.add_argument("--only", choices=["dispatch", "scale-up", "scale-down", "throughput", "serverless"],
                        help="run one part alone")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs = 5, 50

    home = Path(tempfile.mkdtemp(prefix="cible-bench-cluster-"))
    os.environ["CIBLE_HOME"] = str(home)
    os.environ["CIBLE_TRACKING"] = "0"
    from cible import MLClient

    started = time.time()
    client = MLClient(home=home)
    try:
        parts = {"dispatch": lambda: warm_dispatch(client, home, args.runs), "scale-up": lambda: scale_up(client, home),
                 "scale-down": lambda: scale_down(client, home),
                 "throughput": lambda: throughput(client, home, args.jobs, args.max_wait, args.one_by_one),
                 "serverless": lambda: serverless(client, home, min(args.runs, 15))}
        for name, part in parts.items():
            if args.only in (None, name):
                part()
    finally:
        clean_up(client, home)
    print(f"\ntotal {time.time() - started:.0f} s; workspace {home}")


if __name__ == "__main__":
    main()
