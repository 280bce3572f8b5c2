"""`python -m cible.agent.pilot --node-id … --job … --attempt … --token-file … --url … --root …`:
one task of a cible job's Slurm job (the sbatch script's `srun` starts one per node).

A pilot is the node agent for one run: it asks the server for its run over the same long-polled
heartbeat (its token is the job's pilot token, so the server answers from the job's record, not a
node's), fetches the run's files over HTTP, starts the launcher, ships logs and outputs and reports
as any agent does, then ends, and so does the Slurm job. With `--keep-s` above 0 it stays once its
run ended and was reported, heartbeating, until the server hands it the next job of the same user
and request (that job's name and pilot token: it then serves that job, in the same allocation) or
tells it to stop; on its own it stops `--keep-s` (and a margin) after its run ended. Its node id names Slurm's job id and
node rank (`slurm-job-<id>-<rank>`), so the server knows which rank asks. The addresses of the
job's nodes come from Slurm (CIBLE_NODE_ADDRS, written by the sbatch script from `scontrol`):
node rank 0's is MASTER_ADDR.

Slurm's own signals: `scancel` or the time limit send SIGTERM to every task; the pilot then
cancels its launcher and reports how it ended before Slurm's KillWait runs out. The server
reads Slurm's state beside the reports, so a run Slurm ended says Slurm's reason.

The token is read from a file the server wrote (0600, the submitting user's): never in the
script, which slurmctld keeps, nor on a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cible.agent.agent import Agent
from cible.node.limits import LimitError, NodeLimits, Shape, host_capacity

log = logging.getLogger("cible.agent")
WAIT_FOR_RUN_S = 120.0
KEEP_MARGIN_S = 30.0  # a warm pilot outlives the server's keep by this, then ends on its own


class Pilot(Agent):
    """An agent for one job's run at a time: it stops once that run ended and was reported, unless
    the allocation is kept (keep_s) and the run Completed: then it waits for the server's word."""

    def __init__(self, *, job: str, node_addrs: list[str], cache_root: Path | None = None,
                 wait_for_run_s: float = WAIT_FOR_RUN_S, keep_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job = job  # the job it serves now
        self.node_addrs = node_addrs
        self.cache_root = cache_root
        self.wait_for_run_s = wait_for_run_s
        self.keep_s = keep_s
        # A pilot whose run never comes (a Slurm job the server did not record, its submit tried
        # again) ends rather than hold its allocation; so does one kept warm past the server's keep.
        self.give_up_at = time.monotonic() + wait_for_run_s
        self.warm = False  # its run ended: waiting for the next job

    def serve(self) -> int:
        status = super().serve()
        with self.lock:
            ended = bool(self.done) and not self.runs
        return status if ended or status else 1

    def _finished(self) -> bool:
        """Its job's run ended and was reported (called under the lock)."""
        return not self.runs and any(job == self.job for job, _ in self.done)

    def _heartbeat_body(self, wait_s: float) -> dict[str, Any]:
        body = super()._heartbeat_body(wait_s)
        with self.lock:
            body["done"] = [{"job": job, "attempt": attempt} for job, attempt in self.done if job == self.job]
        return body

    def _heartbeat(self, wait_s: float) -> dict[str, Any] | None:
        with self.lock:
            finished = self._finished()
            idle = not self.runs
        if finished and self.keep_s <= 0:
            log.info("job %s's run ended: this pilot ends", self.job)
            return {"stop": True, "runs": []}
        if finished and not self.warm:
            self.warm, self.give_up_at = True, time.monotonic() + self.keep_s + KEEP_MARGIN_S
        if idle and time.monotonic() > self.give_up_at:
            log.error("no %s for this pilot from the server; it ends", "next job" if self.warm else "run")
            return {"stop": True, "runs": []}
        reply = super()._heartbeat(wait_s)
        if reply is None or reply.get("stop"):
            log.info("the server ends this pilot (job %s: %s)", self.job, (reply or {}).get("state", "not known"))
        switch = (reply or {}).get("switch")
        if switch:  # the next job, in this allocation: its token from now on
            log.info("job %s ended; this allocation serves job %s next", self.job, switch["job"])
            self.job, self.token, self.warm = switch["job"], switch["token"], False
            self.give_up_at = time.monotonic() + self.wait_for_run_s
        elif self.warm and reply is not None and not reply.get("stop"):
            # The server keeps the allocation: it says when it ends; this only outlives a server gone.
            self.give_up_at = time.monotonic() + float(reply.get("wait_s") or 0) + KEEP_MARGIN_S
        for run in (reply or {}).get("runs", []):
            if run.get("plan") and self.node_addrs:
                run["plan"] = {**run["plan"], "node_addrs": self.node_addrs}
        return reply

    def _send_report(self, run: Any, report: dict[str, Any]) -> bool:
        sent = super()._send_report(run, report)
        if sent and report.get("ended") and (report.get("history") or [""])[-1] != "Completed":
            # Only a Completed run gives its allocation back: this pilot ends, and Slurm's end of the
            # job comes at once (the server reads how the run ended beside it).
            self.keep_s = 0.0
        return sent

    def on_sigterm(self, *_: object) -> None:
        """Slurm ends the job (scancel, its time limit): the launcher is told to stop, and the pilot
        goes on until its end is shipped and reported (a pilot without a run stops now)."""
        with self.lock:
            if not self.runs:
                self.stopping.set()
            runs = [run for run in self.runs.values() if not run.canceling]
            for run in runs:
                run.canceling = True
        for run in runs:
            threading.Thread(target=self._cancel, args=(run,), daemon=True).start()


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cible.agent.pilot", description="one node of a cible job on Slurm")
    p.add_argument("--node-id", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--token-file", required=True, type=Path)
    p.add_argument("--url", required=True, help="the workspace server's URL as the Slurm nodes reach it")
    p.add_argument("--root", required=True, type=Path, help="a folder of this node's own for the run")
    p.add_argument("--cache-root", type=Path, help="where the blob and environment caches are kept across runs")
    p.add_argument("--orphan-after", type=float, default=600.0)
    p.add_argument("--keep-s", type=float, default=0.0,
                   help="once its run ended, wait this long (as the server says) for the next job of this allocation")
    return p.parse_args(argv)


def slurm_shape() -> Shape:
    """This task's share of the node, as Slurm gave it (SLURM_CPUS_PER_TASK, SLURM_MEM_PER_NODE in MB)."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or 1)
    memory_mb = os.environ.get("SLURM_MEM_PER_NODE")
    gpus = len([g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()])
    if memory_mb and memory_mb.isdigit() and int(memory_mb) > 0:
        return Shape(vcpus=cpus, memory_gb=int(memory_mb) / 1024, gpus=gpus)
    return Shape(vcpus=cpus, memory_gb=host_capacity().memory_gb, gpus=gpus)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        token = args.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(f"cible pilot: cannot read its token: {exc}", file=sys.stderr)
        return 2
    # Slurm holds the job to its allocation (its cgroups, where the site enforces them, and its
    # OUT_OF_MEMORY end, which the server reports): the pilot polices nothing again. A site's default
    # memory per CPU is often an accounting figure no job is killed for.
    os.environ.setdefault("CIBLE_LIMITS_MECHANISM", "watchdog")
    addrs = [a for a in os.environ.get("CIBLE_NODE_ADDRS", "").split(",") if a]
    args.root.mkdir(parents=True, exist_ok=True)
    try:
        share = slurm_shape()
        unpoliced = Shape(vcpus=share.vcpus, memory_gb=max(share.memory_gb, host_capacity().memory_gb), gpus=share.gpus)
        limits = NodeLimits(args.node_id, unpoliced, overcommit=True, size="its Slurm allocation")
        pilot = Pilot(job=args.job, node_addrs=addrs, node_id=args.node_id, root=args.root, url=args.url.rstrip("/"),
                      token=token, limits=limits, orphan_after_s=args.orphan_after, cache_root=args.cache_root,
                      keep_s=args.keep_s)
    except LimitError as exc:
        print(f"cible pilot: {exc.message}", file=sys.stderr)
        return 1
    return pilot.serve()


if __name__ == "__main__":
    sys.exit(main())
