"""/api/v1 health and uploads."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import APIRouter, Request
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
