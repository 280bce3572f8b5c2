"""The pure decisions for a compute instance: idleness (why not, when it stops, the warning),
its displayed state, and the idle shutdown time from the spec."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from cible.core.lifecycle.nodes import NodeState
from cible.core.models.computes import idle_time_seconds
from cible.core.planning.instances import (
    DEFAULT_WARNING_S,
    Idleness,
    InstanceView,
    display_state,
    idleness,
)

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def idle_view(**changes: object) -> InstanceView:
    """An instance that is on, with an idle node free since T0 and 60 s of idle time."""
    base = InstanceView(power="on", idle_time_s=60.0, warn_before_s=30.0, node_state=NodeState.IDLE,
                        free_since=T0)
    return replace(base, **changes)


# -- idleness: why it is not idle ----------------------------------------------------------------


@pytest.mark.parametrize("power", ["off", "restart"])
def test_an_instance_that_is_not_on_is_not_idle_because_it_is_not_running(power):
    verdict = idleness(idle_view(power=power), T0 + timedelta(hours=1))
    assert verdict.idle is False
    assert "not running" in verdict.why_not
    assert verdict.stop is False and verdict.warn is False and verdict.stops_at is None


@pytest.mark.parametrize("node_state", [None, NodeState.PREPARING])
def test_an_instance_without_a_ready_node_is_starting(node_state):
    verdict = idleness(idle_view(node_state=node_state), T0 + timedelta(hours=1))
    assert verdict.idle is False
    assert "starting" in verdict.why_not
    assert verdict.stop is False


def test_a_job_on_the_node_keeps_it_busy_and_is_named():
    verdict = idleness(idle_view(node_state=NodeState.RUNNING, job="job-42"), T0 + timedelta(hours=1))
    assert verdict.idle is False
    assert "job-42" in verdict.why_not
    assert verdict.stop is False and verdict.stops_at is None


def test_a_running_node_whose_job_is_unknown_is_still_busy():
    verdict = idleness(idle_view(node_state=NodeState.RUNNING, job=None), T0 + timedelta(hours=1))
    assert verdict.idle is False
    assert "job" in verdict.why_not and "running" in verdict.why_not


def test_one_open_session_is_listed_in_the_singular():
    verdict = idleness(idle_view(sessions=("terminal (pid 4)",)), T0 + timedelta(hours=1))
    assert verdict.idle is False
    assert verdict.why_not == "1 session open: terminal (pid 4)"
    assert verdict.stop is False


def test_several_open_sessions_are_all_listed():
    verdict = idleness(idle_view(sessions=("terminal (pid 4)", "jupyter (pid 7)")), T0 + timedelta(hours=1))
    assert verdict.why_not == "2 sessions open: terminal (pid 4), jupyter (pid 7)"


# -- idleness: when the idle clock starts and when it stops ----------------------------------------


@pytest.mark.parametrize("latest", ["free_since", "last_activity_at", "powered_on_at"])
def test_idle_clock_starts_at_the_latest_of_free_activity_and_power_on(latest):
    times = {"free_since": T0, "last_activity_at": T0 - timedelta(minutes=5), "powered_on_at": T0 - timedelta(minutes=9)}
    times[latest] = T0 + timedelta(minutes=2)
    verdict = idleness(idle_view(**times), T0 + timedelta(minutes=2, seconds=10))
    assert verdict.idle is True and verdict.why_not is None
    assert verdict.idle_since == T0 + timedelta(minutes=2)
    assert verdict.stops_at == T0 + timedelta(minutes=3)


def test_idle_clock_starts_now_when_nothing_is_known():
    now = T0 + timedelta(hours=3)
    verdict = idleness(idle_view(free_since=None), now)
    assert verdict.idle_since == now
    assert verdict.stops_at == now + timedelta(seconds=60)
    assert verdict.stop is False


def test_stops_at_is_idle_since_plus_the_idle_time():
    verdict = idleness(idle_view(idle_time_s=1800.0), T0 + timedelta(minutes=1))
    assert verdict.stops_at == T0 + timedelta(minutes=30)


def test_a_snooze_later_than_the_deadline_moves_the_stop_to_it():
    snooze = T0 + timedelta(minutes=20)
    verdict = idleness(idle_view(snoozed_until=snooze), T0 + timedelta(minutes=5))
    assert verdict.stops_at == snooze
    assert verdict.stop is False
    assert idleness(idle_view(snoozed_until=snooze), snooze).stop is True


def test_a_snooze_earlier_than_the_deadline_does_not_bring_it_forward():
    verdict = idleness(idle_view(snoozed_until=T0 + timedelta(seconds=10)), T0 + timedelta(seconds=20))
    assert verdict.stops_at == T0 + timedelta(seconds=60)
    assert verdict.stop is False


def test_stop_is_true_exactly_at_the_deadline_and_not_a_microsecond_before():
    deadline = T0 + timedelta(seconds=60)
    assert idleness(idle_view(), deadline - TICK).stop is False
    assert idleness(idle_view(), deadline).stop is True
    assert idleness(idle_view(), deadline + timedelta(hours=5)).stop is True


def test_warning_is_due_from_warn_before_the_deadline_until_the_stop():
    deadline = T0 + timedelta(seconds=60)  # warn_before_s is 30
    assert idleness(idle_view(), deadline - timedelta(seconds=30) - TICK).warn is False
    assert idleness(idle_view(), deadline - timedelta(seconds=30)).warn is True
    assert idleness(idle_view(), deadline - TICK).warn is True
    at_deadline = idleness(idle_view(), deadline)
    assert at_deadline.warn is False and at_deadline.stop is True


def test_no_second_warning_for_a_deadline_already_warned_for():
    deadline = T0 + timedelta(seconds=60)
    verdict = idleness(idle_view(warned_for=deadline), deadline - timedelta(seconds=10))
    assert verdict.warn is False and verdict.stop is False


def test_a_moved_deadline_is_warned_for_again():
    snooze = T0 + timedelta(minutes=10)
    verdict = idleness(idle_view(warned_for=T0 + timedelta(seconds=60), snoozed_until=snooze),
                       snooze - timedelta(seconds=10))
    assert verdict.stops_at == snooze
    assert verdict.warn is True


def test_default_warning_is_five_minutes_before_the_stop():
    view = idle_view(idle_time_s=3600.0, warn_before_s=DEFAULT_WARNING_S)
    assert idleness(view, T0 + timedelta(minutes=55) - TICK).warn is False
    assert idleness(view, T0 + timedelta(minutes=55)).warn is True


def test_without_idle_time_it_is_idle_but_never_stops_and_says_why():
    verdict = idleness(idle_view(idle_time_s=None), T0 + timedelta(days=30))
    assert verdict.idle is True
    assert "idle shutdown is off" in verdict.why_not
    assert verdict.idle_since == T0
    assert verdict.stop is False and verdict.warn is False and verdict.stops_at is None


def test_idleness_as_dict_writes_iso_times():
    verdict = idleness(idle_view(), T0 + timedelta(seconds=5))
    assert verdict.as_dict() == {"idle": True, "why_not": None, "idle_since": T0.isoformat(),
                                 "stops_at": (T0 + timedelta(seconds=60)).isoformat()}
    assert Idleness(False, "the instance is starting").as_dict() == {
        "idle": False, "why_not": "the instance is starting", "idle_since": None, "stops_at": None}


# -- display_state -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power", "node_state", "ever_ready", "job", "expected"),
    [
        ("restart", NodeState.IDLE, True, None, "Restarting"),
        ("restart", None, True, None, "Restarting"),
        ("off", None, True, None, "Stopped"),
        ("off", NodeState.IDLE, True, None, "Stopping"),
        ("off", NodeState.PREPARING, False, None, "Stopping"),
        ("on", None, False, None, "Creating"),
        ("on", NodeState.PREPARING, False, None, "Creating"),
        ("on", None, True, None, "Starting"),
        ("on", NodeState.PREPARING, True, None, "Starting"),
        ("on", NodeState.IDLE, True, None, "Running"),
        ("on", NodeState.RUNNING, True, "job-1", "JobRunning"),
    ],
)
def test_display_state_follows_power_and_node(power, node_state, ever_ready, job, expected):
    assert display_state(power=power, deleting=False, node_state=node_state, ever_ready=ever_ready,
                         job=job) == expected


@pytest.mark.parametrize("power", ["on", "off", "restart"])
def test_deleting_wins_over_every_other_state(power):
    assert display_state(power=power, deleting=True, node_state=NodeState.RUNNING, ever_ready=True,
                         job="job-1") == "Deleting"


# -- idle_time_seconds ---------------------------------------------------------------------------


def test_minutes_win_over_the_iso_duration():
    assert idle_time_seconds(15, "PT30M") == 900.0


@pytest.mark.parametrize(("iso", "seconds"), [("PT30M", 1800.0), ("PT90S", 90.0), ("P1DT2H", 93600.0),
                                               ("pt30m", 1800.0), ("p1dt2h", 93600.0), ("PT1.5H", 5400.0)])
def test_iso_durations_are_read_in_seconds(iso, seconds):
    assert idle_time_seconds(None, iso) == seconds


@pytest.mark.parametrize("iso", ["PT", "P", "30 minutes", "T30M", "PT30"])
def test_a_malformed_duration_is_refused_with_the_expected_form(iso):
    with pytest.raises(ValueError, match="ISO-8601"):
        idle_time_seconds(None, iso)


def test_no_idle_time_when_neither_form_is_set():
    assert idle_time_seconds(None, None) is None


def test_an_instance_whose_node_keeps_failing_to_start_shows_failed_until_it_comes_up():
    failing = dict(power="on", deleting=False, ever_ready=False, start_failing=True)
    assert display_state(node_state=None, **failing) == "Failed"
    assert display_state(node_state=NodeState.PREPARING, **failing) == "Failed"
    assert display_state(node_state=NodeState.IDLE, **failing) == "Running"
