"""/api/v1/{environments|data|models}: versioned assets, thin HTTP over the asset service."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Request

from cible.server.routers.paging import DEFAULT_TOP, Skip, Top

router = APIRouter(prefix="/api/v1", tags=["assets"])
AssetKind = Literal["environments", "data", "models"]


@router.post("/{kind}/{name}/versions", summary="Register the next version of an asset")
def create_next(kind: AssetKind, name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.assets.create(kind, name, None, body)


@router.put("/{kind}/{name}/versions/{version}", summary="Register an asset version (idempotent, immutable)")
def create_version(kind: AssetKind, name: str, version: str, request: Request,
                   body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.assets.create(kind, name, version, body)


@router.get("/{kind}/{name}/versions/{version}", summary="One version; `latest` is the newest")
def get_version(kind: AssetKind, name: str, version: str, request: Request) -> dict[str, Any]:
    return request.app.state.assets.get(kind, name, version)


@router.get("/{kind}/{name}/versions", summary="An asset's versions, newest first")
def list_versions(kind: AssetKind, name: str, request: Request, skip: Skip = 0,
                  top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.assets.list(kind, name, skip=skip, top=top)


@router.get("/{kind}", summary="The latest version of every asset of this kind, by name")
def list_assets(kind: AssetKind, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.assets.list(kind, skip=skip, top=top)
