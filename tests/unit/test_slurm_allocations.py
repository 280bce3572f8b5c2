"""The pool of Slurm allocations kept warm between jobs (pure, on a fake clock): which job may take
an idle allocation, what its pilots are told, and when an idle one ends."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cible.backends.slurm.allocations import (
    JUST_RELEASED_S, RECORD_WITHIN_S, SEEN_WITHIN_S, TAKE_MARGIN_S, Allocation, Request, WarmPool,
)
from cible.backends.slurm.script import GRACE_S

REQUEST = Request(compute="hpc", owner="alice", identity="this machine", nodes=2, cpus=4, memory_mb=8192, gpus=0,
                  partition="batch", qos=None, account=None, constraint=None)
NODES = ["slurm-job-7-0", "slurm-job-7-1"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def pool_with_idle(clock: Clock, *, left: float = math.inf, keep_s: float = 60.0, heard: bool = True) -> WarmPool:
    """An allocation whose first job's run Completed; `heard`: each pilot heartbeated since."""
    pool = WarmPool(clock)
    pool.hold(Allocation("7", REQUEST, "spec", "alice", "/runs/a", NODES, keep_s=keep_s, submitted_at=clock.now,
                         job="first", attempt=1))
    assert pool.release("hpc", "7", "first", left)
    for node in NODES if heard else ():
        assert pool.next_for("hpc", "7", node, "first", None)[0] == "wait"
    return pool


def test_the_next_job_takes_an_idle_allocation_and_its_pilots_switch_to_it_once_recorded(clock: Clock):
    pool = pool_with_idle(clock)
    assert pool.next_for("hpc", "7", NODES[0], "first", None) == ("wait", 60.0)
    taken = pool.take(REQUEST, "spec", None, "second", 3)
    assert taken is not None and (taken.job, taken.attempt, taken.last_job) == ("second", 3, "first")
    # Its handle not recorded yet (the store names no successor): the pilots wait.
    assert pool.next_for("hpc", "7", NODES[0], "first", None) == ("wait", 1.0)
    assert pool.next_for("hpc", "7", NODES[0], "first", ("second", 3)) == ("switch", ("second", 3))
    assert pool.take(REQUEST, "spec", None, "third", 1) is None  # busy


def test_after_a_restart_the_store_still_switches_the_pilots(clock: Clock):
    pool = WarmPool(clock)  # a new server: it holds nothing
    assert pool.next_for("hpc", "7", NODES[0], "first", ("second", 3)) == ("switch", ("second", 3))
    assert pool.next_for("hpc", "7", NODES[0], "first", None) == ("stop", None)


def test_a_take_whose_handle_is_never_recorded_ends_the_allocation(clock: Clock):
    pool = pool_with_idle(clock)
    assert pool.take(REQUEST, "spec", None, "second", 3) is not None
    clock.now += RECORD_WITHIN_S + 1  # its record failed: the job is submitted anew
    assert pool.next_for("hpc", "7", NODES[0], "first", None) == ("stop", None)
    assert pool.get("hpc", "7") is None


def test_another_request_or_compute_spec_does_not_take_it(clock: Clock):
    pool = pool_with_idle(clock)
    for other in ({"owner": "bob"}, {"gpus": 1}, {"identity": "bob@login:22 /keys/bob"}):
        assert pool.take(dataclasses.replace(REQUEST, **other), "spec", None, "j", 1) is None
    assert pool.take(REQUEST, "the compute changed since", None, "j", 1) is None
    assert pool.take(REQUEST, "spec", None, "j", 1) is not None


def test_an_idle_allocation_ends_after_its_keep_and_its_pilots_stop(clock: Clock):
    pool = pool_with_idle(clock, keep_s=60)
    clock.now += 60 - TAKE_MARGIN_S + 0.1
    assert pool.take(REQUEST, "spec", None, "late", 1) is None  # too close to its end to be taken
    clock.now += TAKE_MARGIN_S
    assert pool.next_for("hpc", "7", NODES[0], "first", None) == ("stop", None)
    assert pool.get("hpc", "7") is None


def test_it_is_taken_only_once_every_pilot_was_heard_from_since_it_went_idle(clock: Clock):
    pool = pool_with_idle(clock, keep_s=600, heard=False)
    clock.now += JUST_RELEASED_S  # just released, the pilots' reports of the run's end stand for them
    assert pool.take(REQUEST, "spec", None, "j", 1) is None  # its pilots may be gone
    pool.next_for("hpc", "7", NODES[0], "first", None)
    assert pool.take(REQUEST, "spec", None, "j", 1) is None
    pool.next_for("hpc", "7", NODES[1], "first", None)
    clock.now += SEEN_WITHIN_S + 1  # and lately
    assert pool.take(REQUEST, "spec", None, "j", 1) is None
    for node in NODES:
        pool.next_for("hpc", "7", node, "first", None)
    assert pool.take(REQUEST, "spec", None, "j", 1) is not None


@pytest.mark.parametrize("left, elapsed, timeout, takes", [
    (math.inf, 0, None, True),  # no limit at all
    (math.inf, 0, 10**6, True),
    (3600.0, 0, None, False),  # a job without a limit would get Slurm's whole default in its own
    (3600.0, 0, 3600 - GRACE_S, True),
    (3600.0, 10, 3600 - GRACE_S, False),  # what is left goes down while it is idle
    (3600.0, 10, 3600 - GRACE_S - 10, True),
])
def test_a_job_takes_an_allocation_only_within_the_time_it_has_left(clock: Clock, left: float, elapsed: float,
                                                                    timeout: float | None, takes: bool):
    pool = pool_with_idle(clock, left=left)
    clock.now += elapsed
    for node in NODES:
        pool.next_for("hpc", "7", node, "first", None)
    assert (pool.take(REQUEST, "spec", timeout, "j", 1) is not None) is takes


def test_release_by_a_job_the_pool_does_not_hold_it_for_is_refused(clock: Clock):
    pool = pool_with_idle(clock)
    assert not pool.release("hpc", "7", "someone_else", math.inf)
    assert not pool.release("hpc", "8", "first", math.inf)
    assert pool.next_for("hpc", "8", NODES[0], "first", None) == ("stop", None)  # a server restarted since
