"""The job reconciler's pass against writers that change a job between its load and its apply
(the API, the cluster reconciler): a decision made on the older job is not written (the row's
version says it changed) and the next pass decides again; a launch is recorded whatever changed,
so it is never lost, and never made twice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cible.core.lifecycle.jobs import JobStatus
from cible.core.models.records import LocalHandle
from cible.server.reconcilers.jobs import JobReconciler
from cible.server.services.jobs import set_status
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, JobStatusRow
from cible.testing import FakeJobRunner, FrozenClock

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
DONE = ["Preparing", "Running", "Finalizing", "Completed"]


def submit(store: Store, name: str) -> None:
    with store.session() as session:
        session.add(JobRow(name=name, display_name=name, experiment_name="exp", status="Queued", target="local",
                           compute="local", spec={}, warnings=[], run={"plan": {"job_name": name}},
                           created_at=NOW, updated_at=NOW))


def change(store: Store, name: str, fn: Callable[[Any, JobRow], None]) -> None:
    with store.session() as session:
        fn(session, session.get(JobRow, name))


def row(store: Store, name: str) -> JobRow:
    with store.session() as session:
        found = session.get(JobRow, name)
        session.expunge(found)
        return found


def statuses(store: Store, name: str) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(JobStatusRow.to_status).where(JobStatusRow.job_name == name)
                                    .order_by(JobStatusRow.id)))


def test_a_report_decided_on_a_job_changed_since_its_load_is_written_by_the_next_pass(store: Store, tmp_path: Path):
    runner = FakeJobRunner(tmp_path / "runs")  # keyed by job name: a second submit, the first handle
    reconciler = JobReconciler(store, {"local": runner}, FrozenClock(NOW), max_concurrent=2)
    submit(store, "j")
    reconciler.reconcile_once()
    assert isinstance(row(store, "j").run.handle, LocalHandle)

    runner.reports["j"] = DONE
    tagged = []

    def tag_once() -> None:  # `job update` lands while the pass polls: the job's version moves
        if not tagged:
            tagged.append(True)
            change(store, "j", lambda session, job: setattr(job, "spec", {"tags": {"k": "v"}}))
    runner.during = tag_once
    reconciler.reconcile_once()
    assert row(store, "j").status == "Queued"  # decided on the older job: nothing written
    assert reconciler.troubles.get("j") is None  # not a failure of the job
    reconciler.reconcile_once()
    job = row(store, "j")
    assert job.status == "Completed" and job.spec == {"tags": {"k": "v"}}  # neither write lost
    assert statuses(store, "j") == DONE  # each step once


def test_a_launch_is_recorded_when_a_cancel_lands_during_it_and_the_cancel_reaches_its_launcher(
        store: Store, tmp_path: Path):
    runner = FakeJobRunner(tmp_path / "runs")
    reconciler = JobReconciler(store, {"local": runner}, FrozenClock(NOW), max_concurrent=2)
    submit(store, "j")
    runner.during = lambda: change(store, "j", lambda session, job: set_status(
        session, job, JobStatus.CANCEL_REQUESTED, NOW, reason="cancel requested by user"))
    reconciler.reconcile_once()
    runner.during = lambda: None
    job = row(store, "j")
    assert job.status == "CancelRequested" and isinstance(job.run.handle, LocalHandle)  # not lost
    runner.reports["j"] = ["Preparing", "Running"]
    reconciler.reconcile_once()
    assert runner.canceled == ["j"] and runner.starts == ["j"]
    runner.reports["j"] = ["Preparing", "Running", "Canceled"]
    reconciler.reconcile_once()
    assert row(store, "j").status == "Canceled" and runner.starts == ["j"]


def test_a_launch_whose_handle_could_not_be_recorded_is_found_again_not_made_twice(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runner = FakeJobRunner(tmp_path / "runs")
    reconciler = JobReconciler(store, {"local": runner}, FrozenClock(NOW), max_concurrent=2)
    submit(store, "j")
    transact = store.transact

    def lose_every_race(fn, **kwargs):  # noqa: ANN001, ANN003, ANN202
        from cible.core.errors import ConcurrentUpdateError
        raise ConcurrentUpdateError("the resource changed while this request was handled")
    monkeypatch.setattr(store, "transact", lose_every_race)
    reconciler.reconcile_once()
    assert runner.starts == ["j"] and row(store, "j").run.handle is None
    monkeypatch.setattr(store, "transact", transact)
    reconciler.troubles.succeeded("j")  # its backoff over
    reconciler.reconcile_once()
    assert runner.starts == ["j"] and isinstance(row(store, "j").run.handle, LocalHandle)


def test_a_job_whose_compute_was_made_after_the_pass_read_the_computes_is_left_to_the_cluster_reconciler(
        store: Store, tmp_path: Path):
    # A serverless job and its pool are stored in one transaction, which may land between the pass's read of
    # the computes and its read of the jobs: the job must not be failed as one whose compute no longer exists.
    reads = []

    def cluster_names() -> set[str]:
        reads.append(True)
        return set() if len(reads) == 1 else {"serverless:j"}

    reconciler = JobReconciler(store, {"local": FakeJobRunner(tmp_path / "runs")}, FrozenClock(NOW), max_concurrent=1,
                               cluster_runner=FakeJobRunner(tmp_path / "cluster"), cluster_names=cluster_names)
    submit(store, "j")
    change(store, "j", lambda session, job: setattr(job, "target", "serverless:j"))
    reconciler.reconcile_once()
    assert row(store, "j").status == "Queued" and len(reads) == 2
