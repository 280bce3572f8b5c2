"""/api/v1 health, computes and uploads."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/api/v1")


class MissingBlobsRequest(BaseModel):
    sha256: list[str] = Field(..., description="digests the client wants to upload")


class SnapshotFile(BaseModel):
    sha256: str
    size: int = Field(0, ge=0)
    mode: int = 0o644


class SnapshotRequest(BaseModel):
    files: dict[str, SnapshotFile]


@router.get("/health", tags=["server"])
def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "pid": os.getpid(), "workspace": str(request.app.state.settings.home)}


@router.get("/computes", tags=["computes"])
def list_computes(request: Request) -> dict[str, Any]:
    return request.app.state.computes.list()


@router.get("/computes/{name}", tags=["computes"])
def get_compute(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.computes.get(name)


@router.put("/computes/{name}", tags=["computes"], summary="Create a compute (Azure ML compute YAML as JSON)")
def create_compute(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.computes.create(name, body)


@router.patch("/computes/{name}", tags=["computes"], summary="Change a cluster's scale settings")
def update_compute(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.computes.update(name, body)


@router.delete("/computes/{name}", tags=["computes"], status_code=204,
               summary="Delete a compute; a cluster with nodes drains first (202, provisioning_state Deleting)")
def delete_compute(name: str, request: Request) -> Response:
    draining = request.app.state.computes.delete(name)
    if draining is None:
        return Response(status_code=204)
    return JSONResponse(draining, status_code=202)


@router.post("/computes/{name}/nodes/{node_id}:preempt", tags=["computes"],
             summary="Evict a node of a low-priority cluster now (drills and tests)")
def preempt_node(name: str, node_id: str, request: Request) -> dict[str, Any]:
    return request.app.state.computes.preempt(name, node_id)


@router.get("/computes/{name}/nodes", tags=["computes"], summary="A cluster's nodes (`list-nodes`)")
def list_nodes(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.computes.nodes(name)


@router.post("/blobs:missing", tags=["uploads"], summary="Which of these blobs the workspace lacks")
def missing_blobs(body: MissingBlobsRequest, request: Request) -> dict[str, Any]:
    return {"missing": request.app.state.blobs.missing(body.sha256)}


@router.put("/blobs/{sha256}", tags=["uploads"], status_code=201)
async def put_blob(sha256: str, request: Request) -> dict[str, Any]:
    # Spool the body first: the store call is sync file I/O, kept off the event loop.
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        created = await run_in_threadpool(request.app.state.blobs.put, sha256, iter(lambda: spool.read(1 << 20), b""))
    return {"sha256": sha256, "created": created}


@router.post("/snapshots", tags=["uploads"], summary="Record a tree of uploaded blobs; returns its content id")
def put_snapshot(body: SnapshotRequest, request: Request) -> dict[str, Any]:
    files = {k: v.model_dump() for k, v in body.files.items()}
    snapshot = request.app.state.blobs.put_snapshot(files)
    return {"id": snapshot, "uri": f"cible://snapshots/{snapshot}"}
