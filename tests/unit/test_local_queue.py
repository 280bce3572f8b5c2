"""The `local` compute's queue: a pure FIFO over its slots (`queue_for_slots`), decided with every
other job's move by `decide_jobs`, and its wait reason stored on the job by the pass that decided
it, then shown as stored by `job show`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from api_support import TOKEN, api_client
from typer.testing import CliRunner

from cible.core.lifecycle.jobs import JobStatus
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import ClusterHandle, LocalHandle, RunRecord
from cible.core.planning.jobs import PLACED, SLOTS, LiveJob, decide_jobs
from cible.core.planning.scheduling import queue_for_slots
from cible.testing import FakeJobRunner, FrozenClock, serve_asgi

HELLO = {"command": "echo hello", "compute": "local"}
WAITING = "position {} in the queue of local: waiting for a free slot, {} of {} jobs running"


# -- the pure queue ------------------------------------------------------------------------------


def test_the_head_of_the_queue_takes_the_free_slots_and_the_others_know_their_place():
    queue = queue_for_slots("local", slots=3, running=1, queued=["a", "b", "c", "d"])
    assert queue.start == ("a", "b")
    assert queue.waiting == {"c": WAITING.format(1, 3, 3), "d": WAITING.format(2, 3, 3)}
    assert list(queue.waiting) == ["c", "d"]  # FIFO order


def test_no_free_slot_everyone_waits_and_more_running_than_slots_frees_none():
    assert queue_for_slots("local", slots=2, running=2, queued=["a"]).waiting == {"a": WAITING.format(1, 2, 2)}
    over = queue_for_slots("local", slots=2, running=5, queued=["a", "b"])  # the limit was lowered under them
    assert over.start == () and over.waiting["b"] == WAITING.format(2, 5, 2)
    assert queue_for_slots("local", slots=2, running=0, queued=[]) == queue_for_slots("local", 2, 0, ())


# -- decided with the other jobs' moves -----------------------------------------------------------


def live(name: str, status: JobStatus = JobStatus.QUEUED, *, runs_on: Any = SLOTS, target: str = "local",
         **run: Any) -> LiveJob:
    return LiveJob(name=name, status=status, target=target, run=RunRecord(**run), runs_on=runs_on)


def test_queued_local_jobs_start_in_fifo_order_and_a_launched_one_holds_its_slot():
    running = replace(live("r", JobStatus.RUNNING, handle=LocalHandle(run_dir="/runs/r", pid=1)),
                      observation=RunObservation(history=["Preparing", "Running"]))
    jobs = [running, live("a"), live("b"), live("c")]
    decisions = decide_jobs(jobs, slots=3, running={"local": 1})
    assert [name for name, d in decisions.items() if d.launch] == ["a", "b"]
    waiting = decisions["c"]
    assert waiting.waits and not waiting.launch and waiting.queue_reason == WAITING.format(1, 3, 3)
    assert not decisions["r"].waits and not decisions["r"].steps  # polled nothing new: nothing to do


def test_a_wait_reason_is_to_be_stored_only_when_it_changed():
    same = live("b", queue_reason=WAITING.format(1, 1, 1))
    decision = decide_jobs([live("a"), same], slots=1, running={})["b"]
    assert decision.waits and decision.queue_reason is None  # the stored one still holds: nothing written
    moved = live("b", queue_reason=WAITING.format(2, 1, 1))
    assert decide_jobs([live("a"), moved], slots=1, running={})["b"].queue_reason == WAITING.format(1, 1, 1)


def test_a_cluster_job_waits_for_its_placement_and_one_whose_compute_is_gone_fails():
    decisions = decide_jobs([live("c", runs_on=PLACED, target="gpu"), live("x", runs_on=None, target="gone")],
                            slots=1, running={})
    assert decisions["c"].waits and not decisions["c"].launch and decisions["c"].queue_reason is None
    assert decisions["x"].steps == [JobStatus.FAILED] and decisions["x"].error.code == "ComputeUnavailable"
    assert "compute 'gone' no longer exists" in decisions["x"].error.message


def test_a_cluster_job_that_ended_is_decided_from_its_nodes_reports():
    handle = ClusterHandle(job_name="c", compute="gpu", attempt=1, nodes=["n1"], node_addrs=["h"], master_port=1)
    job = LiveJob(name="c", status=JobStatus.RUNNING, target="gpu", run=RunRecord(handle=handle), runs_on=PLACED,
                  observation=RunObservation(history=["Running", "Finalizing", "Completed"]))
    decision = decide_jobs([job], slots=1, running={})["c"]
    assert decision.steps == [JobStatus.FINALIZING, JobStatus.COMPLETED] and decision.ends


# -- stored by the pass, shown by `job show` ------------------------------------------------------


def test_job_show_prints_the_wait_reason_the_pass_stored_for_a_local_job_waiting_for_a_slot(tmp_path: Path):
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path, clock, max_concurrent_local=1) as api:
        runner = FakeJobRunner(tmp_path / "runs", default_history=["Preparing", "Running"])  # stays running
        reconciler = api.app.state.reconciler
        reconciler.runners = {"local": runner}
        for name in ("first", "second", "third"):
            assert api.put(f"/api/v1/jobs/{name}", json=HELLO).status_code == 200
            clock.advance(1)  # FIFO by submit time
        reconciler.reconcile_once()
        assert runner.submits == ["first"]

        stored = {name: api.app.state.jobs.run_handle(name)[1].queue_reason for name in ("second", "third")}
        assert stored == {"second": WAITING.format(1, 1, 1), "third": WAITING.format(2, 1, 1)}
        assert api.get("/api/v1/jobs/second").json()["queue_reason"] == stored["second"]

        with serve_asgi(api.app) as url:
            from cible.cli.main import app as cli

            env = {"CIBLE_URL": url, "CIBLE_TOKEN": TOKEN, "COLUMNS": "200"}
            shown = CliRunner().invoke(cli, ["job", "show", "-n", "third", "-o", "json"], env=env)
            assert shown.exit_code == 0, shown.output
            assert json.loads(shown.stdout)["queue_reason"] == stored["third"]
            drawn = CliRunner().invoke(cli, ["job", "show", "-n", "third"], env=env)
            assert drawn.exit_code == 0 and stored["third"] in " ".join(drawn.stdout.split())

        version = _version(api, "third")
        reconciler.reconcile_once()  # nothing moved: the same reason, not written again
        assert _version(api, "third") == version


def _version(api, name: str) -> int:  # noqa: ANN001
    from cible.server.store.rows import JobRow

    with api.app.state.store.session() as session:
        return session.get(JobRow, name).version
