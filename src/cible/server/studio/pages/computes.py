"""The studio's COMPUTES area: every compute with its state, the vCPU quotas and cost by compute
(/computes); a cluster's nodes, their states over time and its jobs, or an instance's power,
idleness and its Start/Stop/Restart/Snooze buttons (/computes/{name}).

Everything is read through the services the REST routes call (ComputeService, InstanceService,
QuotaService, CostService); the node-state history, which no service answers, is read from the
store here (bounded: the most recent nodes of the last day).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import desc, func, or_, select

from cible.core import catalog
from cible.core.errors import CibleError, InvalidRequestError
from cible.core.lifecycle.nodes import NodeState
from cible.core.models.computes import idle_time_seconds
from cible.core.planning.costs import effective_price
from cible.server.services.paging import MAX_TOP
from cible.server.store.rows import NodeRow, NodeStateRow
from cible.server.studio.charts import state_class, timeline
from cible.server.studio.node_charts import (
    MAX_TIMELINE_NODES,
    WINDOW,
    compute_class,
    idle_explanation,
    instance_actions,
    node_timeline_rows,
    quota_rows,
)
from cible.server.studio.web import (
    SECURITY_HEADERS,
    Checked,
    Signed,
    Viewer,
    duration,
    form_field,
    message_page,
    render,
    when,
)

router = APIRouter(include_in_schema=False)

LIST_CAP = 5000  # computes on the list page (read a page of MAX_TOP at a time)
NODES_SHOWN = 500  # rows of a cluster's nodes table
JOBS_SHOWN = 25  # the most recent jobs of a compute
EVENTS_SHOWN = 12  # an instance's most recent events
SNOOZE_CHOICES = ((15, "15 minutes"), (30, "30 minutes"), (60, "1 hour"), (120, "2 hours"), (240, "4 hours"),
                  (480, "8 hours"), (1440, "24 hours"))
POWER_VERBS = ("start", "stop", "restart")
CLUSTER_TYPES = ("amlcompute", "serverless")
DONE = {"start": "Start requested: its node is starting (Starting, then Running).",
        "stop": "Stop requested: its node is being released (Stopping, then Stopped).",
        "restart": "Restart requested: its node is being replaced (Restarting, then Running)."}


def _all(fetch_page: Callable[[int], dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """The items of a paged service answer, page after page, up to `cap`."""
    items: list[dict[str, Any]] = []
    skip = 0
    while len(items) < cap:
        got = fetch_page(skip)
        items += got["value"]
        if got.get("next_skip") is None:
            break
        skip = got["next_skip"]
    return items[:cap]


def _is_htmx(request: Request) -> bool:
    return bool(request.headers.get("hx-request"))


def _idle_time(compute: dict[str, Any]) -> float | None:
    try:
        return idle_time_seconds(compute.get("idle_time_before_shutdown_minutes"),
                                 compute.get("idle_time_before_shutdown"))
    except ValueError:
        return None


# -- the list -------------------------------------------------------------------------------------
def list_row(c: dict[str, Any]) -> dict[str, Any]:
    """A compute as a row of the list: what it is, its state, its nodes and idle settings, its cost."""
    kind = c.get("type", "?")
    row: dict[str, Any] = {"name": c.get("name", "?"), "type": kind, "size": c.get("size"),
                           "provisioning": c.get("provisioning_state"), "error": (c.get("error") or {}).get("message"),
                           "cost": (c.get("cost") or {}).get("so_far"), "nodes": None, "idle": None, "power": None}
    if kind == "computeinstance":
        row["state"] = c.get("state") or c.get("provisioning_state")
        row["power"] = c.get("state")
        idle = _idle_time(c)
        row["idle"] = f"shut down after {duration(idle)} idle" if idle is not None else "no idle shutdown"
        row["nodes"] = {"current": c.get("current_node_count"), "min": None, "max": 1}
    elif kind in CLUSTER_TYPES:
        row["state"] = c.get("allocation_state") or c.get("provisioning_state")
        row["nodes"] = {"current": c.get("current_node_count"), "min": c.get("min_instances"),
                        "max": c.get("max_instances")}
        scale = c.get("idle_time_before_scale_down")
        row["idle"] = f"scale down after {duration(scale)} idle" if scale is not None else None
    else:
        row["state"] = c.get("state") or c.get("provisioning_state")
        if kind == "local":
            row["idle"] = f"{c.get('max_concurrent_jobs')} jobs at once"
    row["state_class"] = compute_class(row["state"])
    if row["provisioning"] in ("Succeeded", row["state"]):
        row["provisioning"] = None  # said only when it adds something (Deleting, Failed)
    return row


@router.get("/computes")
def computes_page(request: Request, who: Signed) -> Response:
    state = request.app.state
    try:
        computes = _all(lambda skip: state.computes.list(skip=skip, top=MAX_TOP), LIST_CAP)
        usage, others = quota_rows(state.quotas.list_usage()["value"])
        costs = state.costs.report("compute", top=MAX_TOP)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "Computes unavailable", exc.message)
    names = {c.get("name") for c in computes}
    cost_lines = [{**line, "link": _cost_link(line["key"], names)} for line in costs["value"]]
    return render(request, who, "computes/list.html", title="Computes", computes=[list_row(c) for c in computes],
                  capped=len(computes) >= LIST_CAP, quotas=usage, other_quotas=others, costs=costs,
                  cost_lines=cost_lines)


def _cost_link(key: str, names: set[str]) -> str | None:
    if key in names:
        return f"/computes/{quote(key, safe='')}"
    if key.startswith("serverless:"):  # a serverless job's own nodes: the job says what they were
        return f"/jobs/{quote(key.removeprefix('serverless:'), safe='')}"
    return None


# -- one compute ----------------------------------------------------------------------------------
@router.get("/computes/{name}")
def compute_page(name: str, request: Request, who: Signed) -> Response:
    state = request.app.state
    try:
        compute = state.computes.get(name)
        kind = compute.get("type")
        now = state.clock.now()
        if kind == "computeinstance":
            return render(request, who, "computes/instance.html", title=f"Compute instance {name}",
                          **instance_context(request, compute, now))
        common = {"compute": compute, "size_info": size_info(compute), "jobs": jobs_on(request, name),
                  "name": name, "now": now}
        if kind in CLUSTER_TYPES:
            return render(request, who, "computes/cluster.html", title=f"Compute cluster {name}",
                          **common, **cluster_context(request, compute, now))
        return render(request, who, "computes/other.html", title=f"Compute {name}", **common,
                      state_class=compute_class(compute.get("state") or compute.get("provisioning_state")))
    except CibleError as exc:
        title = "Compute not found" if exc.http_status == 404 else "Compute unavailable"
        return message_page(request, who, exc.http_status, title, exc.message)


def size_info(compute: dict[str, Any]) -> dict[str, Any] | None:
    """The compute's VM size from the catalog: vCPUs, memory, GPUs and price (None without one)."""
    name = compute.get("size")
    if not name or compute.get("type") == "local":
        return None
    try:
        size = catalog.get_size(name)
    except CibleError:
        return {"name": name, "unknown": True}
    low = compute.get("tier") == "low_priority"
    return {"name": size.name, "unknown": False, "family": size.family, "vcpus": size.vcpus,
            "memory_gb": size.memory_gb, "gpus": size.gpus, "gpu_model": size.gpu_model,
            "price": effective_price(size.price_per_hour, low), "low_priority": low}


def jobs_on(request: Request, name: str) -> list[dict[str, Any]]:
    """The most recent jobs that ran or run on compute `name` (JobService.list's compute filter: a
    sweep or pipeline stands for its trials or steps), newest first."""
    jobs = request.app.state.jobs.list(compute=name, top=JOBS_SHOWN)["value"]
    return [{"name": j.get("name"), "display_name": j.get("display_name"), "job_type": j.get("type"),
             "status": j.get("status"), "created_at": (j.get("creation_context") or {}).get("created_at"),
             "started_at": j.get("start_time"), "ended_at": j.get("end_time"),
             "parent_job_name": j.get("parent_job_name")} for j in jobs]


def cluster_context(request: Request, compute: dict[str, Any], now: datetime) -> dict[str, Any]:
    name = compute["name"]
    state = request.app.state
    nodes = _all(lambda skip: state.computes.nodes(name, skip=skip, top=MAX_TOP), NODES_SHOWN)
    recent, since = node_history(request, name, now)
    rows = node_timeline_rows(recent, now)
    chart = timeline(rows, label=f"Node states of compute {name} over the last {WINDOW.total_seconds() / 3600:g} "
                                 f"hours, one row per node ({len(rows)} nodes)", element_id="node-timeline") \
        if rows else None
    for node in nodes:
        node["since"] = since.get(node.get("node_id"))
        node["state_class"] = state_class(str(node.get("node_state") or ""))
    settings = compute.get("cible") or {}
    return {"nodes": nodes, "nodes_capped": len(nodes) >= NODES_SHOWN, "timeline": chart,
            "timeline_nodes": MAX_TIMELINE_NODES, "provider": settings.get("provider") or "local",
            "state_class": compute_class(compute.get("allocation_state")),
            "provisioning_class": compute_class(compute.get("provisioning_state")),
            "counts": {k: v for k, v in (compute.get("node_state_counts") or {}).items() if v},
            "pool_job": compute.get("job") if compute.get("type") == "serverless" else None}


def node_history(request: Request, compute: str, now: datetime) -> tuple[list[tuple[str, list[tuple[str, datetime]]]],
                                                                          dict[str, datetime]]:
    """The state changes of the compute's most recent nodes (those not gone, and those gone within the
    window), oldest node first; and, for every node not gone, since when it is in its state."""
    start = now - WINDOW
    with request.app.state.store.session() as session:
        nodes = session.execute(
            select(NodeRow.node_id, NodeRow.state, NodeRow.created_at)
            .where(NodeRow.compute == compute, or_(NodeRow.state != NodeState.REMOVED.value, NodeRow.updated_at >= start))
            .order_by(desc(NodeRow.created_at), desc(NodeRow.node_id)).limit(MAX_TIMELINE_NODES)).all()
        changes: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
        if nodes:
            for node_id, to_state, at in session.execute(
                    select(NodeStateRow.node_id, NodeStateRow.to_state, NodeStateRow.at)
                    .where(NodeStateRow.node_id.in_([n.node_id for n in nodes])).order_by(NodeStateRow.id)):
                changes[node_id].append((to_state, at))
        since = dict(session.execute(
            select(NodeStateRow.node_id, func.max(NodeStateRow.at))
            .join(NodeRow, NodeRow.node_id == NodeStateRow.node_id)
            .where(NodeRow.compute == compute, NodeRow.state != NodeState.REMOVED.value)
            .group_by(NodeStateRow.node_id)).all())
    recent = [(n.node_id, changes.get(n.node_id) or [(n.state, n.created_at)]) for n in reversed(nodes)]
    return recent, since


# -- an instance ----------------------------------------------------------------------------------
def instance_context(request: Request, compute: dict[str, Any], now: datetime, *, notice: str | None = None,
                     alert: str | None = None) -> dict[str, Any]:
    idle_time = _idle_time(compute)
    spec_schedules = (compute.get("schedules") or {}).get("compute_start_stop") or []
    return {"compute": compute, "name": compute["name"], "size_info": size_info(compute),
            "state": compute.get("state"), "state_class": compute_class(compute.get("state")),
            "idle": idle_explanation(compute, idle_time, now), "blocked": instance_actions(compute, idle_time),
            "snooze_choices": SNOOZE_CHOICES, "schedules": [_schedule(s) for s in spec_schedules],
            "events": list(reversed(compute.get("events") or []))[:EVENTS_SHOWN],
            "provider": (compute.get("cible") or {}).get("provider") or "local",
            "jobs": jobs_on(request, compute["name"]), "notice": notice, "alert": alert, "now": now}


def _schedule(schedule: dict[str, Any]) -> dict[str, Any]:
    trigger = schedule.get("trigger") or {}
    if trigger.get("type") == "cron":
        when_text = f"cron {trigger.get('expression')}"
    else:
        pattern = trigger.get("schedule") or {}
        when_text = f"every {trigger.get('interval')} {trigger.get('frequency')}"
        if pattern:
            hours = ", ".join(f"{h:02d}:{m:02d}" for h in pattern.get("hours", []) for m in pattern.get("minutes", []))
            days = ", ".join(pattern.get("week_days") or []) or ", ".join(map(str, pattern.get("month_days") or []))
            when_text += f" at {hours}" + (f" on {days}" if days else "")
    return {"action": schedule.get("action"), "state": schedule.get("state", "enabled"), "when": when_text,
            "time_zone": trigger.get("time_zone") or "UTC"}


def _instance_or_fragment(request: Request, who: Viewer, name: str, template: str, element_id: str,
                          **extra: Any) -> Response:
    """An instance's state fragment; a compute that is gone or no instance: the reason, in an alert."""
    try:
        compute = request.app.state.computes.get(name)
        if compute.get("type") != "computeinstance":
            raise InvalidRequestError(f"compute '{name}' is of type {compute.get('type')}; only compute instances have "
                                      "a power state")
    except CibleError as exc:
        # htmx swaps only 2xx answers: the reason replaces the panel (and ends its polling).
        return render(request, who, "computes/_gone.html", status_code=200 if _is_htmx(request) else exc.http_status,
                      message=exc.message, element_id=element_id)
    return render(request, who, template, **instance_context(request, compute, request.app.state.clock.now(), **extra))


@router.get("/computes/{name}/state")
def instance_state(name: str, request: Request, who: Signed) -> Response:
    """The live part of an instance's page (state, idleness, buttons): the page polls it every 2 s."""
    return _instance_or_fragment(request, who, name, "computes/_instance_live.html", "instance-live")


async def snooze_minutes(request: Request) -> str | None:
    """The snooze form's `minutes` (htmx and a plain form both send it form-encoded)."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return form_field(await request.body(), "minutes")
    return request.query_params.get("minutes")


Minutes = Annotated[str | None, Depends(snooze_minutes)]


@router.post("/computes/{name}/snooze")
def snooze_instance(name: str, request: Request, who: Checked, minutes: Minutes) -> Response:
    def snooze() -> str:
        try:
            value = float(minutes or "")
        except ValueError:
            raise InvalidRequestError("minutes: choose how long to snooze the idle shutdown") from None
        if not math.isfinite(value):  # float() reads "nan" and "inf": neither is a duration
            raise InvalidRequestError("minutes: give a number of minutes (more than 0, at most 24 hours)")
        who.require("POST", f"/api/v1/computes/{name}:snooze")
        until = request.app.state.instances.snooze(name, value, who.user, who.is_admin)["snoozed_until"]
        return f"Idle shutdown snoozed: not before {when(until)} UTC."

    return _act(request, who, name, snooze)


@router.post("/computes/{name}/{verb}")
def power_instance(name: str, verb: str, request: Request, who: Checked) -> Response:
    if verb not in POWER_VERBS:
        return message_page(request, who, 404, "Not found", f"'{verb}' is not an action of a compute instance "
                                                             "(start, stop, restart, snooze)")

    def power() -> str:
        who.require("POST", f"/api/v1/computes/{name}:{verb}")
        getattr(request.app.state.instances, verb)(name, who.user, who.is_admin)
        return DONE[verb]

    return _act(request, who, name, power)


def _act(request: Request, who: Viewer, name: str, action: Callable[[], str]) -> Response:
    """Do the action; htmx gets the refreshed panel with what happened (a refusal in an alert), a plain
    form is sent back to the page (or shown the refusal)."""
    try:
        notice, alert = action(), None
    except CibleError as exc:
        if not _is_htmx(request):
            return message_page(request, who, exc.http_status, "Refused", exc.message)
        notice, alert = None, exc.message
    if not _is_htmx(request):
        return RedirectResponse(f"/computes/{quote(name, safe='')}", status_code=303, headers=SECURITY_HEADERS)
    return _instance_or_fragment(request, who, name, "computes/_instance_panel.html", "instance-panel",
                                 notice=notice, alert=alert)
