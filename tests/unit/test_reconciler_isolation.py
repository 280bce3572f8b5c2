"""One bad job does not stop the others: a job whose handling raises (planted straight into the
database, bypassing the API's name checks) backs off on its own, is failed with the reason after a
few tries, and logs its traceback once, while every other job goes on. The reconciler runs against
a real store with a runner that makes run folders as the local one does (so a NUL byte or a
300-character name fails with the OS's own error) and runs nothing; passes are made by hand."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from cible.server.reconcilers.failures import MAX_MESSAGE
from cible.server.reconcilers.jobs import FAIL_AFTER, JobReconciler
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, JobStatusRow
from cible.testing import FakeJobRunner, FrozenClock

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
NUL_NAME = "bad\0job"
LONG_NAME = "j" * 300


@pytest.fixture
def runner(tmp_path: Path) -> FakeJobRunner:
    """Makes each job's run folder at submit, as LocalProcessRunner does (so a NUL byte or a
    300-character name fails with the OS's own error), and starts nothing."""
    return FakeJobRunner(tmp_path / "runs")


def plant(store: Store, name: str, *, status: str = "Queued", age_s: int = 0,
          launched_by: FakeJobRunner | None = None) -> None:
    """A job row written straight to the store, as if an older API had let it through; `launched_by`:
    launched, with the handle that runner makes for it."""
    created = NOW - timedelta(seconds=age_s)
    run = {"plan": {"job_name": name}, **({"handle": launched_by.handle(name)} if launched_by else {})}
    with store.session() as session:
        session.add(JobRow(name=name, display_name=name[:50], experiment_name="exp", status=status, target="local",
                           compute="local", spec={}, warnings=[], run=run, created_at=created, updated_at=created))


def job(store: Store, name: str) -> JobRow:
    with store.session() as session:
        row = session.get(JobRow, name)
        session.expunge(row)
        return row


def history(store: Store, name: str) -> list[tuple[str, str | None]]:
    with store.session() as session:
        rows = session.scalars(select(JobStatusRow).where(JobStatusRow.job_name == name).order_by(JobStatusRow.id))
        return [(r.to_status, r.reason) for r in rows]


def tracebacks(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(1 for r in caplog.records if r.exc_info and repr(name) in r.getMessage())


def test_jobs_whose_launch_raises_fail_alone_and_the_others_run(store: Store, runner: FakeJobRunner,
                                                                caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    clock = FrozenClock(NOW)
    plant(store, NUL_NAME, age_s=4)  # the bad ones first in the FIFO
    plant(store, LONG_NAME, age_s=3)
    plant(store, "good-1", age_s=2)
    plant(store, "good-2", age_s=1)
    reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=4)

    reconciler.reconcile_once()
    assert runner.submits == [NUL_NAME, LONG_NAME, "good-1", "good-2"]
    assert job(store, "good-1").run.handle and job(store, "good-2").run.handle
    for _ in range(5):  # passes come every 50 ms while jobs live: the bad ones wait out their backoff
        reconciler.reconcile_once()
    assert runner.submits.count(NUL_NAME) == 1 and runner.submits.count(LONG_NAME) == 1

    runner.reports = {"good-1": ["Preparing", "Running"], "good-2": ["Preparing", "Running", "Finalizing", "Completed"]}
    for step_s in (1, 2):  # backoff: 1 s, then 2 s
        clock.advance(step_s)
        reconciler.reconcile_once()
    assert runner.submits.count(NUL_NAME) == FAIL_AFTER
    assert (job(store, "good-1").status, job(store, "good-2").status) == ("Running", "Completed")

    for name, needle in ((NUL_NAME, "embedded null byte"), (LONG_NAME, "File name too long")):
        row = job(store, name)
        assert row.status == "Failed", name
        assert row.error.code == "ReconcileError"
        assert needle in row.error.message and f"{FAIL_AFTER} tries" in row.error.message
        assert "\0" not in row.error.message and len(row.error.message) < MAX_MESSAGE + 100
        assert history(store, name)[-1] == ("Failed", row.error.message)  # through set_status
        assert tracebacks(caplog, name) == 1  # once, however many tries
    reconciler.reconcile_once()  # Failed: out of the live set, never tried again
    assert runner.submits.count(NUL_NAME) == FAIL_AFTER


def test_a_job_whose_run_cannot_be_followed_is_failed_and_its_launcher_told_to_stop(store: Store,
                                                                                   runner: FakeJobRunner):
    clock = FrozenClock(NOW)
    plant(store, "unreadable", status="Running", launched_by=runner, age_s=2)
    plant(store, "fine", status="Running", launched_by=runner, age_s=1)
    runner.broken_poll = {"unreadable"}
    reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=4)
    for step_s in (0, 1, 2):
        clock.advance(step_s)
        runner.reports["fine"] = ["Preparing", "Running", "Finalizing", "Completed"] if step_s == 2 else []
        reconciler.reconcile_once()
        assert job(store, "fine").status == ("Completed" if step_s == 2 else "Running")
    row = job(store, "unreadable")
    assert row.status == "Failed" and "cannot read the state of unreadable" in row.error.message
    assert runner.canceled == ["unreadable"]


def test_a_job_whose_failure_cannot_be_recorded_is_left_alone_backing_off(store: Store, runner: FakeJobRunner,
                                                                         caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    clock = FrozenClock(NOW)
    plant(store, "corrupt", status="NoSuchStatus", age_s=2)  # no transition table knows it
    plant(store, "fine", age_s=1)
    reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=4)
    tries = []
    for _ in range(40):  # 40 s of passes, 10 a second
        for _ in range(10):
            reconciler.reconcile_once()
            clock.advance(0.1)
        tries.append(reconciler.troubles.get("corrupt").count)
    assert job(store, "fine").run.handle
    assert job(store, "corrupt").status == "NoSuchStatus"
    assert tries[-1] <= 7  # tried at 0, 1, 3, 7, 15, 31 s (backing off), not 400 times
    assert tracebacks(caplog, "corrupt") == 1


def test_a_launch_that_raised_holds_no_slot_and_keeps_its_count_while_it_waits_for_one(store: Store,
                                                                                        runner: FakeJobRunner):
    clock = FrozenClock(NOW)
    plant(store, NUL_NAME, age_s=3)
    plant(store, "good-1", age_s=2)
    plant(store, "good-2", age_s=1)
    reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=1)
    reconciler.reconcile_once()
    assert runner.submits == [NUL_NAME, "good-1"]  # the one slot went to the next in line
    assert "waiting for a free slot" in job(store, "good-2").run.queue_reason
    clock.advance(1)
    reconciler.reconcile_once()  # the slot is taken: the bad one waits, its failure not forgotten
    assert reconciler.troubles.get(NUL_NAME).count == 1
    done = ["Preparing", "Running", "Finalizing", "Completed"]
    runner.reports["good-1"] = done
    for step_s in (0, 1):  # good-1 ends; the freed slot: the bad one tried (and failed) again, good-2 next
        clock.advance(step_s)
        reconciler.reconcile_once()
    assert reconciler.troubles.get(NUL_NAME).count == 2 and job(store, "good-2").run.handle
    runner.reports["good-2"] = done
    for step_s in (2, 0):
        clock.advance(step_s)
        reconciler.reconcile_once()
    assert job(store, "good-2").status == "Completed" and job(store, NUL_NAME).status == "Failed"


def test_a_pass_goes_on_without_the_jobs_in_backoff_and_says_it_is_idle(store: Store, runner: FakeJobRunner):
    clock = FrozenClock(NOW)
    plant(store, NUL_NAME)
    reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=1)
    assert reconciler.reconcile_once() is True  # tried it
    assert reconciler.reconcile_once() is False  # nothing to do until its backoff ends: the slow poll


def test_a_report_that_decide_cannot_read_is_its_jobs_failure_not_the_passs(store: Store, runner: FakeJobRunner):
    clock = FrozenClock(NOW)
    plant(store, "garbled", status="Running", launched_by=runner, age_s=2)
    plant(store, "fine", status="Running", launched_by=runner, age_s=1)
    runner.reports = {"garbled": ["Preparing", "Exploded"], "fine": ["Preparing", "Running", "Finalizing", "Completed"]}
    reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=4)
    for step_s in (0, 1, 2):
        clock.advance(step_s)
        reconciler.reconcile_once()
        assert job(store, "fine").status == "Completed"
    row = job(store, "garbled")
    assert row.status == "Failed" and "'Exploded' is not a valid JobStatus" in row.error.message
