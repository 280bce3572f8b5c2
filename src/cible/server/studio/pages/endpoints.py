"""Endpoints: online endpoints (deployments, replicas, traffic, request rate) and batch endpoints
(deployments, settings, the jobs their invocations made).

Read through EndpointService, DeploymentService and BatchEndpointService as the REST routes do. An
online endpoint's request figures are the gateway's (`metrics` in the endpoint: per deployment over
the last 5 minutes, as `online-endpoint show` prints them). Keys and tokens are never read here:
EndpointService.credentials is not called, and nothing of an endpoint's key salts is in its resource.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cible.core.errors import CibleError
from cible.server.studio.graphs import number
from cible.server.studio.web import Signed, message_page, render

router = APIRouter(include_in_schema=False)
RECENT_JOBS = 25
# Colours of the traffic shares (text beside each says its share: colour is never the only sign).
SHARE_COLOURS = ["#0550ae", "#1a7f37", "#8250df", "#bc4c00", "#57606a", "#bf3989"]


STATE_CLASSES = {"Succeeded": "ok", "Failed": "bad", "Creating": "run", "Updating": "run", "Deleting": "stop",
                 "Canceled": "stop"}  # provisioning state -> badge class


def state_class(state: Any) -> str:
    return STATE_CLASSES.get(str(state), "other")


def _shares(split: dict[str, Any]) -> str:
    return ", ".join(f"{name} {percent}%" for name, percent in split.items()) or "—"


def _model(spec: dict[str, Any]) -> str:
    """A deployment's model as people name it: the registered reference, or where its files are."""
    model = spec.get("model")
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        if model.get("name"):
            return f"{model['name']}:{model['version']}" if model.get("version") else str(model["name"])
        return str(model.get("path") or "inline model")
    return "—"


@router.get("/endpoints")
def endpoints_page(request: Request, who: Signed) -> Response:
    state = request.app.state
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        for ep in state.endpoints.list()["value"]:
            rows.append({"name": ep["name"], "kind": "online", "href": f"/endpoints/{ep['name']}",
                         "state": ep.get("provisioning_state"),
                         "state_class": state_class(ep.get("provisioning_state")), "scoring_uri": ep.get("scoring_uri"),
                         "traffic": _shares(ep.get("traffic") or {}), "auth_mode": ep.get("auth_mode"),
                         "deployments": len(ep.get("deployments") or []), "created": ep.get("created_at")})
    except CibleError as exc:
        problems.append(f"online endpoints: {exc.message}")
    try:
        for ep in state.batch_endpoints.list_endpoints()["value"]:
            default = (ep.get("defaults") or {}).get("deployment_name")
            rows.append({"name": ep["name"], "kind": "batch", "href": f"/batch-endpoints/{ep['name']}",
                         "state": ep.get("provisioning_state"),
                         "state_class": state_class(ep.get("provisioning_state")), "scoring_uri": ep.get("scoring_uri"),
                         "traffic": f"default: {default}" if default else "no default deployment",
                         "auth_mode": ep.get("auth_mode"), "deployments": len(ep.get("deployments") or []),
                         "created": ep.get("created_at")})
    except CibleError as exc:
        problems.append(f"batch endpoints: {exc.message}")
    return render(request, who, "endpoints/list.html", title="Endpoints", rows=rows, problems=problems)


def _online(request: Request, name: str) -> dict[str, Any]:
    """What the online endpoint page shows; NotFoundError for an unknown endpoint."""
    state = request.app.state
    endpoint = state.endpoints.get(name)
    deployments = state.deployments.list(name)["value"]
    traffic = endpoint.get("traffic") or {}
    mirror = endpoint.get("mirror_traffic") or {}
    metrics = endpoint.get("metrics") or {}
    names = [d["name"] for d in deployments]
    names += [n for n in [*traffic, *mirror, *metrics] if n not in names]
    split = []
    for i, dep in enumerate(names):
        split.append({"name": dep, "percent": int(traffic.get(dep) or 0), "mirror": int(mirror.get(dep) or 0),
                      "colour": SHARE_COLOURS[i % len(SHARE_COLOURS)]})
    rows = []
    for dep in deployments:
        replicas = dep.get("replicas") or []
        rows.append({"name": dep["name"], "model": _model(dep), "instance_type": dep.get("instance_type") or "—",
                     "instance_count": dep.get("instance_count"), "desired": dep.get("desired_instances"),
                     "ready": sum(1 for r in replicas if r.get("ready")), "replicas": len(replicas),
                     "state": dep.get("provisioning_state"), "state_class": state_class(dep.get("provisioning_state")),
                     "reason": dep.get("reason"),
                     "scale": (dep.get("scale_settings") or {}).get("type") or "default"})
    rate = {"total": sum(float(m.get("requests_per_s") or 0) for m in metrics.values()),
            "errors": sum(int(m.get("errors") or 0) for m in metrics.values()),
            "rows": [{"name": dep, **{k: (number(v) if isinstance(v, float) else v) for k, v in figures.items()}}
                     for dep, figures in sorted(metrics.items())]}
    rate["total_text"] = number(round(rate["total"], 3))
    return {"endpoint": endpoint, "state_class": state_class(endpoint.get("provisioning_state")), "deployments": rows, "split": split, "rate": rate,
            "traffic_text": _shares(traffic), "mirror_text": _shares({k: v for k, v in mirror.items() if v})}


@router.get("/endpoints/{name}")
def endpoint_page(name: str, request: Request, who: Signed) -> Response:
    try:
        context = _online(request, name)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "No such endpoint", exc.message)
    return render(request, who, "endpoints/online.html", title=f"Endpoint {name}", **context)


@router.get("/endpoints/{name}/request-rate")
def request_rate_fragment(name: str, request: Request, who: Signed) -> Response:
    """The request-rate panel alone, for its htmx refresh."""
    try:
        context = _online(request, name)
    except CibleError as exc:
        # htmx 2 swaps no 4xx answer: a 404 would leave the old panel polling every 5 s for ever and never show
        # why. So htmx gets a 200 whose fragment (same id, outerHTML swap) has no hx-trigger: the swap removes
        # the polling element, which ends the poll, and shows the alert. 200 rather than htmx's 286 ("stop
        # polling") as the computes pages do: the swap alone ends the poll, with no htmx-only status code.
        # Anything else (a script, curl) still gets the real status.
        status = 200 if request.headers.get("HX-Request") == "true" else exc.http_status
        return render(request, who, "endpoints/rate_gone.html", status_code=status, message=exc.message)
    return render(request, who, "endpoints/rate.html", **context)


def _settings(dep: dict[str, Any]) -> list[tuple[str, Any]]:
    """A batch deployment's settings as `batch-deployment show` has them (under `settings`, or at the
    spec's root for a legacy one)."""
    settings = {**{k: dep[k] for k in ("mini_batch_size", "max_concurrency_per_instance", "output_action",
                                        "output_file_name", "error_threshold", "logging_level") if k in dep},
                **(dep.get("settings") or {})}
    retry = settings.pop("retry_settings", None) or dep.get("retry_settings") or {}
    variables = settings.pop("environment_variables", None)
    out = [(k, v) for k, v in settings.items() if v is not None and not isinstance(v, dict)]
    out += [(f"retry {k}", v) for k, v in retry.items()]
    if variables:
        out.append(("environment variables", ", ".join(sorted(variables))))
    return out


@router.get("/batch-endpoints/{name}")
def batch_endpoint_page(name: str, request: Request, who: Signed) -> Response:
    service = request.app.state.batch_endpoints
    try:
        endpoint = service.get_endpoint(name)
        deployments = service.list_deployments(name)["value"]
        jobs = service.list_jobs(name, top=RECENT_JOBS)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "No such batch endpoint", exc.message)
    rows = []
    for dep in deployments:
        instances = (dep.get("resources") or {}).get("instance_count", dep.get("instance_count"))
        rows.append({"name": dep["name"], "default": dep.get("is_default"), "model": _model(dep),
                     "compute": dep.get("compute") or "—", "instance_count": instances or 1,
                     "state": dep.get("provisioning_state"), "state_class": state_class(dep.get("provisioning_state")),
                     "settings": _settings(dep), "mini_batch_size": (dep.get("settings") or {}).get(
                         "mini_batch_size", dep.get("mini_batch_size")),
                     "type": dep.get("type") or ("model" if dep.get("model") else "—")})
    return render(request, who, "endpoints/batch.html", title=f"Batch endpoint {name}", endpoint=endpoint,
                  state_class=state_class(endpoint.get("provisioning_state")),
                  deployments=rows, jobs=jobs["value"], jobs_total=jobs["count"],
                  default=(endpoint.get("defaults") or {}).get("deployment_name"))
