from __future__ import annotations

import pytest

from cible.core.errors import InvalidTransitionError
from cible.core.lifecycle.jobs import TRANSITIONS, JobStatus, check_transition, is_terminal, observed_steps
from cible.core.lifecycle.runs import RunObservation
from cible.core.planning.jobs import decide_job

S = JobStatus


def test_terminal_statuses_have_no_way_out():
    for status in (S.COMPLETED, S.FAILED, S.CANCELED):
        assert is_terminal(status)
        assert TRANSITIONS[status] == frozenset()


def test_every_status_has_a_row_in_the_table():
    assert set(TRANSITIONS) == set(JobStatus)


def test_illegal_move_names_both_ends_and_what_is_allowed():
    with pytest.raises(InvalidTransitionError) as info:
        check_transition(S.COMPLETED, S.RUNNING)
    assert "Completed" in info.value.message and "Running" in info.value.message
    assert "terminal" in info.value.message


def test_completed_only_through_finalizing():
    with pytest.raises(InvalidTransitionError):
        check_transition(S.RUNNING, S.COMPLETED)
    check_transition(S.FINALIZING, S.COMPLETED)


def test_replaying_a_launcher_history_is_idempotent():
    history = ["Preparing", "Running", "Finalizing", "Completed"]
    assert observed_steps(S.QUEUED, history) == [S.PREPARING, S.RUNNING, S.FINALIZING, S.COMPLETED]
    assert observed_steps(S.RUNNING, history) == [S.FINALIZING, S.COMPLETED]
    assert observed_steps(S.COMPLETED, history) == []


def test_a_cancel_in_flight_skips_stale_running_reports():
    assert observed_steps(S.CANCEL_REQUESTED, ["Preparing", "Running", "Finalizing", "Canceled"]) == [S.CANCELED]


def test_decide_launches_queued_jobs_once():
    assert decide_job(S.QUEUED, launched=False, observation=None).launch
    decision = decide_job(S.QUEUED, launched=True, observation=RunObservation(history=["Preparing"]))
    assert not decision.launch and decision.steps == [S.PREPARING]


def test_decide_cancels_a_job_that_never_started_without_launching_it():
    decision = decide_job(S.CANCEL_REQUESTED, launched=False, observation=None)
    assert decision.steps == [S.CANCELED] and not decision.launch


def test_decide_signals_a_running_job_to_cancel():
    decision = decide_job(S.CANCEL_REQUESTED, launched=True, observation=RunObservation(history=["Preparing", "Running"]))
    assert decision.signal_cancel and decision.steps == []


def test_decide_fails_a_job_whose_launcher_vanished():
    obs = RunObservation(history=["Preparing", "Running"], alive=False)
    decision = decide_job(S.RUNNING, launched=True, observation=obs)
    assert decision.steps == [S.FAILED]
    assert decision.error.code == "LauncherLost"


def test_decide_takes_the_launchers_end_and_error():
    obs = RunObservation(history=["Preparing", "Running", "Finalizing", "Failed"], alive=False,
                         error={"code": "UserError", "message": "exit code 3", "exit_code": 3})
    decision = decide_job(S.RUNNING, launched=True, observation=obs)
    assert decision.steps == [S.FINALIZING, S.FAILED]
    assert decision.error.exit_code == 3  # the launcher's own fields kept


def test_decide_cancels_a_job_whose_launcher_vanished_while_it_was_being_canceled():
    obs = RunObservation(history=["Preparing", "Running"], alive=False)
    decision = decide_job(S.CANCEL_REQUESTED, launched=True, observation=obs)
    assert decision.steps == [S.CANCELED]
    assert decision.error.code == "Canceled"
