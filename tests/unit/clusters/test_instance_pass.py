"""A compute instance's pass: idle shutdown (warning, snooze, activity), schedules, the agent's
own stop and restarts change its power, with an event that says why. Rows are built in memory
(no database) and the clock is a fixed `now` moved by timedelta; the power moves' history rows
are collected in a list instead of a session."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from cible.backends.base.contract import ProviderNode
from cible.core.models.records import ComputeStatus, InstanceState, NodeInfo
from cible.server.services import instance_state
from cible.server.services.lifecycle import move_power
from cible.server.store.rows import ComputeRow, LifecycleRow, NodeRow

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
STOP_AT_18 = {"action": "stop", "trigger": {"type": "cron", "expression": "0 18 * * *", "time_zone": "UTC"}}
START_AT_8 = {"action": "start", "trigger": {"type": "cron", "expression": "0 8 * * *", "time_zone": "UTC"}}


class History(list):
    """Stands for the session: what the power moves record."""

    def add(self, row: LifecycleRow) -> None:
        self.append(row)


def instance_pass(row: ComputeRow, node: NodeRow | None, listed: ProviderNode | None, now: datetime) -> None:
    instance_state.instance_pass(row, node, listed, now, session=History())


def request_power(row: ComputeRow, power: str, why: str, now: datetime) -> None:
    move_power(History(), row, power, why, now)


def instance(*, idle_minutes: int | None = 1, warn_minutes: float | None = 0.5, schedules: list | None = None,
             status: dict[str, Any] | None = None, created_at: datetime = T0) -> ComputeRow:
    """A compute instance created (and so powered on) at T0: 60 s of idle time, warned 30 s before."""
    spec: dict[str, Any] = {"name": "ci", "size": "Standard_DS3_v2"}
    if idle_minutes is not None:
        spec["idle_time_before_shutdown_minutes"] = idle_minutes
    if warn_minutes is not None:
        spec["cible"] = {"idle_warning_minutes": warn_minutes}
    if schedules is not None:
        spec["schedules"] = {"compute_start_stop": schedules}
    return ComputeRow(name="ci", compute_type="computeinstance", spec=spec,
                      observed=ComputeStatus(instance=InstanceState.model_validate(status or {})),
                      provisioning_state="Succeeded", created_at=created_at, updated_at=created_at)


def node(*, state: str = "idle", job: str | None = None, info: dict[str, Any] | None = None,
         idle_since: datetime | None = T0) -> NodeRow:
    return NodeRow(node_id="n1", compute="ci", provider="local", state=state, job_name=job,
                   info=NodeInfo.model_validate(info or {}), idle_since=idle_since, created_at=T0, updated_at=T0)


def status(row: ComputeRow) -> dict[str, Any]:
    """The instance's state as it was shown before it was typed: times as ISO text, unset fields absent."""
    return _iso(row.observed.instance.model_dump(exclude_defaults=True) | {"power": power(row)})


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso(v) for v in value]
    return value


def events(row: ComputeRow, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in status(row).get("events", []) if kind is None or e["kind"] == kind]


def power(row: ComputeRow) -> str:
    return row.observed.instance.power


# -- idle shutdown -------------------------------------------------------------------------------


def test_before_the_warning_window_nothing_happens_but_the_stop_time_is_shown():
    row = instance()
    instance_pass(row, node(), None, T0 + timedelta(seconds=10))
    assert power(row) == "on"
    assert events(row) == []
    assert status(row)["idleness"] == {"idle": True, "why_not": None, "idle_since": T0.isoformat(),
                                      "stops_at": (T0 + timedelta(seconds=60)).isoformat()}


def test_inside_the_warning_window_one_warning_is_recorded_however_many_passes():
    row, n = instance(), node()
    instance_pass(row, n, None, T0 + timedelta(seconds=30))
    instance_pass(row, n, None, T0 + timedelta(seconds=45))
    warnings = events(row, "IdleShutdownWarning")
    assert len(warnings) == 1
    assert warnings[0]["at"] == (T0 + timedelta(seconds=30)).isoformat()
    assert "snooze" in warnings[0]["message"]
    assert status(row)["warned_for"] == (T0 + timedelta(seconds=60)).isoformat()
    assert power(row) == "on"


def test_one_second_before_the_deadline_it_is_still_on():
    row = instance()
    instance_pass(row, node(), None, T0 + timedelta(seconds=59))
    assert power(row) == "on"
    assert events(row, "Stopped") == []


def test_at_the_deadline_idle_shutdown_turns_the_power_off_and_says_so():
    row, n = instance(), node()
    instance_pass(row, n, None, T0 + timedelta(seconds=40))
    instance_pass(row, n, None, T0 + timedelta(seconds=60))
    assert power(row) == "off"
    stopped = events(row, "Stopped")
    assert len(stopped) == 1
    assert "idle shutdown" in stopped[0]["message"]
    assert "idle shutdown" in status(row)["power_reason"]
    assert status(row)["idleness"]["idle"] is False
    assert status(row)["idleness"]["stops_at"] is None


def test_a_job_on_the_node_keeps_it_on_and_is_named():
    row = instance()
    instance_pass(row, node(state="running", job="job-7"), None, T0 + timedelta(hours=2))
    assert power(row) == "on"
    assert events(row) == []
    assert status(row)["idleness"]["idle"] is False
    assert "job-7" in status(row)["idleness"]["why_not"]


def test_open_sessions_reported_by_the_agent_keep_it_on():
    row = instance()
    n = node(info={"sessions": ["terminal (pid 4)"], "last_activity_at": T0.isoformat()})
    instance_pass(row, n, None, T0 + timedelta(hours=2))
    assert power(row) == "on"
    assert status(row)["idleness"]["idle"] is False
    assert status(row)["idleness"]["why_not"] == "1 session open: terminal (pid 4)"


def test_a_gpu_at_work_outside_any_job_keeps_it_on_and_is_named():
    row = instance()
    gpus = [{"index": 0, "uuid": "GPU-a", "utilization_percent": 93.0}, {"index": 1, "utilization_percent": 0.0}]
    instance_pass(row, node(info={"usage": {"gpus": gpus}}), None, T0 + timedelta(hours=2))
    assert power(row) == "on"
    assert status(row)["idleness"]["why_not"] == "its GPU is at work: GPU 0 (93 %)"
    idle_gpus = [{**g, "utilization_percent": 0.0} for g in gpus]
    instance_pass(row, node(info={"usage": {"gpus": idle_gpus}}), None, T0 + timedelta(hours=2))
    assert power(row) == "off"  # idle GPUs are no activity


def test_activity_after_the_node_became_free_moves_the_deadline():
    row = instance()
    seen = T0 + timedelta(seconds=50)
    n = node(info={"sessions": [], "last_activity_at": seen.isoformat()})
    instance_pass(row, n, None, T0 + timedelta(seconds=90))
    assert power(row) == "on"
    assert status(row)["idleness"]["idle_since"] == seen.isoformat()
    assert status(row)["idleness"]["stops_at"] == (seen + timedelta(seconds=60)).isoformat()
    instance_pass(row, n, None, seen + timedelta(seconds=60))
    assert power(row) == "off"


def test_a_snooze_keeps_it_running_past_the_deadline_until_the_snooze_ends():
    snooze = T0 + timedelta(minutes=10)
    row = instance(status={"power": "on", "snoozed_until": snooze.isoformat()})
    instance_pass(row, node(), None, T0 + timedelta(minutes=5))
    assert power(row) == "on"
    assert status(row)["idleness"]["stops_at"] == snooze.isoformat()
    instance_pass(row, node(), None, snooze)
    assert power(row) == "off"


def test_no_idle_time_means_it_never_stops_for_idleness():
    row = instance(idle_minutes=None)
    instance_pass(row, node(), None, T0 + timedelta(days=3))
    assert power(row) == "on"
    assert events(row) == []
    assert "idle shutdown is off" in status(row)["idleness"]["why_not"]


def test_the_ready_node_marks_the_instance_as_ever_ready():
    row = instance()
    instance_pass(row, node(state="preparing"), None, T0 + timedelta(seconds=5))
    assert "ever_ready" not in status(row)
    assert "starting" in status(row)["idleness"]["why_not"]
    instance_pass(row, node(), None, T0 + timedelta(seconds=6))
    assert status(row)["ever_ready"] is True


def test_an_agent_activity_time_written_with_z_is_understood():
    row = instance()
    seen = T0 + timedelta(seconds=50)
    n = node(info={"sessions": [], "last_activity_at": "2026-03-02T09:00:50Z"})
    instance_pass(row, n, None, T0 + timedelta(seconds=90))
    assert status(row)["idleness"]["idle_since"] == seen.isoformat()
    assert power(row) == "on"


# -- schedules -----------------------------------------------------------------------------------


def test_a_stop_schedule_firing_since_the_last_check_turns_the_power_off():
    row = instance(idle_minutes=None, schedules=[STOP_AT_18],
                   status={"schedule_checked_at": T0.replace(hour=17, minute=59).isoformat()})
    now = T0.replace(hour=18, minute=1)
    instance_pass(row, node(), None, now)
    assert power(row) == "off"
    assert "schedule 0" in status(row)["power_reason"]
    assert "stop" in status(row)["power_reason"]
    assert [e["kind"] for e in events(row)] == ["Stopped"]
    assert status(row)["schedule_checked_at"] == now.isoformat()


def test_a_stop_schedule_that_has_not_fired_yet_leaves_it_on():
    row = instance(idle_minutes=None, schedules=[STOP_AT_18],
                   status={"schedule_checked_at": T0.replace(hour=17, minute=50).isoformat()})
    now = T0.replace(hour=17, minute=59)
    instance_pass(row, node(), None, now)
    assert power(row) == "on"
    assert events(row) == []
    assert status(row)["schedule_checked_at"] == now.isoformat()


def test_a_scheduled_stop_waits_for_the_running_job_then_happens_once_it_is_gone():
    row = instance(idle_minutes=None, schedules=[STOP_AT_18],
                   status={"schedule_checked_at": T0.replace(hour=17, minute=59).isoformat()})
    instance_pass(row, node(state="running", job="job-1"), None, T0.replace(hour=18, minute=1))
    assert power(row) == "on"
    assert "schedule 0" in status(row)["pending_stop"]
    deferred = events(row, "ScheduledStopDeferred")
    assert len(deferred) == 1 and "job-1" in deferred[0]["message"]

    instance_pass(row, node(state="running", job="job-1"), None, T0.replace(hour=18, minute=30))
    assert power(row) == "on"
    assert len(events(row, "ScheduledStopDeferred")) == 1

    instance_pass(row, node(state="idle"), None, T0.replace(hour=18, minute=45))
    assert power(row) == "off"
    assert "pending_stop" not in status(row)
    assert "schedule 0" in status(row)["power_reason"] and "job-1" in status(row)["power_reason"]
    assert len(events(row, "Stopped")) == 1


def test_a_start_schedule_turns_a_stopped_instance_on():
    next_day = T0 + timedelta(days=1)
    row = instance(schedules=[START_AT_8],
                   status={"power": "off", "schedule_checked_at": next_day.replace(hour=7, minute=59).isoformat()})
    now = next_day.replace(hour=8, minute=1)
    instance_pass(row, None, None, now)
    assert power(row) == "on"
    assert status(row)["powered_on_at"] == now.isoformat()
    assert "schedule 0" in status(row)["power_reason"]
    assert [e["kind"] for e in events(row)] == ["Started"]
    assert "starting" in status(row)["idleness"]["why_not"]


def test_the_first_schedule_check_counts_from_the_creation_time():
    row = instance(idle_minutes=None, schedules=[STOP_AT_18], created_at=T0)
    instance_pass(row, node(), None, T0.replace(hour=18, minute=1))
    assert power(row) == "off"


# -- the agent's own stop, restarts, user requests ------------------------------------------------


def test_an_agent_that_stopped_itself_turns_the_power_off_with_its_reason():
    row = instance(idle_minutes=None)
    listed = ProviderNode("n1", alive=False, stopped_itself="idle for 3600 s without a server")
    instance_pass(row, node(), listed, T0 + timedelta(minutes=5))
    assert power(row) == "off"
    assert status(row)["power_reason"] == "idle for 3600 s without a server"
    assert events(row, "Stopped")[0]["message"] == "idle for 3600 s without a server"


def test_a_listed_node_that_did_not_stop_itself_changes_nothing():
    row = instance(idle_minutes=None)
    instance_pass(row, node(), ProviderNode("n1"), T0 + timedelta(minutes=5))
    assert power(row) == "on"
    assert events(row) == []


def test_a_restart_returns_to_on_once_the_old_node_is_gone():
    row = instance(status={"power": "restart"})
    now = T0 + timedelta(minutes=3)
    instance_pass(row, None, None, now)
    assert power(row) == "on"
    assert status(row)["powered_on_at"] == now.isoformat()
    assert events(row, "Started")[0]["message"] == "restarted"


def test_a_restart_waits_while_the_old_node_is_still_live():
    row = instance(status={"power": "restart"})
    instance_pass(row, node(), None, T0 + timedelta(minutes=3))
    assert power(row) == "restart"
    assert status(row)["idleness"]["idle"] is False


def test_request_power_off_sets_the_power_and_clears_a_pending_stop():
    row = instance(status={"power": "on", "pending_stop": "stopped by schedule 0, after job job-1 ended"})
    now = T0 + timedelta(minutes=1)
    request_power(row, "off", "stopped by alice", now)
    assert status(row)["power"] == "off"
    assert status(row)["power_reason"] == "stopped by alice"
    assert "pending_stop" not in status(row)
    assert events(row) == [{"at": now.isoformat(), "kind": "Stopped", "message": "stopped by alice"}]


def test_request_power_on_resets_the_snooze_and_the_warning():
    row = instance(status={"power": "off", "snoozed_until": T0.isoformat(), "warned_for": T0.isoformat()})
    now = T0 + timedelta(hours=1)
    request_power(row, "on", "started by alice", now)
    assert status(row)["power"] == "on"
    assert status(row)["powered_on_at"] == now.isoformat()
    assert "snoozed_until" not in status(row) and "warned_for" not in status(row)


def test_a_started_instance_counts_idle_time_from_the_power_on():
    row = instance(status={"power": "off"})
    started = T0 + timedelta(hours=1)
    request_power(row, "on", "started by alice", started)
    instance_pass(row, node(idle_since=T0), None, started + timedelta(seconds=30))
    assert power(row) == "on"
    assert status(row)["idleness"]["stops_at"] == (started + timedelta(seconds=60)).isoformat()


# -- writes only on change -----------------------------------------------------------------------


def test_a_second_pass_at_the_same_time_leaves_the_status_unchanged():
    row, n = instance(schedules=[STOP_AT_18]), node()
    now = T0 + timedelta(seconds=40)  # in the warning window: the first pass records the warning
    instance_pass(row, n, None, now)
    first, snapshot = row.observed, status(row)
    instance_pass(row, n, None, now)
    assert status(row) == snapshot
    assert row.observed is first  # nothing changed, so the row's status is not even reassigned
    assert len(events(row, "IdleShutdownWarning")) == 1


def test_a_pass_that_changes_something_writes_a_new_status():
    row, n = instance(), node()
    instance_pass(row, n, None, T0 + timedelta(seconds=10))
    first = row.observed
    instance_pass(row, n, None, T0 + timedelta(seconds=35))
    assert row.observed is not first
    assert first.instance.warned_for is None and "warned_for" in status(row)
