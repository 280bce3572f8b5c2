"""/api/v1/{environments|data|models|components}: versioned assets, thin HTTP over the asset service."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import FileResponse

from cible.server.routers.paging import DEFAULT_TOP, Skip, Top
from cible.server.routers.responses import BYTES, JSON, answers
from cible.server.schemas.assets import Asset, AssetArchiveState, AssetPage
from cible.server.schemas.common import FileList

router = APIRouter(prefix="/api/v1", tags=["assets"], default_response_class=JSON)
AssetKind = Literal["environments", "data", "models", "components"]
IncludeArchived = Query(False, description="list archived items with the active ones (`--include-archived`)")
ArchivedOnly = Query(False, description="list the archived items alone (`--archived-only`)")


@router.post("/{kind}/{name}/versions", summary="Register the next version of an asset", **answers(Asset))
def create_next(kind: AssetKind, name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.assets.create(kind, name, None, body)


@router.put("/{kind}/{name}/versions/{version}", summary="Register an asset version (idempotent, immutable)",
            **answers(Asset))
def create_version(kind: AssetKind, name: str, version: str, request: Request,
                   body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.assets.create(kind, name, version, body)


@router.get("/{kind}/{name}/versions/{version}",
            summary="One version; `latest` is the newest not archived (an archived one is got by its version)",
            **answers(Asset))
def get_version(kind: AssetKind, name: str, version: str, request: Request) -> dict[str, Any]:
    return request.app.state.assets.get(kind, name, version)


@router.get("/{kind}/{name}/versions", summary="An asset's versions, newest first (archived ones when asked)",
            **answers(AssetPage))
def list_versions(kind: AssetKind, name: str, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP,
                  include_archived: bool = IncludeArchived, archived_only: bool = ArchivedOnly) -> dict[str, Any]:
    return request.app.state.assets.list(kind, name, skip=skip, top=top, include_archived=include_archived,
                                         archived_only=archived_only)


@router.get("/{kind}", summary="The latest version of every asset of this kind, by name", **answers(AssetPage))
def list_assets(kind: AssetKind, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP,
                include_archived: bool = IncludeArchived, archived_only: bool = ArchivedOnly) -> dict[str, Any]:
    return request.app.state.assets.list(kind, skip=skip, top=top, include_archived=include_archived,
                                         archived_only=archived_only)


@router.post("/{kind}/{name}/versions/{version}:archive", summary="Archive one version (`latest`: the newest)",
             **answers(Asset))
def archive_version(kind: AssetKind, name: str, version: str, request: Request) -> dict[str, Any]:
    return request.app.state.assets.set_archived(kind, name, version, True)


@router.post("/{kind}/{name}/versions/{version}:restore", summary="Restore an archived version", **answers(Asset))
def restore_version(kind: AssetKind, name: str, version: str, request: Request) -> dict[str, Any]:
    return request.app.state.assets.set_archived(kind, name, version, False)


@router.post("/{kind}/{name}:archive", summary="Archive the whole asset: every version, and those registered later",
             **answers(AssetArchiveState))
def archive_asset(kind: AssetKind, name: str, request: Request) -> dict[str, Any]:
    return request.app.state.assets.set_archived(kind, name, None, True)


@router.post("/{kind}/{name}:restore", summary="Restore a whole archived asset (versions archived alone stay so)",
             **answers(AssetArchiveState))
def restore_asset(kind: AssetKind, name: str, request: Request) -> dict[str, Any]:
    return request.app.state.assets.set_archived(kind, name, None, False)


@router.get("/models/{name}/versions/{version}/files",
            summary="A model version's files, in `az ml model download` layout (<name>/<basename of its path>/...)",
            **answers(FileList))
def model_files(name: str, version: str, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.assets.model_files(name, version, skip=skip, top=top)


@router.get("/models/{name}/versions/{version}/files/{path:path}", summary="One of a model version's files",
            response_class=FileResponse, responses=BYTES)
def model_file(name: str, version: str, path: str, request: Request) -> FileResponse:
    return FileResponse(request.app.state.assets.model_file(name, version, path))
