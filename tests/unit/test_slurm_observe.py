"""What a Slurm job's run looks like to cible: its pilots' reports (merged as a cluster's nodes'
are) read beside Slurm's own state of the job (cible.backends.slurm.observe, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from cible.backends.slurm.commands import SlurmJob
from cible.backends.slurm.observe import SLURM_ENDS, needs_slurm, observe
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import SlurmHandle
from cible.core.planning.jobs import decide_job
from cible.server.clusters.runs import merge_reports

HANDLE = SlurmHandle(job_name="khaki_boot", compute="hpc", attempt=1, user="alice",
                     run_dir="/home/alice/.cible-agent/runs/khaki_boot.1.abc123", master_port=23456,
                     slurm_job_id="77", nodes=["slurm-job-77-0", "slurm-job-77-1"])


def report(*history: str, error: dict[str, Any] | None = None, exit_code: int | None = None) -> dict[str, Any]:
    return {"attempt": 1, "history": list(history), "error": error, "exit_code": exit_code}


def merged(*reports: dict[str, Any] | None) -> RunObservation:
    return merge_reports(list(reports))


def slurm(state: str, reason: str | None = None, time_limit: str | None = None) -> SlurmJob:
    return SlurmJob("77", state, reason, "alice", time_limit=time_limit)


RUNNING_BOTH = merged(report("Preparing", "Running"), report("Preparing", "Running"))
COMPLETED_BOTH = merged(report("Preparing", "Running", "Completed", exit_code=0),
                        report("Preparing", "Running", "Completed", exit_code=0))
FAILED_RANK1 = merged(report("Preparing", "Running"),
                      report("Preparing", "Running", "Failed", error={"code": "UserError", "message": "exit 1"},
                             exit_code=1))
CANCELED_BOTH = merged(report("Preparing", "Running", "Canceled", error={"code": "Canceled", "message": "canceled"}),
                       report("Preparing", "Running", "Canceled", error={"code": "Canceled", "message": "canceled"}))
NO_REPORTS = merged(None, None)


def test_the_merged_reports_are_what_the_table_reads():
    assert COMPLETED_BOTH.ended and COMPLETED_BOTH.history[-1] == "Completed"
    assert FAILED_RANK1.ended and FAILED_RANK1.history[-1] == "Failed"
    assert FAILED_RANK1.error["message"].startswith("node rank 1: ")
    assert CANCELED_BOTH.ended and CANCELED_BOTH.history[-1] == "Canceled"
    assert not NO_REPORTS.ended and NO_REPORTS.history == []


def test_a_refused_submit_fails_with_sbatchs_words_whatever_else_is_known():
    refused = HANDLE.model_copy(update={"slurm_job_id": None, "nodes": [], "refused": "sbatch refused: Invalid partition"})
    for obs, canceling, job in ((NO_REPORTS, False, None), (RUNNING_BOTH, True, slurm("RUNNING")),
                                (COMPLETED_BOTH, False, slurm("COMPLETED"))):
        seen = observe(refused, obs, canceling, job)
        assert seen.history == ["Failed"] and not seen.alive
        assert seen.error == {"code": "SlurmSubmitRefused", "message": "sbatch refused: Invalid partition"}


def test_slurm_is_not_asked_once_the_pilots_completed():
    assert not needs_slurm(COMPLETED_BOTH, canceling=False)
    assert not needs_slurm(COMPLETED_BOTH, canceling=True)
    assert observe(HANDLE, COMPLETED_BOTH, False, None, asked=False) == COMPLETED_BOTH


def test_slurm_is_not_asked_for_a_cancel_cible_asked_for():
    assert not needs_slurm(CANCELED_BOTH, canceling=True)
    assert observe(HANDLE, CANCELED_BOTH, True, None, asked=False) == CANCELED_BOTH


@pytest.mark.parametrize("obs, canceling", [
    (NO_REPORTS, False), (NO_REPORTS, True), (RUNNING_BOTH, False), (RUNNING_BOTH, True),
    (FAILED_RANK1, False), (FAILED_RANK1, True), (CANCELED_BOTH, False)])
def test_slurm_is_asked_while_the_pilots_end_does_not_settle_it(obs, canceling):
    assert needs_slurm(obs, canceling)


def test_a_failure_waits_while_slurm_still_runs_the_job():
    """The pilots saw their command killed: was it Slurm? Its end shows once the job left its nodes."""
    seen = observe(HANDLE, FAILED_RANK1, False, slurm("RUNNING"))
    assert not seen.ended and seen.alive
    assert seen.history == ["Preparing", "Running"] and seen.error is None


def test_a_failure_while_slurm_says_timeout_is_slurms_time_limit():
    seen = observe(HANDLE, FAILED_RANK1, False, slurm("TIMEOUT", "TimeLimit", time_limit="00:03:00"))
    assert seen.history == ["Preparing", "Running", "Failed"] and not seen.alive
    assert seen.error["code"] == "SlurmEnded"
    assert "TIMEOUT" in seen.error["message"] and "time limit 3 min" in seen.error["message"]
    assert "77" in seen.error["message"]


@pytest.mark.parametrize("state", sorted(SLURM_ENDS - {"CANCELLED", "TIMEOUT"}))
def test_a_failure_slurm_caused_says_slurms_state(state):
    seen = observe(HANDLE, FAILED_RANK1, False, slurm(state))
    assert seen.history[-1] == "Failed" and seen.error["code"] == "SlurmEnded"
    assert state in seen.error["message"]


@pytest.mark.parametrize("state", ["COMPLETED", "FAILED"])
def test_a_failure_of_the_job_itself_stands_when_slurm_ended_it_as_its_own(state):
    assert observe(HANDLE, FAILED_RANK1, False, slurm(state)) == FAILED_RANK1


def test_a_failure_stands_when_slurm_no_longer_knows_the_job():
    assert observe(HANDLE, FAILED_RANK1, False, None) == FAILED_RANK1


def test_pilots_canceled_without_cible_asking_and_slurm_cancelled_is_a_cancel_from_outside():
    seen = observe(HANDLE, CANCELED_BOTH, False, slurm("CANCELLED"))
    assert seen.history == ["Preparing", "Running", "Failed"] and not seen.alive
    assert seen.error["code"] == "SlurmEnded" and "CANCELLED" in seen.error["message"]


def test_pilots_canceled_without_cible_asking_wait_while_slurm_runs():
    seen = observe(HANDLE, CANCELED_BOTH, False, slurm("COMPLETING"))
    assert seen.history == ["Preparing", "Running"] and not seen.ended


def test_no_reports_and_pending_is_queued_with_slurms_reason_in_words():
    seen = observe(HANDLE, NO_REPORTS, False, slurm("PENDING", "Resources"))
    assert seen.history == ["Queued"] and seen.alive and not seen.ended
    assert "waiting for free nodes" in seen.queue_reason and "77" in seen.queue_reason
    assert "(Resources)" in seen.queue_reason


def test_no_reports_and_pending_with_an_unknown_reason_names_it():
    seen = observe(HANDLE, NO_REPORTS, False, slurm("PENDING", "SomethingNew"))
    assert seen.history == ["Queued"] and "SomethingNew" in seen.queue_reason


def test_no_reports_and_running_is_preparing():
    seen = observe(HANDLE, NO_REPORTS, False, slurm("RUNNING"))
    assert seen.history == ["Preparing"] and seen.alive and seen.queue_reason is None


def test_reports_and_running_are_the_pilots_progress():
    assert observe(HANDLE, RUNNING_BOTH, False, slurm("RUNNING")) == RUNNING_BOTH


def test_no_reports_and_slurm_forgot_the_job_fails_saying_so():
    seen = observe(HANDLE, NO_REPORTS, False, None)
    assert seen.history == ["Failed"] and not seen.alive
    assert seen.error["code"] == "SlurmEnded"
    assert "no longer knows" in seen.error["message"] and HANDLE.run_dir in seen.error["message"]


def test_running_reports_and_slurm_forgot_the_job_keep_the_progress_then_fail():
    seen = observe(HANDLE, RUNNING_BOTH, False, None)
    assert seen.history == ["Preparing", "Running", "Failed"]
    assert seen.error["code"] == "SlurmEnded"


def test_no_reports_and_slurm_completed_is_a_lost_launcher():
    seen = observe(HANDLE, NO_REPORTS, False, slurm("COMPLETED"))
    assert seen.history == ["Failed"] and not seen.alive
    assert seen.error["code"] == "LauncherLost"
    assert "slurm-77.out" in seen.error["message"] and HANDLE.run_dir in seen.error["message"]


def test_no_reports_and_slurm_cancelled_it_as_cible_asked_is_canceled():
    seen = observe(HANDLE, NO_REPORTS, True, slurm("CANCELLED"))
    assert seen.history == ["Canceled"] and not seen.alive
    assert seen.error == {"code": "Canceled", "message": "Slurm job 77 was cancelled"}


def test_no_reports_and_slurm_cancelled_it_unasked_fails():
    seen = observe(HANDLE, NO_REPORTS, False, slurm("CANCELLED"))
    assert seen.history == ["Failed"] and seen.error["code"] == "SlurmEnded"


def test_no_reports_and_slurm_timeout_fails_with_the_limit():
    seen = observe(HANDLE, NO_REPORTS, False, slurm("TIMEOUT", time_limit="01:00:00"))
    assert seen.history == ["Failed"] and "TIMEOUT" in seen.error["message"] and "time limit 1 h" in seen.error["message"]


@pytest.mark.parametrize("obs", [NO_REPORTS, RUNNING_BOTH])
def test_a_state_this_release_does_not_know_leaves_the_reports_as_they_are(obs):
    assert observe(HANDLE, obs, False, slurm("SOME_FUTURE_STATE")) == obs


@pytest.mark.parametrize("job", [None, slurm("COMPLETED"), slurm("FAILED")], ids=["forgotten", "completed", "failed"])
def test_pilots_canceled_without_cible_asking_end_the_running_job_whatever_slurm_says(job):
    """The pilots were ended by a SIGTERM cible did not send (an outside scancel, the time limit) and
    Slurm no longer says CANCELLED/TIMEOUT (it forgot the job after MinJobAge while the server was
    away, or ended it otherwise). A Running job cannot move to Canceled without CancelRequested, so
    the reconciler must get an end it can apply; else the job stays Running for ever."""
    seen = observe(HANDLE, CANCELED_BOTH, False, job)
    decision = decide_job("Running", True, seen)
    assert decision.ends, (seen, decision)
    assert decision.steps[-1] == "Failed"
