"""Job statuses (Azure's names) and the one transition table that governs them.

Nothing assigns a job's status directly: the server's job service calls
`check_transition` and writes a status-history row for every move.
"""

from __future__ import annotations

from enum import Enum

from cible.core.lifecycle.table import check_move


class JobStatus(str, Enum):
    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    PREPARING = "Preparing"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    CANCEL_REQUESTED = "CancelRequested"
    NOT_RESPONDING = "NotResponding"
    PAUSED = "Paused"


S = JobStatus
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELED})

# Every allowed move. Failed is reachable from any live state (a launcher can die
# anywhere); Canceled only after CancelRequested, except before anything ran. A job
# that started goes back to Queued only when a cluster loses its node (preempted, or
# lost under the requeue policy): it keeps its place in the FIFO and runs again.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.NOT_STARTED: frozenset({S.QUEUED, S.CANCELED, S.FAILED}),
    S.QUEUED: frozenset({S.PREPARING, S.STARTING, S.CANCEL_REQUESTED, S.CANCELED, S.FAILED}),
    S.PREPARING: frozenset({S.QUEUED, S.STARTING, S.RUNNING, S.CANCEL_REQUESTED, S.FAILED, S.NOT_RESPONDING}),
    S.STARTING: frozenset({S.QUEUED, S.RUNNING, S.CANCEL_REQUESTED, S.FAILED, S.NOT_RESPONDING}),
    S.RUNNING: frozenset({S.QUEUED, S.FINALIZING, S.CANCEL_REQUESTED, S.FAILED, S.NOT_RESPONDING, S.PAUSED}),
    S.PAUSED: frozenset({S.RUNNING, S.CANCEL_REQUESTED, S.FAILED}),
    S.NOT_RESPONDING: frozenset({S.QUEUED, S.RUNNING, S.FINALIZING, S.CANCEL_REQUESTED, S.FAILED}),
    S.FINALIZING: frozenset({S.COMPLETED, S.FAILED, S.CANCELED, S.CANCEL_REQUESTED}),
    # A job may finish on its own before the cancel reaches it.
    S.CANCEL_REQUESTED: frozenset({S.CANCELED, S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}

# Statuses reported by a launcher, in the order a run passes through them.
RUN_ORDER = (S.PREPARING, S.STARTING, S.RUNNING, S.FINALIZING)


def is_terminal(status: JobStatus | str) -> bool:
    return JobStatus(status) in TERMINAL


def can_transition(current: JobStatus | str, target: JobStatus | str) -> bool:
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]


def check_transition(current: JobStatus | str, target: JobStatus | str) -> None:
    check_move(TRANSITIONS, JobStatus(current), JobStatus(target), "job status")


def observed_steps(current: JobStatus | str, reported: list[str]) -> list[JobStatus]:
    """The moves that bring a job from `current` up to what its launcher reported.

    `reported` is the launcher's own history (oldest first). Steps the job has
    already passed, or that the table no longer allows (a launcher still saying
    Running after a cancel was requested), are skipped, so replaying a history
    after a server restart is idempotent.
    """
    steps: list[JobStatus] = []
    state = JobStatus(current)
    for name in reported:
        target = JobStatus(name)
        if target == state or state in TERMINAL:
            continue
        if can_transition(state, target):
            steps.append(target)
            state = target
    return steps


# How a job whose work is child jobs (a sweep, a pipeline) reaches an end from wherever it is: the
# same table as any job, walked through the statuses a run passes on the way.
_PATH_TO = {
    JobStatus.RUNNING: ("Starting", "Running"),
    JobStatus.COMPLETED: ("Starting", "Running", "Finalizing", "Completed"),
    JobStatus.FAILED: ("Failed",),
    JobStatus.CANCELED: ("CancelRequested", "Canceled"),
}


def path_to(current: JobStatus | str, target: JobStatus | str) -> list[JobStatus]:
    """The moves from `current` to `target` (Running, Completed, Failed or Canceled); [] when it is there."""
    return observed_steps(current, list(_PATH_TO[JobStatus(target)]))
