"""Pure decisions about jobs: what the job reconciler's pass should do with each live job.

`decide_job` is one job's next move from its status and what its runner saw; `decide_jobs` is
the whole pass: every live job's move, with the jobs that want to start on a compute of slots
(`local`) taken through its FIFO queue (`queue_for_slots`), which also says why the others wait.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cible.core.lifecycle.jobs import TERMINAL, JobStatus, is_terminal, observed_steps
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import JobError, RunRecord
from cible.core.planning.scheduling import queue_for_slots

# How a job gets started: by its runner here, taking one of its compute's slots; placed on nodes
# by the cluster reconciler (which also says why it waits); or handed at once to an engine that
# queues it itself (Slurm: its runner's observation says why it waits).
RunsOn = Literal["slots", "placed", "engine"]
SLOTS: RunsOn = "slots"
PLACED: RunsOn = "placed"
ENGINE: RunsOn = "engine"


@dataclass
class JobDecision:
    launch: bool = False
    signal_cancel: bool = False
    steps: list[JobStatus] = field(default_factory=list)
    error: JobError | None = None
    queue_reason: str | None = None  # a new wait reason to store (None: the stored one still holds)
    waits: bool = False  # it only waits (for a slot, or to be placed): nothing was done with it

    @property
    def ends(self) -> bool:
        return bool(self.steps) and self.steps[-1] in TERMINAL


@dataclass(frozen=True)
class LiveJob:
    """One live job as a pass sees it: its stored state and what its runner saw of its run."""

    name: str
    status: JobStatus
    target: str
    run: RunRecord
    runs_on: RunsOn | None  # None: nothing can run it any more (its compute is gone)
    observation: RunObservation | None = None  # a launched job's, polled this pass
    job_type: str = "command"  # who else cares when it ends: a replica's deployment
    parent: str | None = None  # … its sweep or pipeline


def decide_job(status: JobStatus | str, launched: bool, observation: RunObservation | None) -> JobDecision:
    status = JobStatus(status)
    if is_terminal(status):
        return JobDecision()
    if not launched:
        if status == JobStatus.CANCEL_REQUESTED:
            return JobDecision(steps=[JobStatus.CANCELED],
                               error=JobError(code="Canceled", message="canceled before it started"))
        if status in (JobStatus.NOT_STARTED, JobStatus.QUEUED):
            return JobDecision(launch=True)
        return JobDecision()
    obs = observation or RunObservation(alive=False)
    decision = JobDecision(steps=observed_steps(status, obs.history))
    if obs.ended:
        decision.error = JobError.model_validate(obs.error) if obs.error else None
        return decision
    if not obs.alive and status == JobStatus.CANCEL_REQUESTED:
        # Gone before it said so (killed with its node while the cancel was on its way): what the
        # user asked for happened, so it ends Canceled, not Failed.
        decision.steps = [*decision.steps, JobStatus.CANCELED]
        decision.error = JobError(code="Canceled", message="canceled; its launcher stopped before it reported the end")
        return decision
    if not obs.alive:
        # The launcher died without reporting an end (killed, machine reboot).
        decision.steps = [*decision.steps, JobStatus.FAILED]
        decision.error = JobError(code="LauncherLost", message="the job's launcher stopped without reporting an end "
                                  "(killed or crashed); see system_logs/launcher.txt")
        return decision
    if status == JobStatus.CANCEL_REQUESTED:
        decision.signal_cancel = True
    return decision


def decide_jobs(jobs: Sequence[LiveJob], *, slots: int, running: Mapping[str, int]) -> dict[str, JobDecision]:
    """Every job's decision. `jobs` are in FIFO order (oldest first); `running` counts, per compute
    of slots, the jobs that hold one of its `slots` (launched and not yet seen to end)."""
    decisions: dict[str, JobDecision] = {}
    wanting: dict[str, list[LiveJob]] = {}  # compute of slots -> its jobs that want to start, FIFO
    for job in jobs:
        if job.runs_on is None:
            decisions[job.name] = JobDecision(steps=[JobStatus.FAILED], error=JobError(
                code="ComputeUnavailable", message=f"compute '{job.target}' no longer exists"))
            continue
        decision = decide_job(job.status, job.run.launched, job.observation)
        waits_in_engine = job.observation.queue_reason if job.observation else None
        if job.run.launched and (waits_in_engine or job.run.queue_reason) and waits_in_engine != job.run.queue_reason:
            decision.queue_reason = waits_in_engine or ""  # "": it no longer waits
        if decision.launch and job.runs_on == ENGINE:
            pass  # its engine queues it
        elif decision.launch and job.runs_on == PLACED:
            decision = JobDecision(waits=True)  # the cluster reconciler places it
        elif decision.launch:
            wanting.setdefault(job.target, []).append(job)
            continue
        decisions[job.name] = decision
    for compute, queued in wanting.items():
        queue = queue_for_slots(compute, slots, running.get(compute, 0), [job.name for job in queued])
        for job in queued:
            reason = queue.waiting.get(job.name)
            if reason is None:
                decisions[job.name] = JobDecision(launch=True)
            else:  # stays Queued: its reason is stored when it changed
                decisions[job.name] = JobDecision(waits=True, queue_reason=(
                    reason if reason != job.run.queue_reason else None))
    return decisions
