"""Sweeps and pipelines: a sweep's trials (table, best trial, a plot of parameters against the
primary metric) and a pipeline's steps (a graph of their dependencies with their status, a table).

What is shown is what `job show` gives (ParentJobs.summary: trials with parameters and metric, the
best trial, steps with status), with each child's times from JobService.list(parent_job_name=...).
A step's dependencies are read from the pipeline's spec as the planner reads them: a step depends
on the steps whose outputs its inputs bind to (`${{parent.jobs.<step>.outputs.<o>}}`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cible.core.errors import CibleError
from cible.core.models.pipeline_steps import parse_binding
from cible.server.services.paging import MAX_TOP
from cible.server.studio import graphs
from cible.server.studio.web import Signed, message_page, render

router = APIRouter(include_in_schema=False)
MAX_CHILDREN = 5000  # the times of at most this many trials or steps are read (pages of MAX_TOP)


def _job(request: Request, who: Any, name: str, wanted: str) -> dict[str, Any] | Response:
    """The job, or the page that says why there is nothing of `wanted` type to show."""
    try:
        job = request.app.state.jobs.get(name)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "Job not found", exc.message)
    if job.get("type") != wanted:
        other = {"sweep": "trials", "pipeline": "steps"}.get(job.get("type"))
        return render(request, who, "parents/not_parent.html", status_code=404, job=job, wanted=wanted,
                      other=other, title=f"{name} is not a {wanted}")
    return job


def _children(request: Request, name: str) -> dict[str, dict[str, Any]]:
    """The parent's child jobs by name (their status, times, compute), oldest first."""
    found: dict[str, dict[str, Any]] = {}
    skip: int | None = 0
    while skip is not None and len(found) < MAX_CHILDREN:
        listing = request.app.state.jobs.list(parent_job_name=name, skip=skip, top=MAX_TOP)
        for child in listing["value"]:
            found[child["name"]] = child
        skip = listing.get("next_skip")
    return found


# ---- sweeps ---------------------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def best_reason(job: dict[str, Any]) -> str:
    """Why the best trial is the best: the goal on the primary metric, as the sweep decides it."""
    objective = job.get("objective") or {}
    metric = objective.get("primary_metric") or "the primary metric"
    goal = str(objective.get("goal") or "").lower()
    best = job.get("best_trial")
    if not best:
        return (f"No best trial yet: the best is the Completed trial whose last logged {metric} is the "
                f"{'highest' if goal == 'maximize' else 'lowest'} (goal: {goal or 'unknown'}).")
    value = best.get("metric")
    shown = graphs.number(value) if value is not None else "—"
    extreme = "highest" if goal == "maximize" else "lowest"
    return (f"Best trial: {best['name']}, the Completed trial with the {extreme} last logged {metric} "
            f"({shown}); the sweep's goal is to {goal or 'optimise'} {metric}.")


def trials_plot(job: dict[str, Any], trials: list[dict[str, Any]]) -> str:
    """A scatter of the one parameter against the metric, or parallel coordinates of them all."""
    objective = job.get("objective") or {}
    metric = objective.get("primary_metric") or "metric"
    goal = str(objective.get("goal") or "").lower()
    best = (job.get("best_trial") or {}).get("name")
    params = list(job.get("search_space") or {})
    for trial in trials:  # a parameter a trial has but the space does not name (never, but shown)
        params += [p for p in trial.get("parameters") or {} if p not in params]
    name = job.get("name", "")
    if len(params) == 1:
        p = params[0]
        label = f"Trials of sweep {name}: {p} against {metric} ({goal}), best trial {best or 'none yet'}"
        points = [(t["name"], (t.get("parameters") or {}).get(p), _float(t.get("metric"))) for t in trials]
        return graphs.scatter(points, x_label=p, y_label=metric, label=label, element_id="trials-plot", best=best)
    metric_axis = f"{metric} ({goal})" if goal else metric
    if metric_axis in params:
        metric_axis = f"{metric_axis} [metric]"
    rows = [(t["name"], {**(t.get("parameters") or {}),
                         **({metric_axis: _float(t.get("metric"))} if _float(t.get("metric")) is not None else {})})
            for t in trials]
    label = (f"Trials of sweep {name} in parallel coordinates: {', '.join(params)} and {metric}, best trial "
             f"{best or 'none yet'}")
    return graphs.parallel_coordinates([*params, metric_axis], rows, label=label, element_id="trials-plot", best=best,
                                       width=max(900, 140 * (len(params) + 1)))


@router.get("/jobs/{name}/trials")
def trials_page(name: str, request: Request, who: Signed) -> Response:
    job = _job(request, who, name, "sweep")
    if isinstance(job, Response):
        return job
    children = _children(request, name)
    trials = sorted(job.get("trials") or [], key=lambda t: (t.get("index", -1), t["name"]))
    params = list(job.get("search_space") or {})
    for trial in trials:
        params += [p for p in trial.get("parameters") or {} if p not in params]
    for trial in trials:
        child = children.get(trial["name"], {})
        trial["start_time"], trial["end_time"] = child.get("start_time"), child.get("end_time")
        given = trial.get("parameters") or {}
        trial["cells"] = ["—" if given.get(p) is None else graphs.number(given[p]) for p in params]
        trial["metric_text"] = "—" if trial.get("metric") is None else graphs.number(trial["metric"])
    best = (job.get("best_trial") or {}).get("name")
    return render(request, who, "parents/trials.html", title=f"Trials of {name}", job=job, trials=trials,
                  params=params, best=best, reason=best_reason(job), plot=trials_plot(job, trials),
                  objective=job.get("objective") or {}, counts=job.get("trial_counts") or {})


# ---- pipelines --------------------------------------------------------------------------------------


def step_specs(job: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's steps as its spec gives them: its own `jobs`, or those of the pipeline component
    it instantiates (a registered one as resolved at submit: `components`)."""
    if isinstance(job.get("jobs"), dict) and job["jobs"]:
        return job["jobs"]
    component = job.get("component")
    if isinstance(component, str):
        component = components.get(component)
    steps = component.get("jobs") if isinstance(component, dict) else None
    return steps if isinstance(steps, dict) else {}


def step_edges(steps: dict[str, Any]) -> list[tuple[str, str]]:
    """(before, after) for each step an input of `after` binds to the outputs of."""
    edges: list[tuple[str, str]] = []
    for name, step in steps.items():
        if not isinstance(step, dict):
            continue
        for given in (step.get("inputs") or {}).values():
            value = given.get("path") if isinstance(given, dict) else given
            try:
                binding = parse_binding(value)
            except ValueError:  # refused at submit; nothing to draw
                continue
            if binding is not None and binding.step is not None and binding.step in steps \
                    and (binding.step, name) not in edges:
                edges.append((binding.step, name))
    return edges


def _components(request: Request, name: str) -> dict[str, Any]:
    """The registered components the pipeline was resolved with at submit (kept with the job)."""
    from cible.server.store.rows import JobRow

    with request.app.state.store.session() as session:
        row = session.get(JobRow, name)
        record = row.children if row is not None else None
        return dict(record.components) if record is not None else {}


@router.get("/jobs/{name}/steps")
def steps_page(name: str, request: Request, who: Signed) -> Response:
    job = _job(request, who, name, "pipeline")
    if isinstance(job, Response):
        return job
    children = _children(request, name)
    specs = step_specs(job, _components(request, name) if isinstance(job.get("component"), str) else {})
    steps = list(job.get("steps") or [])
    for step in steps:
        child = children.get(step.get("job") or "", {})
        spec = specs.get(step["name"]) if isinstance(specs.get(step["name"]), dict) else {}
        step["start_time"], step["end_time"] = child.get("start_time"), child.get("end_time")
        step.setdefault("type", spec.get("type") or child.get("type"))
        step["reused"] = step.get("status") == "Reused"
    edges = step_edges(specs)
    label = (f"Steps of pipeline {name} and their dependencies: "
             + "; ".join(f"{s['name']} {s.get('status') or 'NotStarted'}" for s in steps))
    graph = graphs.dag([(s["name"], s.get("status") or "NotStarted") for s in steps], edges, label=label,
                       element_id="pipeline-graph")
    depends = {s["name"]: [a for a, b in edges if b == s["name"]] for s in steps}
    return render(request, who, "parents/steps.html", title=f"Steps of {name}", job=job, steps=steps, graph=graph,
                  depends=depends)
