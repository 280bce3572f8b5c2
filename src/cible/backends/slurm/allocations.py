"""Slurm allocations kept warm between jobs (pure: a clock is given).

A Slurm job's pilots need not end with their run: on a compute whose `cible.keep_allocation_s` is
above 0 they stay in the allocation for that long, heartbeating, and the next job of the same user
and the same request (nodes, CPUs, memory, GPUs, partition, QOS, account, constraint, and a time
limit that fits in what the allocation has left) runs in it without a new `sbatch`: the server
hands the pilots that job's token and they take its run as any agent takes one. A batch job waits
for Slurm's scheduler (about a second on an idle cluster, much more on a busy one); a warm
allocation starts the next job in the time of a heartbeat.

Only a run that Completed gives its allocation back: after a failure or a cancel the Slurm job is
ended (its nodes may be left in any state). The server decides when an idle allocation ends
(`next_for` answers `stop` once it has been idle `keep_s`); the pilots also end on their own a
little after that, should the server be gone. The pool is the server process's memory: after a
restart the pilots of an idle allocation are told to stop, and the next job is submitted anew.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cible.backends.slurm.script import GRACE_S

TAKE_MARGIN_S = 5.0  # an allocation this close to its idle end is not taken: its pilots may be leaving
SEEN_WITHIN_S = 20.0  # an allocation is taken only while every pilot of it heartbeated this recently
# ... or within this long of its release: every pilot reported the run's end just before (a job
# submitted at once need not wait for their next heartbeats).
JUST_RELEASED_S = 3.0
# A job that took an allocation and whose handle was not recorded within this long (its record
# failed: it is submitted anew) leaves it: the allocation ends.
RECORD_WITHIN_S = 30.0


@dataclass(frozen=True)
class Request:
    """What a Slurm job asks for, its time limit aside: two jobs of the same Request (and compute as
    it is now) can run in the same allocation, one after the other. `identity` is whom Slurm runs
    it as (the login and key, or this machine's user)."""

    compute: str
    owner: str
    identity: str
    nodes: int
    cpus: int
    memory_mb: int | None
    gpus: int
    partition: str | None
    qos: str | None
    account: str | None
    constraint: str | None


@dataclass
class Allocation:
    """One Slurm job whose pilots serve cible jobs one after the other."""

    slurm_job_id: str
    request: Request
    spec: Any  # the compute's spec at submit: an allocation of a compute changed since is not reused
    user: str
    run_dir: str
    nodes: list[str]
    keep_s: float
    submitted_at: float
    job: str | None  # the job it serves now (None: idle)
    attempt: int
    # What is left of the allocation's time limit when it went idle (math.inf: none), read from
    # Slurm then; None until then (it is not reused without it).
    time_left_s: float | None = None
    idle_since: float | None = None
    taken_at: float | None = None  # when `job` took it (its handle being recorded)
    last_job: str | None = None  # the job whose run last Completed in it
    seen: dict[str, float] = field(default_factory=dict)  # pilot node id -> its last heartbeat

    @property
    def key(self) -> tuple[str, str]:
        return (self.request.compute, self.slurm_job_id)


class WarmPool:
    """The allocations this server holds. Which job a pilot switches to is the store's to say (the
    recorded handle that names the allocation after the pilot's job): the pool decides which job
    may take an idle allocation, and when an idle one ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._allocations: dict[tuple[str, str], Allocation] = {}
        self._lock = threading.Lock()

    def hold(self, allocation: Allocation) -> None:
        """A new Slurm job, serving its first job."""
        with self._lock:
            self._allocations[allocation.key] = allocation

    def get(self, compute: str, slurm_job_id: str) -> Allocation | None:
        with self._lock:
            return self._allocations.get((compute, slurm_job_id))

    def release(self, compute: str, slurm_job_id: str, job: str, time_left_s: float) -> bool:
        """`job`'s run Completed: its allocation goes idle, to be kept `keep_s`. False when the pool
        does not hold it for that job (a server restarted since: the pilots are told to stop)."""
        with self._lock:
            allocation = self._allocations.get((compute, slurm_job_id))
            if allocation is None or allocation.job != job:
                return False
            allocation.job, allocation.last_job, allocation.taken_at = None, job, None
            allocation.idle_since, allocation.time_left_s = self.clock(), time_left_s
            return True

    def take(self, request: Request, spec: Any, timeout_s: float | None, job: str, attempt: int) -> Allocation | None:
        """An idle allocation for `job`'s run, if one fits: now `job`'s."""
        now = self.clock()
        with self._lock:
            for key, allocation in list(self._allocations.items()):
                if allocation.job is None and _idle_for(allocation, now) < -SEEN_WITHIN_S:
                    del self._allocations[key]  # its pilots stopped long ago (or died): forgotten
            for allocation in self._allocations.values():
                if allocation.job is None and allocation.request == request and allocation.spec == spec \
                        and _lasts(allocation, now) and _fits(allocation, timeout_s, now):
                    allocation.job, allocation.attempt, allocation.taken_at = job, attempt, now
                    allocation.idle_since = None
                    return allocation
        return None

    def idle(self, compute: str) -> list[Allocation]:
        return [a for a in self.all_idle() if a.request.compute == compute]

    def all_idle(self) -> list[Allocation]:
        with self._lock:
            return [a for a in self._allocations.values() if a.job is None]

    def drop(self, compute: str, slurm_job_id: str) -> Allocation | None:
        with self._lock:
            return self._allocations.pop((compute, slurm_job_id), None)

    def next_for(self, compute: str, slurm_job_id: str, node_id: str, done_job: str,
                 successor: tuple[str, int] | None) -> tuple[str, Any]:
        """What a pilot of the allocation whose run of `done_job` ended should do: ("switch", (job,
        attempt)) to `successor` (the job whose recorded handle took the allocation after
        `done_job`'s), ("wait", seconds) or ("stop", None)."""
        now = self.clock()
        with self._lock:
            allocation = self._allocations.get((compute, slurm_job_id))
            if successor is not None:
                if allocation is not None:
                    allocation.job, allocation.attempt = successor
                return "switch", successor
            if allocation is None:
                return "stop", None
            allocation.seen[node_id] = now
            if allocation.job == done_job:  # its end is not read yet (the reconciler's next pass)
                return "wait", 1.0
            if allocation.job is not None:  # taken; its handle is being recorded
                if now - (allocation.taken_at or now) < RECORD_WITHIN_S:
                    return "wait", 1.0
            elif (left := _idle_for(allocation, now)) > 0:
                return "wait", left
            del self._allocations[allocation.key]
            return "stop", None


def _idle_for(allocation: Allocation, now: float) -> float:
    """How much longer an idle allocation is kept (negative: past its keep)."""
    return (allocation.idle_since or now) + allocation.keep_s - now


def _lasts(allocation: Allocation, now: float) -> bool:
    """Still idle for a while, and every pilot of it heard from since it went idle, lately."""
    if _idle_for(allocation, now) < TAKE_MARGIN_S:
        return False
    since = allocation.idle_since or now
    if now - since < JUST_RELEASED_S:
        return True
    return all(since <= allocation.seen.get(node, -math.inf) and now - allocation.seen[node] < SEEN_WITHIN_S
               for node in allocation.nodes)


def _fits(allocation: Allocation, timeout_s: float | None, now: float) -> bool:
    """Whether a job limited to `timeout_s` (None: no limit of its own) can run in what the allocation
    has left: a job without a limit only in an allocation without one (in its own, it would get the
    partition's whole default); a job with one in an allocation that outlasts it by its grace."""
    left = allocation.time_left_s
    if left is None:
        return False
    if left == math.inf:
        return True
    left -= now - (allocation.idle_since or now)
    return timeout_s is not None and timeout_s + GRACE_S <= left
