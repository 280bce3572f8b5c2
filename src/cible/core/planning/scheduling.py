"""The queue of one compute cluster: who may start, who can never start, why the rest wait.

Policy: strict FIFO with gang placement. Jobs are taken in `submitted_at` order;
a job needing N nodes starts only when N idle nodes are free, all at once. A job
that cannot start blocks every job behind it, even a smaller one that would fit
now. That is Azure's FIFO and it keeps gang jobs from starving: without runtime
estimates no backfill can promise not to delay the head. A job that could never
start (more nodes than max_instances) is failed instead of
blocking the queue forever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cible.core.models.records import ComputeStatus, DecidedQueue

if TYPE_CHECKING:
    from cible.core.planning.clusters import ClusterConfig, QueuedJob


def admission_error(config: ClusterConfig, instance_count: int) -> str | None:
    """Why a job could never run on this cluster, or None. Checked at submit and on every decide
    (an update can lower max_instances under a queued job)."""
    if config.deleting:
        return f"compute cluster {config.name} is being deleted and takes no new jobs"
    if instance_count < 1:
        return f"resources.instance_count must be at least 1, got {instance_count}"
    if instance_count > config.max_instances:
        return (
            f"the job needs {_nodes(instance_count)} (resources.instance_count) but compute cluster "
            f"{config.name} has max_instances {config.max_instances}; it could never start"
        )
    return None


@dataclass
class Placement:
    assign: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    fail: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[QueuedJob] = field(default_factory=list)  # FIFO order, head first
    isolated: str | None = None  # why the head waits though nodes are free: hardware another user holds


@dataclass(frozen=True)
class Holder:
    """A job on hardware a compute's nodes share, which an isolated size shares with no other user."""

    user: str | None  # None: a job the workspace token submitted, naming no user
    job: str


def isolation_refusal(holders: Sequence[Holder], user: str | None) -> str | None:
    """Why a job of `user` may not start beside `holders` (each another user's, on shared hardware)."""
    for holder in holders:
        if holder.user != user:
            whose = f"user '{holder.user}'" if holder.user else "the workspace token"
            return (f"isolated size: its hardware serves one user at a time, and job {holder.job} of {whose} "
                    "runs on it")
    return None


def place_fifo(config: ClusterConfig, queued: Sequence[QueuedJob], free_nodes: Sequence[str],
               holders: Sequence[Holder] | None = None) -> Placement:
    """Give idle nodes to queued jobs in FIFO order; `free_nodes` are taken from the front. `holders`
    (None: no one's hardware to keep apart): the jobs on hardware these nodes share, which an isolated
    size shares with no other user; another user's job waits for them, and for the jobs placed here."""
    placement = Placement()
    free = list(free_nodes)
    held = None if holders is None else list(holders)
    for job in sorted(queued, key=lambda j: j.submitted_at):  # stable: ties keep input order
        reason = admission_error(config, job.instance_count)
        refusal = isolation_refusal(held, job.user) if held and not placement.waiting else None
        if reason:
            placement.fail.append((job.name, reason))
        elif not placement.waiting and len(free) >= job.instance_count and refusal is None:
            taken, free = free[: job.instance_count], free[job.instance_count :]
            placement.assign.append((job.name, tuple(taken)))
            if held is not None:
                held.append(Holder(job.user, job.name))
        else:
            if not placement.waiting:  # the head: another user's jobs may be why it waits
                placement.isolated = refusal
            placement.waiting.append(job)
    return placement


def decided_queue(config: ClusterConfig, waiting: Sequence[QueuedJob], *, idle: int, starting: int, busy: int,
                  notes: Sequence[str] = (), more: bool = False) -> DecidedQueue:
    """The queue as stored after a pass: the waiting jobs head first and what the head waits for
    ("waiting for 2 nodes: 1 idle, 1 starting, max 2"); the others wait for the jobs ahead."""
    head = None
    if waiting:
        counts = f"{idle} idle, {starting} starting" + (f", {busy} busy" if busy else "")
        head = f"waiting for {_nodes(waiting[0].instance_count)}: {counts}, max {config.max_instances}"
    return DecidedQueue(jobs=[job.name for job in waiting], head=head, notes=list(notes), more=more)


def queued_reason(compute: str, status: ComputeStatus, job: str, instance_count: int, *,
                  pool_size: str | None = None, ahead: Callable[[], int] | None = None) -> str:
    """`cible job show`'s queue_reason of a job queued on a compute with nodes, from what the
    compute's last pass stored (`status.queue`, its start failures and quota wait): the job's
    position and the unmet condition, then the notes ("; Ray has no room …", "; nodes fail to
    start: …", "; quota: …"). A job queued since that pass is not in its queue yet: it is placed
    on the next (a submit wakes the reconciler). `pool_size`: the job's own serverless nodes. `ahead`
    counts the jobs queued ahead of it, for a job behind the head the pass stored (`queue.more`)."""
    queue = status.queue
    position = queue.jobs.index(job) + 1 if queue is not None and job in queue.jobs else None
    if position is None and queue is not None and queue.more and ahead is not None:
        position = max(ahead(), len(queue.jobs)) + 1
    return reason_at(compute, status, position, instance_count, pool_size=pool_size)


def reason_at(compute: str, status: ComputeStatus, position: int | None, instance_count: int, *,
              pool_size: str | None = None) -> str:
    """`queued_reason` of the job at `position` (1 = head) of the stored queue; None: not in it."""
    queue = status.queue
    if queue is not None and queue.reason_for_all:
        reason = queue.reason_for_all
    elif queue is not None and position is not None:
        if position == 1:
            condition = queue.head
        else:
            ahead = position - 1
            condition = (f"waiting for the {ahead} job{'s' if ahead > 1 else ''} ahead of it (FIFO); "
                         f"needs {_nodes(instance_count)}")
        reason = f"position {position} in the queue of {compute}: {condition}"
    elif pool_size is not None:  # not decided yet: its nodes are made with the job, none yet
        reason = serverless_wait(instance_count, pool_size, starting=0, ready=0)
    elif status.instance is not None and status.instance.power == "off":
        reason = instance_stopped(compute, "Stopped", status.instance.power_reason)  # no pass: no node yet
    else:
        reason = f"queued on {compute}: the scheduler places it on its next pass"
    if status.instance is not None and queue is not None and queue.reason_for_all:
        return reason  # a stopped instance: nothing else matters until it runs again
    notes = list(queue.notes) if queue is not None else []
    notes += [f"nodes fail to start: {error.message}" for error in status.provisioning_errors or []]
    if status.quota_wait:
        notes.append(status.quota_wait)
    return "; ".join([reason, *notes])


def instance_stopped(name: str, state: str, why: str | None) -> str:
    """Every queued job's reason on a stopped (or stopping) compute instance."""
    return (f"compute instance {name} is {state} ({why or 'stopped'}); "
            f"the job starts once it runs again: `cible compute start {name}`")


def serverless_wait(instance_count: int, size: str, *, starting: int, ready: int) -> str:
    """A serverless job's reason: its own nodes, no queue and no one ahead."""
    return f"waiting for its serverless nodes: {instance_count} x {size}, {starting} starting, {ready} ready"


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"


# -- a compute of slots (`local`) -------------------------------------------------------------
# One machine that runs up to a fixed number of jobs at once (the server's max_concurrent): no
# nodes to place or start, only slots. The same strict FIFO: the head takes the first free slot.


@dataclass(frozen=True)
class SlotQueue:
    start: tuple[str, ...] = ()  # the jobs that take a free slot now, FIFO order
    waiting: dict[str, str] = field(default_factory=dict)  # each job that waits -> why, FIFO order


def queue_for_slots(compute: str, slots: int, running: int, queued: Sequence[str]) -> SlotQueue:
    """Who of `queued` (FIFO order, head first) starts now on a compute of `slots` slots, `running`
    of them taken, and the wait reason of each of the others (`cible job show`)."""
    free = max(0, slots - running)
    start = tuple(queued[:free])
    taken = running + len(start)
    return SlotQueue(start=start, waiting={
        name: f"position {position} in the queue of {compute}: waiting for a free slot, {taken} of {slots} jobs running"
        for position, name in enumerate(queued[free:], start=1)})
