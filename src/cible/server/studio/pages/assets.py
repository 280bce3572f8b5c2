"""Registered assets: models, data, environments; each kind's list, an asset's versions, a version.

Read through AssetService as the REST routes do. A model version's files are listed by
AssetService.model_files and read (its MLmodel, a download) through AssetService.model_file, which
keeps every path inside the model's folder: this module never builds a path itself.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import Response

from cible.core.errors import CibleError
from cible.server.services.paging import MAX_SKIP, MAX_TOP
from cible.server.studio.downloads import download
from cible.server.studio.web import Signed, message_page, render

router = APIRouter(include_in_schema=False)
PAGE = 50
MAX_PAGE = MAX_SKIP // PAGE  # the service's skip bound
MLMODEL_MAX_BYTES = 256 * 1024  # an MLmodel is a few hundred bytes; a bigger one is cut, and said so
KINDS = {  # URL segment -> (what one is called, the heading of the list)
    "models": ("model", "Models"),
    "data": ("data asset", "Data"),
    "environments": ("environment", "Environments"),
}


def _created(asset: dict[str, Any]) -> str | None:
    return (asset.get("creation_context") or {}).get("created_at")


def _tags(asset: dict[str, Any]) -> list[str]:
    return [f"{k}: {v}" if v not in (None, "") else str(k) for k, v in (asset.get("tags") or {}).items()]


def _text(value: Any) -> str:
    """A spec's mapping (an inline conda file, a build context) as YAML, as people wrote it."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _list_page(kind: str, request: Request, who: Signed, page: int, archived: bool) -> Response:
    assets = request.app.state.assets
    try:
        listing = assets.list(kind, skip=(page - 1) * PAGE, top=PAGE, include_archived=archived)
        # One grouped count for the page's names (not a listing per row): the page's queries do not grow with rows.
        counts = assets.version_counts(kind, [a["name"] for a in listing["value"]], include_archived=archived)
        rows = [{**asset, "versions": counts.get(asset["name"], 0), "created": _created(asset), "tag_list": _tags(asset)}
                for asset in listing["value"]]
    except CibleError as exc:
        return message_page(request, who, exc.http_status, f"{KINDS[kind][1]} unavailable", exc.message)
    total = listing["count"]
    return render(request, who, "assets/list.html", title=KINDS[kind][1], kind=kind, label=KINDS[kind][0],
                  heading=KINDS[kind][1], rows=rows, total=total, page=page, archived=archived,
                  pages=max((total + PAGE - 1) // PAGE, 1))


def _versions_page(kind: str, name: str, request: Request, who: Signed) -> Response:
    label = KINDS[kind][0]
    try:
        listing = request.app.state.assets.list(kind, name, top=MAX_TOP, include_archived=True)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, f"No such {label}", exc.message)
    if not listing["count"]:
        return message_page(request, who, 404, f"No such {label}",
                            f"{label} '{name}' does not exist in this workspace.")
    rows = [{**a, "created": _created(a), "tag_list": _tags(a)} for a in listing["value"]]
    latest = next((r["version"] for r in rows if not r.get("is_archived")), None)
    return render(request, who, "assets/versions.html", title=f"{label} {name}", kind=kind, label=label,
                  heading=KINDS[kind][1], name=name, rows=rows, total=listing["count"], latest=latest)


def _version_page(kind: str, name: str, version: str, request: Request, who: Signed) -> Response:
    label = KINDS[kind][0]
    assets = request.app.state.assets
    try:
        asset = assets.get(kind, name, version)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, f"No such {label} version", exc.message)
    context: dict[str, Any] = {"files": None, "files_problem": None, "mlmodel": None, "mlmodel_cut": False,
                               "conda": None, "build": None, "inference": None}
    if kind == "models":
        context.update(_model_files(assets, name, asset["version"]))
    elif kind == "environments":
        if asset.get("conda_file") is not None:
            context["conda"] = _text(asset["conda_file"])
        if asset.get("build") is not None:
            context["build"] = _text(asset["build"])
        if asset.get("inference_config") is not None:
            context["inference"] = _text(asset["inference_config"])
    shown = {k: (v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True)) for k, v in asset.items()
             if v is not None and k not in ("name", "version", "description", "tags", "creation_context", "is_archived", "path",
                          "type", "image", "conda_file", "build", "inference_config", "properties")}
    return render(request, who, "assets/version.html", title=f"{label} {name}:{asset['version']}", kind=kind,
                  label=label, heading=KINDS[kind][1], name=name, asset=asset, created=_created(asset),
                  tag_list=_tags(asset), properties=asset.get("properties") or {}, other=shown, **context)


def _model_files(assets: Any, name: str, version: str) -> dict[str, Any]:
    """The model version's files (a page of MAX_TOP), and its MLmodel's text when it has one at the top."""
    try:
        listing = assets.model_files(name, version, top=MAX_TOP)
    except CibleError as exc:  # registered by reference (https, runs:/), or its files are gone
        return {"files_problem": exc.message}
    files = listing["value"]
    found: dict[str, Any] = {"files": files, "files_total": listing["count"]}
    # Listed as <name>/<basename of its path>/<relative path>: the MLmodel descriptor is at the top.
    top_level = [f["path"] for f in files if f["path"].count("/") == 2 and f["path"].rsplit("/", 1)[1] == "MLmodel"]
    if top_level:
        try:
            path = assets.model_file(name, version, top_level[0])  # inside the model's folder, checked there
            with path.open("rb") as handle:
                data = handle.read(MLMODEL_MAX_BYTES + 1)
        except (CibleError, OSError) as exc:
            found["mlmodel_problem"] = getattr(exc, "message", None) or f"its MLmodel could not be read: {exc}"
        else:
            found["mlmodel"] = data[:MLMODEL_MAX_BYTES].decode("utf-8", "replace")
            found["mlmodel_cut"] = len(data) > MLMODEL_MAX_BYTES
            found["mlmodel_path"] = top_level[0]
    return found


def _register(kind: str) -> None:
    def list_route(request: Request, who: Signed, page: str = "1", archived: str = "") -> Response:
        # Read as text: a hand-typed `?page=x` is page 1, never a JSON 422 in the browser.
        number = int(page) if page.strip().isdigit() else 1
        return _list_page(kind, request, who, min(max(number, 1), MAX_PAGE), archived.lower() in ("1", "true", "yes"))

    def versions_route(name: str, request: Request, who: Signed) -> Response:
        return _versions_page(kind, name, request, who)

    def version_route(name: str, version: str, request: Request, who: Signed) -> Response:
        return _version_page(kind, name, version, request, who)

    router.add_api_route(f"/{kind}", list_route, methods=["GET"], name=f"studio-{kind}")
    router.add_api_route(f"/{kind}/{{name}}", versions_route, methods=["GET"], name=f"studio-{kind}-versions")
    router.add_api_route(f"/{kind}/{{name}}/{{version}}", version_route, methods=["GET"],
                         name=f"studio-{kind}-version")


for _kind in KINDS:
    _register(_kind)


@router.get("/models/{name}/{version}/files/{path:path}")
def model_file(name: str, version: str, path: str, request: Request, who: Signed) -> Response:
    """A model version's file, as a download (the path as its file list gives it)."""
    try:
        found = request.app.state.assets.model_file(name, version, path)
    except CibleError as exc:
        return message_page(request, who, exc.http_status, "No such file", exc.message)
    return download(found)  # never shown inline: an uploaded .html or .js must not run as a studio page
