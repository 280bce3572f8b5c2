"""What the compute pages draw and say, as pure functions of their data: a cluster's node-state
timeline rows (for charts.timeline), the badge class of a compute's state, an instance's idleness
in words and which of its power buttons apply."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cible.server.studio.charts import Span, spans
from cible.server.studio.web import as_datetime, duration, when

WINDOW = timedelta(hours=24)  # the node timeline shows the last day
MAX_TIMELINE_NODES = 30  # and the most recent nodes only: one row each

# The badge class (studio.css) of a compute's state: an instance's state, a cluster's allocation
# state or a provisioning state.
COMPUTE_CLASSES = {
    "Running": "ok", "JobRunning": "run", "Creating": "wait", "Starting": "wait", "Restarting": "wait",
    "Stopping": "stop", "Stopped": "stop", "Deleting": "stop", "Failed": "bad", "Unusable": "bad",
    "Steady": "ok", "Resizing": "run", "Succeeded": "ok", "Canceled": "stop",
}


def compute_class(state: Any) -> str:
    return COMPUTE_CLASSES.get(str(state), "other")


def node_timeline_rows(nodes: list[tuple[str, list[tuple[str, datetime]]]], now: datetime, *,
                       window: timedelta = WINDOW, limit: int = MAX_TIMELINE_NODES) -> list[tuple[str, list[Span]]]:
    """One row per node (the first `limit` given), its states as spans cut to the last `window`.
    A node's time after it was removed is not drawn (it no longer exists); a node with nothing
    left in the window has no row."""
    start = now - window
    rows = []
    for node_id, history in nodes[:limit]:
        ordered = sorted(history, key=lambda change: change[1])
        cut = [Span(s.state, max(s.start, start), s.end) for s in spans(ordered, until=now)
               if s.state != "removed" and s.end > start]
        if cut:
            rows.append((node_id, cut))  # charts.timeline shortens it (the whole id in its title)
    return rows


def power_of(state: str | None) -> str:
    """The power an instance's displayed state says it has: on, off, restart, or gone (deleting)."""
    if state in ("Stopped", "Stopping"):
        return "off"
    if state == "Restarting":
        return "restart"
    if state == "Deleting":
        return "gone"
    return "on"


def instance_actions(compute: dict[str, Any], idle_time_s: float | None) -> dict[str, str | None]:
    """For each button (start, stop, restart, snooze): None when it applies now, else why not.
    The same refusals as InstanceService's, said before the click (the service still decides)."""
    power = power_of(compute.get("state"))
    job = (compute.get("node") or {}).get("job")
    name = compute.get("name")
    gone = f"compute instance {name} is being deleted"
    busy = f"job {job} is running on it; cancel it or wait until it ends" if job else None
    return {
        "start": gone if power == "gone" else "it is already on" if power == "on" else None,
        "stop": gone if power == "gone" else "it is already stopped or stopping" if power == "off" else busy,
        "restart": gone if power == "gone" else "it is not running" if power != "on" else busy,
        "snooze": (gone if power == "gone" else "it is not running" if power != "on"
                   else "it has no idle shutdown to postpone" if idle_time_s is None else None),
    }


def idle_explanation(compute: dict[str, Any], idle_time_s: float | None, now: datetime) -> dict[str, Any]:
    """What keeps an instance busy, or when idle shutdown stops it, as sentences: a headline and
    details; `stops_at` (ISO) when an idle shutdown is coming."""
    state = compute.get("state")
    idle = compute.get("idleness") or {}
    node = compute.get("node") or {}
    reason = compute.get("power_reason")
    setting = (f"Idle shutdown: after {duration(idle_time_s)} without a job or an open session."
               if idle_time_s is not None else "Idle shutdown is off (set idle_time_before_shutdown_minutes).")
    details = [setting]
    stops_at = as_datetime(idle.get("stops_at"))
    power = power_of(state)
    if power == "gone":
        headline = "Being deleted: its node is released, then it goes."
    elif power == "off":
        headline = ("Stopped" if state == "Stopped" else "Stopping: its node is being released") + \
            (f" ({reason})." if reason else ".")
        stops_at = None
    elif power == "restart":
        headline = "Restarting: its node is replaced" + (f" ({reason})." if reason else ".")
        stops_at = None
    elif idle.get("idle"):
        since = as_datetime(idle.get("idle_since"))
        headline = f"Idle since {when(since)} UTC: no job runs and no session is open."
        if stops_at is not None:
            left = (stops_at - now).total_seconds()
            headline += (f" Idle shutdown stops it at {when(stops_at)} UTC (in {duration(left)}) unless it is used "
                         "or snoozed." if left > 0 else " Idle shutdown is due now.")
        elif idle.get("why_not"):
            headline += f" It is not stopped: {idle['why_not']}."
    else:
        why = idle.get("why_not") or "it is in use"
        headline = f"Not idle: {why}." + (" The idle-shutdown clock starts once it is idle." if idle_time_s is not None else "")
    snoozed = as_datetime(compute.get("snoozed_until"))
    if snoozed is not None and snoozed > now and power == "on":
        details.append(f"Snoozed: idle shutdown not before {when(snoozed)} UTC.")
    if node.get("sessions"):
        details.append("Open sessions: " + ", ".join(node["sessions"]) + ".")
    if node.get("last_activity_at"):
        details.append(f"Last session activity: {when(node['last_activity_at'])} UTC.")
    scheduled = compute.get("next_scheduled")
    if scheduled:
        details.append(f"Next scheduled {scheduled.get('action')}: {when(scheduled.get('at'))} UTC.")
    if reason and power == "on":
        details.append(f"Last power change: {reason}.")
    return {"headline": headline, "details": details, "stops_at": stops_at.isoformat() if stops_at else None}


def quota_rows(usage: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`list-usage` rows as (shown, others): the totals and every family with a use or a quota
    first; the families with neither apart (the catalog has many)."""
    shown, others = [], []
    for row in usage:
        used = int(row.get("currentValue") or 0)
        limit = row.get("limit")
        limit = None if limit is None or limit < 0 else int(limit)
        percent = min(100.0, 100.0 * used / limit) if limit else (100.0 if limit == 0 and used else 0.0)
        name = row.get("name") or {}
        item = {"name": name.get("localizedValue") or name.get("value") or "?", "scope": name.get("value"),
                "kind": str(row.get("type", "")).split("/")[-2] if "/" in str(row.get("type", "")) else "",
                "used": used, "limit": limit, "percent": round(percent, 1),
                "level": "bad" if limit is not None and used >= limit > 0 else
                         "wait" if percent >= 80 else "ok"}
        total = item["kind"] in ("dedicatedCores", "lowPriorityCores")
        (shown if total or used or limit is not None else others).append(item)
    return shown, others
