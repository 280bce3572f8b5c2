"""Jobs on a compute whose engine queues them itself (Slurm, RunsOn ENGINE): handed over at once
with no slot counted, Slurm's wait reason stored while it differs, and an engine that cannot be
reached never fails a job (it waits, or keeps its status). The pure decisions, then the job
reconciler against a real store with a fake engine runner and a frozen clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from cible.backends.base.contract import EngineUnavailable
from cible.core.lifecycle.jobs import JobStatus
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import RunRecord, SlurmHandle
from cible.core.planning.jobs import ENGINE, SLOTS, LiveJob, decide_jobs
from cible.server.reconcilers.jobs import FAIL_AFTER, JobReconciler
from cible.server.store.db import Store
from cible.server.store.rows import JobRow
from cible.testing import FakeJobRunner, FrozenClock

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def slurm_handle(job: str, slurm_id: str = "4242") -> SlurmHandle:
    return SlurmHandle(job_name=job, compute="hpc", attempt=1, user="alice", run_dir=f"/h/runs/{job}.1.abc",
                       master_port=23456, slurm_job_id=slurm_id, nodes=[f"slurm-job-{slurm_id}-0"])


def live(name: str, *, status: str = "Queued", runs_on: str = ENGINE, target: str = "hpc",
         launched: bool = False, stored_reason: str | None = None,
         observation: RunObservation | None = None) -> LiveJob:
    run = RunRecord(plan={"job_name": name}, handle=slurm_handle(name) if launched else None,
                    queue_reason=stored_reason)
    return LiveJob(name=name, status=JobStatus(status), target=target, run=run, runs_on=runs_on,
                   observation=observation)


# -- the pure decisions ---------------------------------------------------------------------------

@pytest.mark.parametrize("slots, running", [(0, {}), (1, {"hpc": 5, "local": 1}), (4, {})])
def test_engine_jobs_are_launched_at_once_whatever_the_slots(slots, running):
    jobs = [live(f"e{i}") for i in range(3)]
    decisions = decide_jobs(jobs, slots=slots, running=running)
    assert all(decisions[f"e{i}"].launch and not decisions[f"e{i}"].waits for i in range(3))
    assert all(decisions[f"e{i}"].queue_reason is None for i in range(3))


def test_engine_jobs_do_not_take_the_slots_of_local_jobs():
    jobs = [live("e1"), live("l1", runs_on=SLOTS, target="local"), live("e2"),
            live("l2", runs_on=SLOTS, target="local")]
    decisions = decide_jobs(jobs, slots=1, running={})
    assert decisions["e1"].launch and decisions["e2"].launch
    assert decisions["l1"].launch and not decisions["l1"].waits
    assert not decisions["l2"].launch and decisions["l2"].waits and decisions["l2"].queue_reason


def test_an_engine_job_canceled_before_it_was_handed_over_is_canceled():
    decision = decide_jobs([live("e1", status="CancelRequested")], slots=0, running={})["e1"]
    assert not decision.launch and decision.steps == [JobStatus.CANCELED]


def test_slurms_wait_reason_is_stored_when_it_is_new():
    seen = RunObservation(history=["Queued"], queue_reason="Slurm job 4242 is pending: waiting for free nodes")
    decision = decide_jobs([live("e1", launched=True, observation=seen)], slots=0, running={})["e1"]
    assert decision.queue_reason == seen.queue_reason
    assert decision.steps == [] and not decision.launch


def test_slurms_wait_reason_is_stored_when_it_changed():
    seen = RunObservation(history=["Queued"], queue_reason="Slurm job 4242 is pending: jobs of higher priority go first")
    decision = decide_jobs([live("e1", launched=True, stored_reason="Slurm job 4242 is pending: waiting for free nodes",
                                 observation=seen)], slots=0, running={})["e1"]
    assert decision.queue_reason == seen.queue_reason


def test_the_same_wait_reason_is_not_written_again():
    seen = RunObservation(history=["Queued"], queue_reason="why")
    decision = decide_jobs([live("e1", launched=True, stored_reason="why", observation=seen)], slots=0, running={})["e1"]
    assert decision.queue_reason is None


def test_the_stored_reason_is_cleared_once_the_job_no_longer_waits():
    seen = RunObservation(history=["Preparing"])
    decision = decide_jobs([live("e1", launched=True, stored_reason="why", observation=seen)], slots=0, running={})["e1"]
    assert decision.queue_reason == ""
    assert decision.steps == [JobStatus.PREPARING]


def test_no_reason_stored_nor_seen_writes_none():
    seen = RunObservation(history=["Preparing", "Running"])
    decision = decide_jobs([live("e1", status="Preparing", launched=True, observation=seen)], slots=0,
                           running={})["e1"]
    assert decision.queue_reason is None and decision.steps == [JobStatus.RUNNING]


# -- the reconciler -------------------------------------------------------------------------------

class EngineRunner:
    """A Slurm runner whose engine is up or not (`down`: the message its calls raise with)."""

    name = "slurm"
    places_jobs = False

    def __init__(self) -> None:
        self.down: str | None = None
        self.submits: list[str] = []
        self.polls: list[str] = []
        self.canceled: list[str] = []
        self.seen: dict[str, RunObservation] = {}

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        self.submits.append(job_name)
        if self.down:
            raise EngineUnavailable(self.down)
        return slurm_handle(job_name).model_dump(mode="json")

    def poll(self, handle: dict[str, Any]) -> RunObservation:
        self.polls.append(handle["job_name"])
        if self.down:
            raise EngineUnavailable(self.down)
        return self.seen.get(handle["job_name"], RunObservation(history=["Queued"]))

    def cancel(self, handle: dict[str, Any]) -> None:
        self.canceled.append(handle["job_name"])

    def log_path(self, handle: dict[str, Any]) -> None:
        return None


def plant(store: Store, name: str, *, status: str = "Queued", target: str = "hpc", age_s: int = 0,
          handle: SlurmHandle | None = None) -> None:
    created = NOW - timedelta(seconds=age_s)
    run = {"plan": {"job_name": name, "compute": target}, **({"handle": handle.model_dump(mode="json")} if handle else {})}
    with store.session() as session:
        session.add(JobRow(name=name, display_name=name, experiment_name="exp", status=status, target=target,
                           compute=target, spec={}, warnings=[], run=run, created_at=created, updated_at=created))


def job(store: Store, name: str) -> JobRow:
    with store.session() as session:
        row = session.get(JobRow, name)
        session.expunge(row)
        return row


def reconciler(store: Store, engine: EngineRunner, clock: FrozenClock, tmp_path) -> JobReconciler:
    return JobReconciler(store, {"local": FakeJobRunner(tmp_path / "runs")}, clock, max_concurrent=1,
                         engine_runner=engine, engine_names=lambda: {"hpc"})


DOWN = "cannot reach Slurm: login:22: connection refused"


def test_a_submit_the_engine_cannot_take_leaves_the_job_queued_saying_why_and_is_tried_again(
        store: Store, tmp_path):
    clock = FrozenClock(NOW)
    engine = EngineRunner()
    engine.down = DOWN
    plant(store, "e1")
    loop = reconciler(store, engine, clock, tmp_path)
    loop.reconcile_once()
    assert engine.submits == ["e1"]
    row = job(store, "e1")
    assert row.status == "Queued" and row.run.queue_reason == DOWN and row.run.handle is None
    loop.reconcile_once()  # backing off: not tried again at once
    assert engine.submits == ["e1"]
    for _ in range(FAIL_AFTER + 4):  # far more tries than would fail any other job
        clock.advance(61)  # the back-off is at most a minute
        loop.reconcile_once()
    assert len(engine.submits) == FAIL_AFTER + 5
    row = job(store, "e1")
    assert row.status == "Queued" and row.error is None and row.run.queue_reason == DOWN

    engine.down = None  # the login host answers again: handed over, the reason cleared
    clock.advance(61)
    loop.reconcile_once()
    row = job(store, "e1")
    assert row.run.handle is not None and row.run.handle.slurm_job_id == "4242"
    assert row.run.queue_reason is None and row.status == "Queued"


def test_the_back_off_grows(store: Store, tmp_path):
    clock = FrozenClock(NOW)
    engine = EngineRunner()
    engine.down = DOWN
    plant(store, "e1")
    loop = reconciler(store, engine, clock, tmp_path)
    for _ in range(200):  # 100 s of passes, 2 a second
        loop.reconcile_once()
        clock.advance(0.5)
    assert 5 <= len(engine.submits) <= 9  # at 0, 1, 3, 7, 15, 31, 63 s or so: not 200 times
    assert job(store, "e1").status == "Queued"


def test_a_poll_the_engine_cannot_answer_keeps_the_jobs_status(store: Store, tmp_path):
    clock = FrozenClock(NOW)
    engine = EngineRunner()
    plant(store, "e1", status="Running", handle=slurm_handle("e1"))
    loop = reconciler(store, engine, clock, tmp_path)
    engine.seen["e1"] = RunObservation(history=["Preparing", "Running"])
    loop.reconcile_once()
    engine.down = "Slurm's controller does not answer this machine: Unable to contact slurm controller"
    for _ in range(FAIL_AFTER + 4):
        clock.advance(61)
        loop.reconcile_once()
    assert len(engine.polls) == FAIL_AFTER + 5
    row = job(store, "e1")
    assert row.status == "Running" and row.error is None
    assert engine.canceled == []

    engine.down = None
    engine.seen["e1"] = RunObservation(history=["Preparing", "Running", "Finalizing", "Completed"], alive=False)
    clock.advance(61)
    loop.reconcile_once()
    assert job(store, "e1").status == "Completed"


def test_slurms_wait_reason_is_stored_then_cleared_once_it_starts(store: Store, tmp_path):
    clock = FrozenClock(NOW)
    engine = EngineRunner()
    plant(store, "e1")
    loop = reconciler(store, engine, clock, tmp_path)
    loop.reconcile_once()  # handed over
    assert engine.submits == ["e1"] and job(store, "e1").run.handle is not None
    waiting = "Slurm job 4242 is pending: waiting for free nodes (Resources)"
    engine.seen["e1"] = RunObservation(history=["Queued"], queue_reason=waiting)
    loop.reconcile_once()
    row = job(store, "e1")
    assert row.status == "Queued" and row.run.queue_reason == waiting
    version = row.version
    loop.reconcile_once()  # the same reason: nothing written
    assert job(store, "e1").version == version
    engine.seen["e1"] = RunObservation(history=["Preparing"])
    loop.reconcile_once()
    row = job(store, "e1")
    assert row.status == "Preparing" and row.run.queue_reason is None
    assert engine.submits == ["e1"]  # handed over once


def test_many_engine_jobs_are_handed_over_in_one_pass_beside_a_full_local_slot(store: Store, tmp_path):
    clock = FrozenClock(NOW)
    engine = EngineRunner()
    for i in range(4):
        plant(store, f"e{i}", age_s=10 - i)
    plant(store, "l0", target="local", age_s=3)
    plant(store, "l1", target="local", age_s=2)
    loop = reconciler(store, engine, clock, tmp_path)
    loop.reconcile_once()
    assert engine.submits == ["e0", "e1", "e2", "e3"]
    assert job(store, "l0").run.handle is not None and job(store, "l1").run.handle is None
