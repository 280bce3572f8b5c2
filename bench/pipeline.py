"""Pipelines: a 5-step linear pipeline of `true` steps; the time from one step's end to the next step's first line.

Each step runs `echo start $EPOCHREALTIME; true ${{inputs.prev}} ${{outputs.out}}; echo end $EPOCHREALTIME`
on a warm 2-node amlcompute cluster of the local provider (min 2, max 2: both nodes idle, agents warm),
and depends on the step before it through data: its `prev` input is bound to the previous step's
uri_folder output (`${{parent.jobs.<previous>.outputs.out}}`). settings.force_rerun is true, so that no
step of a repeated run is reused.

What is measured, per edge (step k ends -> step k+1 starts), median of --runs pipelines:

  edge            the previous step's end as the server recorded it (its Completed entry in the status
                  history, = its end_time) -> the next step's first line. The first line is the wall-clock
                  time the step's own shell printed (bash's $EPOCHREALTIME, read back from its std_log):
                  the launcher's logs have only whole seconds and the status history's Running is recorded
                  by the server when the launcher reports it, not when the user's command starts. All
                  processes share one machine and one clock, so the stamps compare directly.
  user to user    the previous step's last line (its own `end` stamp) -> the next step's first line: all
                  of cible's time between two steps' commands, the previous one's Finalizing (its output
                  folder sent to the server) and Completed included.

The breakdown under it gives, for the median edge, when the server recorded each mark after the
previous step's last line: its Finalizing and Completed, the next step's creation (the orchestrator's
reaction), Queued, Preparing, the node assignment, Running, and the first line.

Floors, in the same run and on the same cluster:

  one shell       the 5 commands chained in one bash: start(k+1) - end(k).
  client-driven   5 command jobs with the same command and the same data binding (`prev` = the previous
                  job's output, azureml://jobs/<job>/outputs/out), submitted back to back by a client that
                  polls jobs.get every 20 ms and submits the next once the previous is Completed: the
                  fairer floor (what a pipeline does, with a script instead of a server-side
                  orchestrator). Same two measures as above.

Target: <= 100 ms per edge. No timed assertions: the script prints, the reader judges.

    .venv/bin/python bench/pipeline.py [--runs 10] [--quick]

--quick: 2 runs. A fresh workspace in a temporary folder (CIBLE_TRACKING=0: no MLflow child; no step
logs a metric), its server stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import POLL_S, TERMINAL, clean_up, make_cluster, node_marks, poll, ts

CLUSTER = "pair"
EXPERIMENT = "pipeline-bench"
STEPS = 5
STAMP = "echo start $EPOCHREALTIME; true {args}; echo end $EPOCHREALTIME"
median = statistics.median


def step_command(first: bool) -> str:
    return STAMP.format(args="${{outputs.out}}" if first else "${{inputs.prev}} ${{outputs.out}}")


def pipeline_spec() -> dict:
    jobs = {}
    for k in range(1, STEPS + 1):
        step = {"type": "command", "command": step_command(k == 1), "outputs": {"out": {"type": "uri_folder"}}}
        if k > 1:
            step["inputs"] = {"prev": f"${{{{parent.jobs.s{k - 1}.outputs.out}}}}"}
        jobs[f"s{k}"] = step
    return {"type": "pipeline", "experiment_name": EXPERIMENT,
            "settings": {"default_compute": f"azureml:{CLUSTER}", "force_rerun": True}, "jobs": jobs}


def stamps(client, job: str) -> tuple[float, float]:
    """(first line, last line) of a step, as its shell stamped them."""
    log = client._client.request("GET", f"/jobs/{job}/logs").content.decode()
    found = {}
    for line in log.splitlines():
        word, _, at = line.partition(" ")
        if word in ("start", "end") and word not in found:
            found[word] = float(at)
    if len(found) != 2:
        raise RuntimeError(f"job {job}: no start/end stamps in its log: {log!r}")
    return found["start"], found["end"]


def history(client, job: str) -> dict[str, float]:
    """status -> when the server first recorded it."""
    marks: dict[str, float] = {}
    for change in client.jobs.get(job).get("status_history") or []:
        marks.setdefault(change["status"], ts(change["at"]))
    return marks


def edges(client, home: Path, jobs: list[str]) -> list[dict[str, float]]:
    """Per edge: ms from the previous step's last line to each mark, and the two measures."""
    nodes = node_marks(home, CLUSTER)
    out = []
    for prev, nxt in pairwise(jobs):
        (_, prev_end), (nxt_first, _) = stamps(client, prev), stamps(client, nxt)
        before, after = history(client, prev), history(client, nxt)
        completed = before["Completed"]
        marks = {f"prev {s}": before[s] for s in ("Finalizing", "Completed") if s in before}
        # The next step's Finalizing comes after its first line (a `true` ends at once): left out.
        marks |= {f"next {s}": at for s, at in after.items() if s not in (*TERMINAL, "Finalizing")}
        if "assigned" in nodes.get(nxt, {}):
            marks["next assigned"] = nodes[nxt]["assigned"]
        marks["next first line"] = nxt_first
        out.append({"edge": (nxt_first - completed) * 1e3, "user": (nxt_first - prev_end) * 1e3,
                    **{k: (at - prev_end) * 1e3 for k, at in marks.items()}})
    return out


def run_pipeline(client) -> list[str]:
    """One pipeline; its steps' jobs in order."""
    from cible.core.specs.azureml.loader import load_spec_dict

    spec = load_spec_dict(pipeline_spec(), "job", source="bench").entity
    name = client.jobs.create_or_update(spec)["name"]
    done = client.jobs.wait(name, timeout=300)
    steps = {s["name"]: s for s in done.get("steps") or []}
    if done["status"] != "Completed":
        raise RuntimeError(f"pipeline {name} ended {done['status']}: {done.get('error')}; steps {steps}")
    return [steps[f"s{k}"]["job"] for k in range(1, STEPS + 1)]


def run_chain(client) -> list[str]:
    """The client-driven floor: 5 command jobs, each submitted once the previous is Completed."""
    from cible import Input, Output, command

    jobs: list[str] = []
    for k in range(STEPS):
        inputs = {"prev": Input(type="uri_folder", path=f"azureml://jobs/{jobs[-1]}/outputs/out")} if jobs else None
        spec = command(command=step_command(not jobs), inputs=inputs, outputs={"out": Output(type="uri_folder")},
                       compute=f"azureml:{CLUSTER}", experiment_name="chain-bench")
        name = client.jobs.create_or_update(spec)["name"]
        job = poll(lambda n=name: ended(client, n), timeout=120)
        if job["status"] != "Completed":
            raise RuntimeError(f"chain step {k + 1} ({name}) ended {job['status']}: {job.get('error')}")
        jobs.append(name)
    return jobs


def ended(client, name: str) -> dict | None:
    job = client.jobs.get(name)
    return job if job["status"] in TERMINAL else None


def one_shell() -> list[float]:
    """ms from one command's last line to the next one's first, all in one bash."""
    script = "; ".join(STAMP.format(args="") for _ in range(STEPS))
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    starts, ends = [float(v) for v in out[1::4]], [float(v) for v in out[3::4]]
    return [(s - e) * 1e3 for e, s in zip(ends, starts[1:], strict=False)]


def show(label: str, runs: list[list[dict[str, float]]]) -> None:
    per_edge = [[run[i] for run in runs] for i in range(STEPS - 1)]
    each = "  ".join(f"{k + 1}->{k + 2} {median(e['edge'] for e in edge):6.0f}" for k, edge in enumerate(per_edge))
    mean = statistics.fmean(e["edge"] for run in runs for e in run)
    user = statistics.fmean(e["user"] for run in runs for e in run)
    print(f"   {label:<34} per edge (median ms) {each}   mean {mean:6.0f} ms   "
          f"(user to user: mean {user:6.0f} ms)")


def breakdown(runs: list[list[dict[str, float]]]) -> str:
    offsets: dict[str, list[float]] = {}
    for run in runs:
        for e in run:
            for key, value in e.items():
                if key not in ("edge", "user"):
                    offsets.setdefault(key, []).append(value)
    return " -> ".join(f"{k} {v:.0f}" for v, k in sorted((median(v), k) for k, v in offsets.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a short run: --runs 2")
    args = parser.parse_args()
    if args.quick:
        args.runs = 2

    home = Path(tempfile.mkdtemp(prefix="cible-bench-pipeline-"))
    os.environ["CIBLE_HOME"] = str(home)
    os.environ["CIBLE_TRACKING"] = "0"
    from cible import MLClient, command

    started = time.time()
    client = MLClient(home=home)
    try:
        make_cluster(client, CLUSTER, 2, 2, 600, ready=2)
        warm = [client.jobs.create_or_update(command(command="true", compute=f"azureml:{CLUSTER}",
                                                     experiment_name="warm-up"))["name"] for _ in range(2)]
        for name in warm:
            client.jobs.wait(name, timeout=120)
        run_chain(client)  # warm-up: outputs, inputs and the cluster's placement
        pipelines, chains, shells = [], [], []
        for _ in range(args.runs):  # interleaved, so machine noise hits all alike
            shells.append(one_shell())
            chains.append(edges(client, home, run_chain(client)))
            pipelines.append(edges(client, home, run_pipeline(client)))
    finally:
        clean_up(client, home)

    print(f"\n{STEPS}-step linear pipeline of `true` steps (data-bound: uri_folder output -> next input) on a "
          f"warm 2-node cluster; {args.runs} runs, {os.cpu_count()} CPUs, load avg (1 min) {os.getloadavg()[0]:.1f}")
    print("edge = the previous step's Completed (status history) -> the next step's first line (its own stamp)")
    flat = [e for run in shells for e in run]
    print(f"   {'floor  one shell (bash)':<34} per edge median {median(flat):.3f} ms")
    show("floor  client-driven command jobs", chains)
    show("cible  pipeline", pipelines)
    p_mean = statistics.fmean(e["edge"] for run in pipelines for e in run)
    c_mean = statistics.fmean(e["edge"] for run in chains for e in run)
    print(f"   pipeline / client-driven: {p_mean / c_mean:.2f}x   target <= 100 ms per edge: "
          f"{'met' if p_mean <= 100 else 'NOT met'}")
    print("   pipeline, ms after the previous step's last line (medians over edges and runs):")
    print("     " + breakdown(pipelines))
    print("   client-driven, the same marks:")
    print("     " + breakdown(chains))
    print(f"   (client polling every {POLL_S * 1e3:.0f} ms for the client-driven floor)")
    print(f"\ntotal {time.time() - started:.0f} s; workspace {home}")


if __name__ == "__main__":
    main()
