"""The jobs area: the list (filters, paging, refreshed in place), a job's page (status, timeline, cost,
why it waits, live log, metric charts, parameters, inputs/outputs and files, nodes, Cancel) and the
data routes its script polls (log bytes from an offset, metrics as steps and values).

Every read goes through the services (JobService, ArtifactService, tracking); a service's CibleError
becomes a message page (a page), a fragment with role="alert" (an htmx action) or a plain answer
(a data route), never a 500 and never JSON to a browser page.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from cible.core.errors import CibleError, NotFoundError
from cible.core.lifecycle.jobs import TERMINAL, JobStatus, is_terminal
from cible.server.routers.jobs import LOG_CHUNK, MAX_LOG_OFFSET, require_creator
from cible.server.services.costs import SERVERLESS_PREFIX, node_costs
from cible.server.services.jobs import PARENT_TYPES
from cible.server.store.rows import NodeRow, NodeStateRow
from cible.server.studio.charts import spans, timeline
from cible.server.studio.downloads import download
from cible.server.studio.web import (SECURITY_HEADERS, Checked, Signed, Viewer, as_datetime, between, message_page,
                                     render, templates)
from cible.server.tracking import metric_points, run_metrics

router = APIRouter(include_in_schema=False)

PER_PAGE = 50
MAX_PAGE = (2**31 - 1) // PER_PAGE  # the service's skip bound
FILES_SHOWN = 200  # a job's page lists this many of its files; the rest are counted
METRIC_KEYS_SHOWN = 24  # charts drawn per job (each is one MLflow request per refresh)
TRACKING_TIMEOUT_S = 3.0  # how long a metrics or params read waits for MLflow
TERMINAL_NAMES = sorted(s.value for s in TERMINAL)
STATUSES = [s.value for s in JobStatus]
CANONICAL_STATUS = {s.lower(): s for s in STATUSES}  # `running` -> `Running`, as JobService.list reads it
LOG_FILE = "artifacts/user_logs/std_log.txt"
STOP_POLLING = 286  # htmx stops polling an element answered with this status


def _job_url(name: str, *rest: str) -> str:
    return "/".join([f"/jobs/{quote(name, safe='')}", *rest])


# -- the list -------------------------------------------------------------------------------------
@router.get("/jobs")
def jobs_list(request: Request, who: Signed, status: str = "", compute: str = "", experiment: str = "",
              page: str = "1", seen: str = "") -> Response:
    """Newest first, 50 a page. An htmx poll (HX-Request) gets the results fragment alone, or 204 when
    nothing in it changed since `seen` (its digest)."""
    try:
        number = min(max(int(page), 1), MAX_PAGE)
    except ValueError:
        number = 1
    filters = {k: v.strip() for k, v in (("status", status), ("compute", compute), ("experiment", experiment))
               if v.strip()}
    if "status" in filters:  # `running` filters as the service takes it (any case): the select shows `Running`
        filters["status"] = CANONICAL_STATUS.get(filters["status"].lower(), filters["status"])
    problem, listing = None, {"value": [], "count": 0}
    try:
        listing = request.app.state.jobs.list(skip=(number - 1) * PER_PAGE, top=PER_PAGE,
                                              **_service_filters(filters))
        last = max(1, math.ceil(listing["count"] / PER_PAGE))
        if number > last:  # past the end (an old link, a hand-typed page): the last page, pager and all
            number = last
            listing = request.app.state.jobs.list(skip=(number - 1) * PER_PAGE, top=PER_PAGE,
                                                  **_service_filters(filters))
    except CibleError as exc:  # a status typed into the URL that is no status
        problem = exc.message
    jobs = listing["value"]
    now = request.app.state.clock.now()
    costs = page_costs(request.app.state.store, jobs, now)
    total = listing["count"]
    pages = max(1, math.ceil(total / PER_PAGE))
    number = min(number, pages)  # jobs deleted between the two reads: still never a page past the last
    context = {
        "jobs": jobs, "costs": costs, "now": now, "total": total, "page_number": number, "pages": pages,
        "problem": problem, "filters": filters,
        "prev_url": _list_url(filters, number - 1) if number > 1 else None,
        "next_url": _list_url(filters, number + 1) if number < pages else None,
        "first_shown": (number - 1) * PER_PAGE + 1 if jobs else 0,
        "last_shown": (number - 1) * PER_PAGE + len(jobs),
    }
    table = templates.get_template("jobs/_table.html").render(context)
    digest = hashlib.sha256(table.encode()).hexdigest()[:16]
    fragment = request.headers.get("hx-request") and not request.headers.get("hx-history-restore-request")
    if fragment and seen == digest:
        return Response(status_code=204, headers=SECURITY_HEADERS)
    poll_url = _list_url(filters, number)
    context.update(table=table, digest=digest, poll_url=poll_url, statuses=STATUSES)
    if fragment:
        return render(request, who, "jobs/_results.html", **context)
    return render(request, who, "jobs/list.html", status_code=400 if problem else 200, **context)


def _service_filters(filters: dict[str, str]) -> dict[str, str]:
    return {"status": filters.get("status"), "compute": filters.get("compute"),
            "experiment": filters.get("experiment")}


def _list_url(filters: dict[str, str], number: int) -> str:
    query = {**filters, **({"page": str(number)} if number > 1 else {})}
    return "/jobs" + (f"?{urlencode(query)}" if query else "")


def page_costs(store, jobs: list[dict[str, Any]], now: datetime) -> dict[str, float]:  # noqa: ANN001
    """What each listed job's nodes cost (a serverless job: its pool's nodes), in a few queries for the
    whole page whatever its size (never one per job). Jobs that ran on no node are left out; a sweep's
    or pipeline's cost (its children's) is on its own page."""
    pools = {j["target"]: j["name"] for j in jobs
             if isinstance(j.get("target"), str) and j["target"].startswith(SERVERLESS_PREFIX)}
    names = {j["name"] for j in jobs if j.get("target") and j["target"] not in pools
             and j.get("type") not in PARENT_TYPES and j.get("target") != "local"}
    if not pools and not names:
        return {}
    with store.session() as session:
        ids: set[str] = set()
        if names:
            ids |= set(session.scalars(select(NodeStateRow.node_id).where(NodeStateRow.job_name.in_(names))))
        if pools:
            ids |= set(session.scalars(select(NodeRow.node_id).where(NodeRow.compute.in_(list(pools)))))
        costs = node_costs(session, now, node_ids=sorted(ids)) if ids else []
    spent: dict[str, float] = {}
    for cost in costs:
        if cost.compute in pools:
            job = pools[cost.compute]
            spent[job] = spent.get(job, 0.0) + cost.cost
            continue
        for job, amount in cost.by_job.items():
            if job in names:
                spent[job] = spent.get(job, 0.0) + amount
    return spent


# -- a job's page ---------------------------------------------------------------------------------
@router.get("/jobs/{name}")
def job_page(name: str, request: Request, who: Signed) -> Response:
    return _job_page(request, who, name)


def _job_page(request: Request, who: Viewer, name: str, problem: str | None = None,
              status_code: int = 200) -> Response:
    try:
        context = summary_context(request, name)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "Job not found" if isinstance(exc, NotFoundError)
                            else "This job cannot be shown", exc.message)
    job = context["job"]
    context.update(
        problem=problem, **files_context(request, name),
        inputs=_ios(job.get("inputs")), outputs=_ios(job.get("outputs")), output_uris=job.get("output_uris") or {},
        log_url=_job_url(name, "log"), metrics_url=_job_url(name, "metrics"), params_url=_job_url(name, "params"),
        files_url=_job_url(name, "files"), log_file_url=_file_url(name, LOG_FILE),
        terminal_names=" ".join(TERMINAL_NAMES),
    )
    return render(request, who, "jobs/job.html", status_code=status_code, **context)


def files_context(request: Request, name: str) -> dict[str, Any]:
    """The job's first FILES_SHOWN files (every root: logs, artifacts, named outputs) with their links."""
    try:
        listing = request.app.state.artifacts.list_files(name, output_name=None, everything=True, top=FILES_SHOWN)
    except CibleError as exc:
        return {"files": [], "files_more": 0, "files_problem": exc.message}
    files = [{**f, "url": _file_url(name, f["path"])} for f in listing["value"]]
    return {"files": files, "files_more": max(0, listing["count"] - len(files)), "files_problem": None}


@router.get("/jobs/{name}/files")
def job_files(name: str, request: Request, who: Signed) -> Response:
    """The files list, as a fragment the page polls while the job runs (a 286 once it has ended: the
    last refresh, and htmx stops polling)."""
    try:
        status = request.app.state.jobs.run_handle(name)[0]
    except CibleError as exc:
        return render(request, who, "jobs/_files.html", status_code=STOP_POLLING, name=name, terminal=True,
                      files=[], files_more=0, files_problem=exc.message)
    terminal = is_terminal(status)
    return render(request, who, "jobs/_files.html", status_code=STOP_POLLING if terminal else 200, name=name,
                  terminal=terminal, **files_context(request, name))


@router.get("/jobs/{name}/summary")
def job_summary(name: str, request: Request, who: Signed) -> Response:
    """The header of a job's page (status, Cancel, props, cost, queue reason, timeline): what the page
    polls every 2 s while the job has not ended."""
    return _summary(request, who, name)


def _summary(request: Request, who: Viewer, name: str, problem: str | None = None) -> Response:
    try:
        context = summary_context(request, name)
    except CibleError as exc:  # deleted meanwhile: say so, and stop the polling
        return render(request, who, "jobs/_gone.html", status_code=STOP_POLLING, message=exc.message)
    return render(request, who, "jobs/_summary.html", problem=problem, **context)


def summary_context(request: Request, name: str) -> dict[str, Any]:
    job = request.app.state.jobs.get(name)
    now = request.app.state.clock.now()
    terminal = is_terminal(job["status"])
    history = job.get("status_history") or []
    changes = [(h["status"], as_datetime(h["at"])) for h in history if as_datetime(h["at"]) is not None]
    until = as_datetime(job.get("end_time")) if terminal and job.get("end_time") else now
    if changes:
        until = max(until, changes[-1][1])
    rows = []
    for i, h in enumerate(history):  # how long each status lasted (the current one: so far)
        if i + 1 < len(history):
            lasted = between(h["at"], history[i + 1]["at"])
        else:
            lasted = "" if terminal else f"{between(h['at'], now)} so far"
        rows.append({**h, "lasted": lasted})
    figure = timeline([("Status", spans(changes, until))], label=_timeline_label(job, changes),
                      element_id="status-timeline")
    cost = job.get("cost") or {}
    spent_key = "actual" if "actual" in cost else "so_far"
    return {"job": job, "name": name, "now": now, "terminal": terminal, "history_rows": rows,
            "timeline": figure, "cost": cost, "spent": cost.get(spent_key), "spent_key": spent_key,
            "summary_url": _job_url(name, "summary"), "cancel_url": _job_url(name, "cancel"),
            "children_url": _children_url(job), "compute_url": _compute_url(job),
            "parent_url": _job_url(job["parent_job_name"]) if job.get("parent_job_name") else None,
            "duration": between(job.get("start_time"), job.get("end_time") or now) if job.get("start_time") else "—"}


def _timeline_label(job: dict[str, Any], changes: list[tuple[str, datetime]]) -> str:
    states = " → ".join(state for state, _ in changes) or "no status yet"
    return f"Status timeline of job {job['name']}: {states}"


def _children_url(job: dict[str, Any]) -> tuple[str, str] | None:
    if job.get("type") == "sweep":
        return _job_url(job["name"], "trials"), "Trials"
    if job.get("type") == "pipeline":
        return _job_url(job["name"], "steps"), "Steps"
    return None


def _compute_url(job: dict[str, Any]) -> str | None:
    target = job.get("target") or ""
    if target.startswith("("):  # a sweep's or pipeline's: the compute its children default to
        target = str(job.get("compute") or "").removeprefix("azureml:")
    if not target or target.startswith(SERVERLESS_PREFIX) or target == "serverless":
        return None
    return f"/computes/{quote(target, safe='')}"


def _file_url(name: str, path: str) -> str:
    return _job_url(name, "files", quote(path, safe="/"))


def _ios(entries: Any) -> list[dict[str, Any]]:
    """A job's inputs or outputs as rows: name, type, value or path, mode."""
    if not isinstance(entries, dict):
        return []
    rows = []
    for key, value in entries.items():
        if isinstance(value, dict):
            rows.append({"name": key, "type": value.get("type", ""), "value": value.get("path") or value.get("value")
                         or value.get("name") or "", "mode": value.get("mode", "")})
        else:
            rows.append({"name": key, "type": "literal", "value": "" if value is None else str(value), "mode": ""})
    return rows


@router.post("/jobs/{name}/cancel")
def cancel_job(name: str, request: Request, who: Checked) -> Response:
    """Cancel (htmx: the refreshed header; a plain form: back to the page). A job that has ended
    already: its message, in the header's alert."""
    htmx = bool(request.headers.get("hx-request"))
    problem = None
    try:
        who.require("POST", f"/api/v1/jobs/{name}:cancel")
        require_creator(request, name, "cancel")
        request.app.state.jobs.cancel(name, reason="cancel requested from the studio", by=who.user)
    except NotFoundError as exc:
        if htmx:
            return render(request, who, "jobs/_gone.html", status_code=STOP_POLLING, message=exc.message)
        return message_page(request, who, 404, "Job not found", exc.message)
    except CibleError as exc:
        problem = exc.message
    if htmx:
        return _summary(request, who, name, problem)
    if problem:
        return _job_page(request, who, name, problem=problem, status_code=409)
    return RedirectResponse(_job_url(name), status_code=303, headers=SECURITY_HEADERS)


@router.get("/jobs/{name}/params")
def job_params(name: str, request: Request, who: Signed) -> Response:
    """The run's parameters (MLflow), as a fragment the page loads after its first paint (and every 10 s
    while the job runs: a run logs its parameters as it starts)."""
    try:
        job = request.app.state.jobs.get(name, history=False)
    except CibleError as exc:
        return render(request, who, "jobs/_params.html", status_code=STOP_POLLING, params=[], hyperparameters=[],
                      note=exc.message)
    params, note = {}, None
    tracking = request.app.state.tracking
    if job.get("type") in PARENT_TYPES:
        note = "A sweep's or pipeline's parameters are its trials' or steps'."
    elif tracking is None:
        note = "MLflow tracking is off in this workspace: no parameters were recorded."
    else:
        summary = request.app.state.artifacts.tracking_summary(job, tracking)
        params = summary.get("params") or {}
        note = summary.get("metrics_unavailable") or (None if summary.get("mlflow_run_id")
                                                       else "This job has no MLflow run yet.")
    hyper = (job.get("properties") or {}).get("hyperparameters") if isinstance(job.get("properties"), dict) else None
    # A 286 once the job has ended: the page polls this while it runs, and htmx stops at a 286.
    return render(request, who, "jobs/_params.html", status_code=STOP_POLLING if is_terminal(job["status"]) else 200,
                  params=sorted(params.items()), note=note,
                  hyperparameters=sorted(hyper.items()) if isinstance(hyper, dict) else [])


# -- data routes ----------------------------------------------------------------------------------
@router.get("/jobs/{name}/log")
def job_log(name: str, request: Request, who: Signed,
            offset: int = Query(0, ge=0, le=MAX_LOG_OFFSET)) -> Response:
    """Up to 1 MiB of the job's log from `offset`, as the REST route reads it."""
    try:
        status, data, next_offset = request.app.state.artifacts.read_log(name, offset, LOG_CHUNK)
    except CibleError as exc:
        return Response(exc.message, status_code=exc.http_status, media_type="text/plain; charset=utf-8",
                        headers=SECURITY_HEADERS)
    return Response(content=data, media_type="text/plain; charset=utf-8",
                    headers={**SECURITY_HEADERS, "X-Cible-Next-Offset": str(next_offset),
                             "X-Cible-Job-Status": status})


@router.get("/jobs/{name}/metrics")
def job_metrics(name: str, request: Request, who: Signed) -> Response:
    """The run's metrics, each as steps and values: {"status", "terminal", "metrics", "unavailable", "retry",
    "run_id", "more"}. MLflow off or down is said in "unavailable" (a 200: the page shows why)."""
    try:
        job = request.app.state.jobs.get(name, history=False)
    except CibleError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.http_status, headers=SECURITY_HEADERS)
    answer: dict[str, Any] = {"status": job["status"], "terminal": is_terminal(job["status"]), "metrics": {},
                              "unavailable": None, "retry": True, "run_id": None, "more": 0}
    tracking = request.app.state.tracking
    if tracking is None:  # "retry": False, asking again will not change it
        answer["unavailable"], answer["retry"] = ("MLflow tracking is off in this workspace, so no metrics are "
                                                  "recorded."), False
    elif job.get("type") in PARENT_TYPES:
        answer["unavailable"], answer["retry"] = ("A sweep's or pipeline's metrics are its trials' or steps': see "
                                                  "them there."), False
    else:
        try:
            run_id = request.app.state.artifacts.run_of(name, job["experiment_name"])
            run = run_metrics(tracking, run_id, timeout=TRACKING_TIMEOUT_S) if run_id else None
            keys = sorted(run["metrics"]) if run else []
            answer["run_id"], answer["more"] = run_id, max(0, len(keys) - METRIC_KEYS_SHOWN)
            for key in keys[:METRIC_KEYS_SHOWN]:
                steps, values = metric_points(tracking, run_id, key, timeout=TRACKING_TIMEOUT_S)
                answer["metrics"][key] = {"steps": steps, "values": [v if math.isfinite(v) else None for v in values]}
        except CibleError as exc:
            answer["metrics"], answer["unavailable"] = {}, exc.message
    return JSONResponse(answer, headers=SECURITY_HEADERS)


@router.get("/jobs/{name}/files/{path:path}")
def job_file(name: str, path: str, request: Request, who: Signed) -> Response:
    """One of the job's files, as a download (never shown inline: it is the job's, not the studio's)."""
    try:
        found = request.app.state.artifacts.file_path(name, path)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "File not found", exc.message)
    return download(found)


__all__ = ["router", "page_costs"]
