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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


def place_fifo(config: ClusterConfig, queued: Sequence[QueuedJob], free_nodes: Sequence[str]) -> Placement:
    """Give idle nodes to queued jobs in FIFO order; `free_nodes` are taken from the front."""
    placement = Placement()
    free = list(free_nodes)
    for job in sorted(queued, key=lambda j: j.submitted_at):  # stable: ties keep input order
        reason = admission_error(config, job.instance_count)
        if reason:
            placement.fail.append((job.name, reason))
        elif not placement.waiting and len(free) >= job.instance_count:
            taken, free = free[: job.instance_count], free[job.instance_count :]
            placement.assign.append((job.name, tuple(taken)))
        else:
            placement.waiting.append(job)
    return placement


def waiting_reasons(
    config: ClusterConfig, waiting: Sequence[QueuedJob], idle: int, starting: int, busy: int
) -> dict[str, str]:
    """`cible job show` text for each waiting job: its queue position and the unmet condition."""
    return {job.name: waiting_reason(config, position, job.instance_count, idle=idle, starting=starting, busy=busy)
            for position, job in enumerate(waiting, start=1)}


def waiting_reason(config: ClusterConfig, position: int, instance_count: int, *, idle: int, starting: int,
                   busy: int) -> str:
    """Why the job at `position` of the cluster's queue waits. The head waits for nodes
    ("waiting for 2 nodes: 1 idle, 1 starting, max 2"); the others wait for the jobs ahead."""
    if position == 1:
        counts = f"{idle} idle, {starting} starting" + (f", {busy} busy" if busy else "")
        condition = f"waiting for {_nodes(instance_count)}: {counts}, max {config.max_instances}"
    else:
        ahead = position - 1
        condition = (
            f"waiting for the {ahead} job{'s' if ahead > 1 else ''} ahead of it (FIFO); "
            f"needs {_nodes(instance_count)}"
        )
    return f"position {position} in the queue of {config.name}: {condition}"


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"
