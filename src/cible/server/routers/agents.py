"""/api/v1/agent: the node agents' side of the API (heartbeat long-poll, reports, files)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cible.core.lifecycle.jobs import JobStatus
from cible.server.errors import PayloadTooLargeError
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.agents import FileChunk, HeartbeatReply, ReportAccepted

router = APIRouter(prefix="/api/v1/agent", tags=["agents"], default_response_class=JSON)


class RunRef(BaseModel):
    job: str
    attempt: int = Field(..., ge=1)
    canceling: bool = False


class Heartbeat(BaseModel):
    runs: list[RunRef] = Field(default_factory=list)
    wait_s: float = Field(0.0, ge=0.0, le=60.0, description="hold the reply up to this long while nothing changes")
    usage: dict[str, Any] | None = None
    # Where other nodes reach this one (MASTER_ADDR of a job whose rank 0 it is); a provider whose
    # nodes live elsewhere than this host (Ray) has its agents say it.
    address: str | None = Field(None, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$")
    # Compute instances: the sessions it hosts, when one was last seen, its OS disk.
    sessions: list[str] | None = None
    last_activity_at: datetime | None = None
    disk: dict[str, Any] | None = None


class Report(BaseModel):
    attempt: int = Field(..., ge=1)
    node_rank: int = Field(..., ge=0)
    history: list[JobStatus] = Field(..., description="Azure's job statuses, oldest first")
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    ended: bool = False


@router.post("/nodes/{node_id}/heartbeat", summary="Heartbeat; the reply says what the node should run",
             **answers(HeartbeatReply))
async def heartbeat(node_id: str, body: Heartbeat, request: Request) -> dict[str, Any]:
    agents = request.app.state.agents
    hub = request.app.state.hub
    presence = body.model_dump(mode="json", include={"sessions", "last_activity_at", "disk"}, exclude_none=True)
    await run_in_threadpool(agents.beat, node_id, body.usage, presence,
                            body.address)
    has = {(r.job, r.attempt): r.canceling for r in body.runs}
    hub.clear(node_id)  # anything notified from here on is seen by the read below or wakes the wait
    reply = await run_in_threadpool(agents.wanted, node_id, has)
    if body.wait_s > 0 and agents.settled(reply, has):
        await hub.wait(node_id, min(body.wait_s, agents.wait_s))
        reply = await run_in_threadpool(agents.wanted, node_id, has)
    return reply


@router.post("/nodes/{node_id}/runs/{job_name}/report", summary="A run's statuses as its launcher reported them",
             **answers(ReportAccepted))
def report(node_id: str, job_name: str, body: Report, request: Request) -> dict[str, Any]:
    request.app.state.agents.report(node_id, job_name, body.model_dump(mode="json"))
    return {"accepted": True}


@router.put("/nodes/{node_id}/runs/{job_name}/files/{path:path}", summary="Part of a run's log or artifact file",
            **answers(FileChunk))
async def put_file(node_id: str, job_name: str, path: str, request: Request,
                   attempt: int = Query(..., ge=1, le=2**31 - 1),
                   offset: int = Query(0, ge=0, le=2**40)) -> dict[str, Any]:
    # A body for a job that does not exist is not read at all; one over the cap is refused as it
    # streams in (RequestGuard caps this route too; the bytes are one chunk of a file, agents send 1 MiB).
    await run_in_threadpool(request.app.state.jobs.run_handle, job_name)
    limit = request.app.state.settings.max_agent_chunk_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(limit, "CIBLE_MAX_AGENT_CHUNK_BYTES")
    data = bytes(body)
    await run_in_threadpool(request.app.state.agents.put_file, node_id, job_name, attempt, path, offset, data)
    return {"path": path, "offset": offset, "size": len(data)}
