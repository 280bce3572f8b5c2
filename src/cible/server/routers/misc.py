"""/api/v1 health and uploads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cible.server.errors import human_bytes
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.misc import BlobStored, Health, MissingBlobs, Snapshot

router = APIRouter(prefix="/api/v1", default_response_class=JSON)


class MissingBlobsRequest(BaseModel):
    sha256: list[str] = Field(..., description="digests the client wants to upload")


class SnapshotFile(BaseModel):
    sha256: str
    size: int = Field(0, ge=0, le=2**63 - 1)
    mode: int = Field(0o644, ge=0, le=0o7777)  # permission bits, as chmod takes them


class SnapshotRequest(BaseModel):
    files: dict[str, SnapshotFile]


@router.get("/health", tags=["server"], summary="ok; or degraded (503) with the reasons: a store that cannot "
            "write, a nearly full disk",
            responses={200: {"model": Health, "description": "ok"},
                       503: {"model": Health, "description": "degraded: with the reasons and the error envelope"}})
def health(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    reasons = []
    problem = request.app.state.store.write_problem()
    if problem:
        reasons.append(f"the workspace store cannot write: {problem}")
    try:
        free = shutil.disk_usage(settings.home).free
    except OSError:
        free = None
    if free is not None and free < settings.min_free_disk_bytes:
        reasons.append(f"only {human_bytes(free)} free on the disk of {settings.home} (under the "
                       f"{human_bytes(settings.min_free_disk_bytes)} of CIBLE_MIN_FREE_DISK): free space")
    body: dict[str, Any] = {"status": "degraded" if reasons else "ok", "pid": os.getpid(),
                            "workspace": str(settings.home), "disk_free_bytes": free, "reasons": reasons}
    if not reasons:
        return JSONResponse(body)
    # Also the error envelope, so that clients raise it as any other error.
    body["error"] = {"code": "StoreUnavailable", "message": "; ".join(reasons), "details": {"reasons": reasons}}
    return JSONResponse(body, status_code=503)


@router.post("/blobs:missing", tags=["uploads"], summary="Which of these blobs the workspace lacks",
             **answers(MissingBlobs))
def missing_blobs(body: MissingBlobsRequest, request: Request) -> dict[str, Any]:
    return {"missing": request.app.state.blobs.missing(body.sha256)}


@router.put("/blobs/{sha256}", tags=["uploads"], status_code=201, summary="Upload a blob by its SHA-256",
            **answers(BlobStored))
async def put_blob(sha256: str, request: Request) -> dict[str, Any]:
    # The store writes (sync file I/O) in a worker thread, straight from the request: the body is
    # never whole in memory nor copied to a temporary folder first. RequestGuard caps its size.
    created = await run_in_threadpool(request.app.state.blobs.put, sha256, _body_chunks(request))
    return {"sha256": sha256, "created": created}


def _body_chunks(request: Request) -> Iterator[bytes]:
    """The request body for a worker thread: each chunk is awaited on the event loop."""
    stream = request.stream()

    async def next_chunk() -> bytes:
        return await stream.__anext__()

    while True:
        try:
            chunk = anyio.from_thread.run(next_chunk)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


@router.post("/snapshots", tags=["uploads"], summary="Record a tree of uploaded blobs; returns its content id",
             **answers(Snapshot))
def put_snapshot(body: SnapshotRequest, request: Request) -> dict[str, Any]:
    files = {k: v.model_dump() for k, v in body.files.items()}
    snapshot = request.app.state.blobs.put_snapshot(files)
    return {"id": snapshot, "uri": f"cible://snapshots/{snapshot}"}
