"""Pure decisions about one job: what the reconciler should do next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cible.core.lifecycle.jobs import JobStatus, is_terminal, observed_steps
from cible.core.models.runs import RunObservation


@dataclass
class JobDecision:
    launch: bool = False
    signal_cancel: bool = False
    steps: list[JobStatus] = field(default_factory=list)
    error: dict[str, Any] | None = None


def decide_job(status: JobStatus | str, launched: bool, observation: RunObservation | None) -> JobDecision:
    status = JobStatus(status)
    if is_terminal(status):
        return JobDecision()
    if not launched:
        if status == JobStatus.CANCEL_REQUESTED:
            return JobDecision(steps=[JobStatus.CANCELED], error={"code": "Canceled", "message": "canceled before it started"})
        if status in (JobStatus.NOT_STARTED, JobStatus.QUEUED):
            return JobDecision(launch=True)
        return JobDecision()
    obs = observation or RunObservation(alive=False)
    decision = JobDecision(steps=observed_steps(status, obs.history))
    if obs.ended:
        decision.error = obs.error
        return decision
    if not obs.alive:
        # The launcher died without reporting an end (killed, machine reboot).
        decision.steps = [*decision.steps, JobStatus.FAILED]
        decision.error = {
            "code": "LauncherLost",
            "message": "the job's launcher stopped without reporting an end "
            "(killed or crashed); see system_logs/launcher.txt",
        }
        return decision
    if status == JobStatus.CANCEL_REQUESTED:
        decision.signal_cancel = True
    return decision
