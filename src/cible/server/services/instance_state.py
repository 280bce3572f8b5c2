"""A compute instance's pass, before the cluster machinery sizes it: schedules, the agent's
own stop, idle shutdown (with its warning and snooze) and restarts change its *power*
(on, off, restart); the reconciler then keeps one node or none accordingly.

Everything the instance decides is written to its `status` with an event that says why,
so `cible compute show` can tell whether it is idle, why not, and when it will stop.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cible.backends.base.contract import ProviderNode
from cible.core.clock import as_utc
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.computes import idle_time_seconds
from cible.core.planning.instances import DEFAULT_WARNING_S, InstanceView, idleness
from cible.core.planning.schedules import due_action
from cible.server.store.rows import ComputeRow, NodeRow

MAX_EVENTS = 50


def instance_pass(row: ComputeRow, node: NodeRow | None, listed: ProviderNode | None, now: datetime) -> None:
    """Update the instance's status (power, idleness, events) for this pass; writes only on change."""
    status: dict[str, Any] = dict(row.status or {})
    before = dict(status)
    spec = row.spec
    state = NodeState(node.state) if node is not None and NodeState(node.state) in LIVE else None
    job = node.job_name if node is not None else None

    if state in (NodeState.IDLE, NodeState.RUNNING):
        status["ever_ready"] = True
    if status.get("power") == "restart" and state is None:
        _power(status, "on", "restarted", now)
    if listed is not None and listed.stopped_itself and status.get("power", "on") == "on":
        _power(status, "off", listed.stopped_itself, now)

    _scheduled(spec, status, row.created_at, job, now)
    if status.get("pending_stop") and job is None and status.get("power", "on") == "on":
        _power(status, "off", status.pop("pending_stop"), now)

    view = instance_view(row, node, status)
    verdict = idleness(view, now)
    if verdict.warn:
        status["warned_for"] = verdict.stops_at.isoformat()
        _event(status, now, "IdleShutdownWarning",
               f"idle since {verdict.idle_since:%H:%M:%S}; it will stop at {verdict.stops_at:%H:%M:%S} UTC unless "
               f"it is used or snoozed (`cible compute snooze {row.name} --minutes M`)")
    if verdict.stop:
        _power(status, "off", f"idle shutdown: no job and no session since {verdict.idle_since:%H:%M:%S} UTC "
                              f"({view.idle_time_s:g} s)", now)
        verdict = idleness(InstanceView(power="off", idle_time_s=view.idle_time_s), now)
    status["idleness"] = verdict.as_dict()
    if status != before:
        row.status = status


def instance_view(row: ComputeRow, node: NodeRow | None, status: dict[str, Any] | None = None) -> InstanceView:
    """What idleness is decided from: the instance's settings and power, its live node, the sessions."""
    status = status if status is not None else (row.status or {})
    spec = row.spec
    state = NodeState(node.state) if node is not None and NodeState(node.state) in LIVE else None
    info = (node.info or {}) if state is not None else {}
    settings = spec.get("cible") or {}
    return InstanceView(
        power=status.get("power", "on"),
        idle_time_s=idle_time_seconds(spec.get("idle_time_before_shutdown_minutes"),
                                      spec.get("idle_time_before_shutdown")),
        warn_before_s=float(settings.get("idle_warning_minutes", DEFAULT_WARNING_S / 60)) * 60,
        node_state=state, job=node.job_name if state is not None else None,
        free_since=node.idle_since if state is not None else None,
        sessions=tuple(info.get("sessions") or ()), last_activity_at=_parse(info.get("last_activity_at")),
        powered_on_at=_parse(status.get("powered_on_at")) or row.created_at,
        snoozed_until=_parse(status.get("snoozed_until")), warned_for=_parse(status.get("warned_for")),
    )


def request_power(row: ComputeRow, power: str, why: str, now: datetime) -> None:
    """A user's start/stop/restart: the reconciler carries it out on its next pass."""
    status = dict(row.status or {})
    status.pop("pending_stop", None)
    _power(status, power, why, now)
    row.status = status


def _scheduled(spec: dict[str, Any], status: dict[str, Any], created_at: datetime, job: str | None,
               now: datetime) -> None:
    schedules = ((spec.get("schedules") or {}).get("compute_start_stop")) or []
    if not schedules:
        return
    checked = _parse(status.get("schedule_checked_at")) or created_at
    status["schedule_checked_at"] = now.isoformat()
    firing = due_action(schedules, checked, now)
    if firing is None:
        return
    why = f"schedule {firing.index} ({firing.action} at {firing.at:%Y-%m-%d %H:%M} UTC)"
    power = status.get("power", "on")
    if firing.action == "start" and power != "on":
        status.pop("pending_stop", None)
        _power(status, "on", f"started by {why}", now)
    elif firing.action == "stop" and power == "on":
        if job is not None:  # never cut a job short: stop once it ends
            status["pending_stop"] = f"stopped by {why}, after job {job} ended"
            _event(status, now, "ScheduledStopDeferred", f"{why}: job {job} is running; it stops when the job ends")
        else:
            _power(status, "off", f"stopped by {why}", now)


def _power(status: dict[str, Any], power: str, why: str, now: datetime) -> None:
    if status.get("power", "on") == power:
        return
    status["power"] = power
    status["power_reason"] = why
    if power == "on":
        status["powered_on_at"] = now.isoformat()
        status.pop("snoozed_until", None)
        status.pop("warned_for", None)
    kind = {"on": "Started", "off": "Stopped", "restart": "Restarting"}[power]
    _event(status, now, kind, why)


def _event(status: dict[str, Any], now: datetime, kind: str, message: str) -> None:
    status["events"] = [*status.get("events", []), {"at": now.isoformat(), "kind": kind, "message": message}][-MAX_EVENTS:]


def _parse(value: str | None) -> datetime | None:
    # Python 3.10's fromisoformat does not read the "Z" pydantic writes for UTC.
    # The status JSON holds text, not a column: a time written without a zone is UTC.
    return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00"))) if value else None


def record_pass_failure(row: ComputeRow, message: str, now: datetime) -> None:
    """The instance's pass raised: say so among its events (once while the same failure repeats),
    so `compute show` tells why idle shutdown or its schedules do nothing."""
    status: dict[str, Any] = dict(row.status or {})
    last = next((e for e in reversed(status.get("events", [])) if e["kind"] == "PassFailed"), None)
    if last is None or last["message"] != message:
        _event(status, now, "PassFailed", message)
        row.status = status
