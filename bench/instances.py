"""Serverless compute and compute instances (local node provider): dispatch and idle shutdown.

1. serverless dispatch: submit -> the user's first line for a job with `compute: serverless` (a node
   made for it), median of --runs; beside the floor (Popen of the same `python -c`) and the same job on
   `local`, interleaved. Also: job end -> its node gone.
2. idle shutdown error: an instance with idle_time_before_shutdown PT3S runs a job; when its node leaves
   list-nodes, minus (job end + 3 s), and when `compute show` said it would stop, minus the same.
   Target +-1 s, --reps repetitions.

    .venv/bin/python bench/instances.py [--runs 10] [--reps 3]

A fresh workspace in a temporary folder (CIBLE_TRACKING=0), stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import SIZE, clean_up, job, median, poll, submit
from dispatch import FIRST_LINE, first_line_ns, floor_once


def ts(iso: str) -> float:
    at = datetime.fromisoformat(iso)
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def serverless_dispatch(client, runs: int) -> None:
    from cible import command

    on_local = job(f'python -c "{FIRST_LINE}"', "local")
    on_serverless = command(command=f'python -c "{FIRST_LINE}"', compute="serverless", experiment_name="bench",
                            resources={"instance_type": SIZE})
    floor_once(), first_line_ns(client, submit(client, on_local)[1])  # warm-up
    floor, serverless, local, gone = [], [], [], []
    for _ in range(runs):
        floor.append(floor_once())
        t0, name = submit(client, on_local)
        local.append(first_line_ns(client, name) / 1e6 - t0 * 1e3)
        t0, name = submit(client, on_serverless)
        serverless.append(first_line_ns(client, name) / 1e6 - t0 * 1e3)
        ended = ts(client.jobs.get(name)["end_time"])
        left = poll(lambda: time.time() if client.jobs.get(name)["serverless"]["live_nodes"] == 0 else None)
        gone.append((left - ended) * 1e3)
    f, s, loc = median(floor), median(serverless), median(local)
    print(f"\n1. serverless dispatch (a node made per job, {SIZE}), median of {runs}")
    print(f"   floor  Popen(python -c)                  {f:8.1f} ms")
    print(f"   local  SDK create -> first line          {loc:8.1f} ms   ratio {loc / f:6.1f}x")
    print(f"   serverless SDK create -> first line      {s:8.1f} ms   ratio {s / f:6.1f}x   ({s / loc:.1f}x local)")
    print(f"   job end -> its node gone (seen by polling) {median(gone):6.1f} ms")


def idle_shutdown(client, reps: int, idle_s: int = 3) -> None:
    from cible.core.specs.azureml.loader import load_spec_dict

    errors, said = [], []
    for rep in range(reps):
        name = f"ci{rep}"
        spec = {"name": name, "type": "computeinstance", "size": SIZE, "idle_time_before_shutdown": f"PT{idle_s}S"}
        client.compute.begin_create_or_update(load_spec_dict(spec, "compute", source="bench").entity).result()
        poll(lambda: True if client.compute.get(name)["state"] == "Running" else None)
        _, job_name = submit(client, job("true", f"azureml:{name}"))
        done = client.jobs.wait(job_name, timeout=60)
        ended = ts(done["end_time"])
        stops_at = poll(lambda: client.compute.get(name)["idleness"]["stops_at"])
        gone = poll(lambda: time.time() if not client.compute.list_nodes(name) else None, timeout=60)
        errors.append(gone - (ended + idle_s))
        said.append(ts(stops_at) - (ended + idle_s))
        client.compute.begin_delete(name)
    print(f"\n2. idle shutdown (PT{idle_s}S), {reps} repetitions: node gone minus (job end + {idle_s} s)")
    print("   " + ", ".join(f"{e:+.2f} s" for e in errors) + f"   target +-1 s: "
          f"{'met' if all(abs(e) <= 1 for e in errors) else 'NOT met'}")
    print("   `compute show`'s stops_at minus the same: " + ", ".join(f"{e:+.2f} s" for e in said))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cible-bench-instances-"))
    os.environ["CIBLE_HOME"] = str(home)
    os.environ["CIBLE_TRACKING"] = "0"
    from cible import MLClient

    started = time.time()
    client = MLClient(home=home)
    try:
        serverless_dispatch(client, args.runs)
        idle_shutdown(client, args.reps)
    finally:
        clean_up(client, home)
    print(f"\ntotal {time.time() - started:.0f} s; workspace {home}")


if __name__ == "__main__":
    main()
