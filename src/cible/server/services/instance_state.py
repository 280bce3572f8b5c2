"""A compute instance's pass, before the cluster machinery sizes it: schedules, the agent's
own stop, idle shutdown (with its warning and snooze) and restarts change its *power*
(on, off, restart); the reconciler then keeps one node or none accordingly.

Everything the instance decides is written to its status (`ComputeStatus.instance`) with an
event that says why, so `cible compute show` can tell whether it is idle, why not, and when
it will stop. Power changes go through `move_power` (its table and history row).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, object_session

from cible.backends.base.contract import ProviderNode
from cible.core.lifecycle.instance_power import Power
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.computes import ComputeInstance, idle_time_seconds
from cible.core.models.records import InstanceState, NodeInfo
from cible.core.planning.instances import InstanceView, idleness
from cible.core.planning.schedules import due_action
from cible.node import gpus
from cible.server.services.compute_spec import cible_settings, instance_spec
from cible.server.services.lifecycle import move_power, with_event
from cible.server.store.rows import ComputeRow, NodeRow


def instance_of(row: ComputeRow) -> InstanceState:
    """The instance's runtime state (a new instance: powered on, nothing seen yet)."""
    return row.observed.instance or InstanceState()


def instance_pass(row: ComputeRow, node: NodeRow | None, listed: ProviderNode | None, now: datetime, *,
                  session: Session | None = None) -> None:
    """Update the instance's status (power, idleness, events) for this pass; writes only on change.
    `session`: where power moves record their history (default: the row's own session)."""
    session = session if session is not None else _session_of(row)
    spec = instance_spec(row)
    state = _live_state(node)
    job = node.job_name if node is not None else None

    if state in (NodeState.IDLE, NodeState.RUNNING):
        _update(row, ever_ready=True)
    if instance_of(row).power == Power.RESTART.value and state is None:
        move_power(session, row, Power.ON, "restarted", now)
    if listed is not None and listed.stopped_itself and instance_of(row).power == Power.ON.value:
        move_power(session, row, Power.OFF, listed.stopped_itself, now)

    _scheduled(session, row, spec, job, now)
    pending = instance_of(row).pending_stop
    if pending and job is None and instance_of(row).power == Power.ON.value:
        move_power(session, row, Power.OFF, pending, now)

    view = instance_view(row, node)
    verdict = idleness(view, now)
    if verdict.warn:
        message = (f"idle since {verdict.idle_since:%H:%M:%S}; it will stop at {verdict.stops_at:%H:%M:%S} UTC "
                   f"unless it is used or snoozed (`cible compute snooze {row.name} --minutes M`)")
        _update(row, warned_for=verdict.stops_at,
                events=with_event(instance_of(row), now, "IdleShutdownWarning", message))
    if verdict.stop:
        move_power(session, row, Power.OFF, f"idle shutdown: no job and no session since "
                                            f"{verdict.idle_since:%H:%M:%S} UTC ({view.idle_time_s:g} s)", now)
        verdict = idleness(InstanceView(power="off", idle_time_s=view.idle_time_s), now)
    _update(row, idleness=verdict.as_dict())


def instance_view(row: ComputeRow, node: NodeRow | None) -> InstanceView:
    """What idleness is decided from: the instance's settings and power, its live node, the sessions."""
    instance = instance_of(row)
    spec = instance_spec(row)
    state = _live_state(node)
    info = node.info if node is not None and state is not None else NodeInfo()
    return InstanceView(
        power=instance.power,
        idle_time_s=idle_time_seconds(spec.idle_time_before_shutdown_minutes, spec.idle_time_before_shutdown),
        warn_before_s=cible_settings(spec).idle_warning_minutes * 60,
        node_state=state, job=node.job_name if state is not None else None,
        free_since=node.idle_since if state is not None else None,
        sessions=tuple(info.sessions), last_activity_at=info.last_activity_at,
        gpus_busy=tuple(gpus.busy((info.usage or {}).get("gpus") or [])),
        powered_on_at=instance.powered_on_at or row.created_at,
        snoozed_until=instance.snoozed_until, warned_for=instance.warned_for,
    )


def snooze(row: ComputeRow, until: datetime, message: str, now: datetime) -> None:
    """Postpone the idle shutdown to `until` (the caller checked the instance is on)."""
    _update(row, snoozed_until=until, events=with_event(instance_of(row), now, "Snoozed", message))


def record_pass_failure(row: ComputeRow, message: str, now: datetime) -> None:
    """The instance's pass raised: say so among its events (once while the same failure repeats),
    so `compute show` tells why idle shutdown or its schedules do nothing."""
    instance = instance_of(row)
    last = next((e for e in reversed(instance.events) if e.kind == "PassFailed"), None)
    if last is None or last.message != message:
        _update(row, events=with_event(instance, now, "PassFailed", message))


def _scheduled(session: Session, row: ComputeRow, spec: ComputeInstance, job: str | None, now: datetime) -> None:
    schedules = spec.schedules.compute_start_stop if spec.schedules else []
    if not schedules:
        return
    checked = instance_of(row).schedule_checked_at or row.created_at
    _update(row, schedule_checked_at=now)
    firing = due_action(schedules, checked, now)
    if firing is None:
        return
    why = f"schedule {firing.index} ({firing.action} at {firing.at:%Y-%m-%d %H:%M} UTC)"
    power = instance_of(row).power
    if firing.action == "start" and power != Power.ON.value:
        move_power(session, row, Power.ON, f"started by {why}", now)
    elif firing.action == "stop" and power == Power.ON.value:
        if job is not None:  # never cut a job short: stop once it ends
            _update(row, pending_stop=f"stopped by {why}, after job {job} ended",
                    events=with_event(instance_of(row), now, "ScheduledStopDeferred",
                                      f"{why}: job {job} is running; it stops when the job ends"))
        else:
            move_power(session, row, Power.OFF, f"stopped by {why}", now)


def _update(row: ComputeRow, **changes: Any) -> None:
    """Change the instance's state; the row is written only when something differs, so a pass
    that sees nothing new leaves the row (and its version) alone. Never the power: `move_power`."""
    if "power" in changes:
        raise ValueError("an instance's power changes only through move_power (its transition table)")
    instance = instance_of(row)
    changed = instance.model_copy(update=changes)
    if changed != instance or row.observed.instance is None:
        row.observed = row.observed.model_copy(update={"instance": changed})


def _live_state(node: NodeRow | None) -> NodeState | None:
    return NodeState(node.state) if node is not None and NodeState(node.state) in LIVE else None


def _session_of(row: ComputeRow) -> Session:
    session = object_session(row)
    if session is None:
        raise RuntimeError(f"compute instance {row.name}: its pass needs the row's session (power moves are recorded)")
    return session
