"""/api/v1/agent: the node agents' side of the API (heartbeat long-poll, reports, files; and, for a node
that does not share the workspace folder, its job's blobs, inputs, resume folder and outputs)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cible.backends.ssh.hosts import server_uv
from cible.core.errors import NotFoundError
from cible.core.lifecycle.jobs import JobStatus
from cible.server.errors import PayloadTooLargeError
from cible.server.routers.responses import BYTES, JSON, answers
from cible.server.schemas.agents import (
    Committed,
    FileChunk,
    FileManifest,
    HeartbeatReply,
    ReportAccepted,
    StagedChunk,
    StagedFiles,
)


def _pilot_guard(request: Request) -> None:
    """A Slurm pilot's token reaches the routes of its job's current attempt only (auth.py has already
    kept it to its job's pilot nodes): not those of an earlier attempt, nor of another job of that name."""
    scope = getattr(request.state, "token_scope", None)
    if scope is not None and scope.kind == "pilot":
        request.app.state.agents.check_pilot(request.path_params.get("node_id", ""), scope.name, scope.salt)


_server_uv = lru_cache(maxsize=1)(server_uv)  # found and hashed once: each new pod asks


router = APIRouter(prefix="/api/v1/agent", tags=["agents"], default_response_class=JSON,
                   dependencies=[Depends(_pilot_guard)])


class RunRef(BaseModel):
    job: str
    attempt: int = Field(..., ge=1)
    canceling: bool = False


class Heartbeat(BaseModel):
    runs: list[RunRef] = Field(default_factory=list)
    # A Slurm pilot's runs that ended and were reported (it waits, in an allocation kept warm).
    done: list[RunRef] = Field(default_factory=list, max_length=100)
    wait_s: float = Field(0.0, ge=0.0, le=60.0, description="hold the reply up to this long while nothing changes")
    usage: dict[str, Any] | None = None
    # Where other nodes reach this one (MASTER_ADDR of a job whose rank 0 it is); a provider whose
    # nodes live elsewhere than this host (Ray) has its agents say it.
    address: str | None = Field(None, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$")
    # Compute instances: the sessions it hosts, when one was last seen, its OS disk.
    sessions: list[str] | None = None
    last_activity_at: datetime | None = None
    disk: dict[str, Any] | None = None


class ReportedFile(BaseModel):
    path: str = Field(..., min_length=1, max_length=4096, description="the artifact path, as the file route's")
    offset: int = Field(0, ge=0, le=2**40)
    data: str = Field("", description="base64 of the file's bytes from `offset`")


class Report(BaseModel):
    attempt: int = Field(..., ge=1)
    node_rank: int = Field(..., ge=0)
    history: list[JobStatus] = Field(..., description="Azure's job statuses, oldest first")
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    ended: bool = False
    # A run's last bytes of its artifact files, when few: written before the report is taken, as the
    # file route would write them (a short job's end is one request, not one per file).
    files: list[ReportedFile] = Field(default_factory=list, max_length=64)


@router.post("/nodes/{node_id}/heartbeat", summary="Heartbeat; the reply says what the node should run",
             **answers(HeartbeatReply))
async def heartbeat(node_id: str, body: Heartbeat, request: Request) -> dict[str, Any]:
    agents = request.app.state.agents
    hub = request.app.state.hub
    scope = getattr(request.state, "token_scope", None)
    if scope is not None and scope.kind == "pilot":  # a Slurm job's pilot: its one run, no node row
        return await _pilot_heartbeat(node_id, scope.name, body, request)
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


async def _pilot_heartbeat(node_id: str, job_name: str, body: Heartbeat, request: Request) -> dict[str, Any]:
    agents, hub = request.app.state.agents, request.app.state.hub
    has = {(r.job, r.attempt): r.canceling for r in body.runs}
    done = frozenset((r.job, r.attempt) for r in body.done)
    hub.clear(node_id)
    reply = await run_in_threadpool(agents.pilot_wanted, node_id, job_name, has, done)
    if reply is not None and body.wait_s > 0 and agents.settled(reply, has):
        await hub.wait(node_id, min(body.wait_s, agents.wait_s))
        reply = await run_in_threadpool(agents.pilot_wanted, node_id, job_name, has, done)
    if reply is None:
        raise NotFoundError(f"node '{node_id}' runs no attempt of job '{job_name}'", details={"node_id": node_id})
    return reply


@router.get("/nodes/{node_id}/bundle", summary="The node code (.tar.gz, stdlib only): what a node pod's bootstrap runs",
            response_class=Response, responses={200: {"content": {"application/gzip": {}}}})
async def node_code(node_id: str, request: Request) -> Response:
    data = await run_in_threadpool(request.app.state.node_code)
    return Response(data, media_type="application/gzip")


@router.get("/nodes/{node_id}/tools/uv", summary="The server's uv, for a node of the same OS and architecture "
            "(404 otherwise: the node then builds environments with its own uv, if any)", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "no uv for it"}})
async def node_uv(node_id: str, machine: str = Query(..., max_length=32)) -> FileResponse:
    tool = await run_in_threadpool(_server_uv)
    if tool is None or tool.system != "Linux" or tool.machine != machine:
        raise NotFoundError(f"the server has no uv for a Linux {machine} node", details={"machine": machine})
    return FileResponse(tool.path, media_type="application/octet-stream")


@router.post("/nodes/{node_id}/runs/{job_name}/report", summary="A run's statuses as its launcher reported them",
             **answers(ReportAccepted))
def report(node_id: str, job_name: str, body: Report, request: Request) -> dict[str, Any]:
    files = [(i, f.path, f.offset, f.data) for i, f in enumerate(body.files)]
    request.app.state.agents.report(node_id, job_name, body.model_dump(mode="json", exclude={"files"}), files)
    return {"accepted": True}


@router.put("/nodes/{node_id}/runs/{job_name}/files/{path:path}", summary="Part of a run's log or artifact file",
            **answers(FileChunk))
async def put_file(node_id: str, job_name: str, path: str, request: Request,
                   attempt: int = Query(..., ge=1, le=2**31 - 1),
                   offset: int = Query(0, ge=0, le=2**40)) -> dict[str, Any]:
    # A body for a job that does not exist is not read at all; one over the cap is refused as it
    # streams in (RequestGuard caps this route too; the bytes are one chunk of a file, agents send 1 MiB).
    await run_in_threadpool(request.app.state.jobs.run_handle, job_name)
    data = await _chunk(request)
    await run_in_threadpool(request.app.state.agents.put_file, node_id, job_name, attempt, path, offset, data)
    return {"path": path, "offset": offset, "size": len(data)}


# -- the files of a node that does not share the workspace folder (services/node_files.py) -----------
# Each is for the job's current attempt placed on the node: 404 for a job that is not there, 409 for
# an attempt that is not (or no longer) on this node (the agent then drops the run), as for reports.

RUN = "/nodes/{node_id}/runs/{job_name}"
Attempt = Annotated[int, Query(..., ge=1, le=2**31 - 1, description="the job's attempt on this node")]
CHECKSUM_HEADER = "X-Content-SHA256"


class Commit(BaseModel):
    files: dict[str, str] = Field(..., description="every file of the destination to commit: path -> sha256")


def _file_response(path: Path, digest: str | None = None) -> FileResponse:
    """The file, with Range support (206 and Content-Range: a fetch cut short goes on where it stopped)."""
    headers = {CHECKSUM_HEADER: digest} if digest else None
    return FileResponse(path, media_type="application/octet-stream", headers=headers)


async def _chunk(request: Request) -> bytes:
    """The request's body, refused as it streams in once over the agents' chunk cap (RequestGuard caps
    these routes too)."""
    limit = request.app.state.settings.max_agent_chunk_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(limit, "CIBLE_MAX_AGENT_CHUNK_BYTES")
    return bytes(body)


@router.get(RUN + "/blobs/{sha256}", summary="A blob of the job's code or snapshot inputs (Range: resumable)",
            response_class=FileResponse, responses=BYTES)
def get_blob(node_id: str, job_name: str, sha256: str, request: Request, attempt: Attempt) -> FileResponse:
    return _file_response(request.app.state.node_files.blob(node_id, job_name, attempt, sha256), sha256)


@router.get(RUN + "/inputs/{name}/manifest", summary="The files of a workspace input, with their sha256",
            **answers(FileManifest))
def input_manifest(node_id: str, job_name: str, name: str, request: Request, attempt: Attempt) -> dict[str, Any]:
    return request.app.state.node_files.input_manifest(node_id, job_name, attempt, name)


@router.get(RUN + "/inputs/{name}/files/{path:path}", summary="A file of a workspace input (Range: resumable)",
            response_class=FileResponse, responses=BYTES)
def input_file(node_id: str, job_name: str, name: str, path: str, request: Request,
               attempt: Attempt) -> FileResponse:
    return _file_response(*request.app.state.node_files.input_file(node_id, job_name, attempt, name, path))


@router.get(RUN + "/resume/manifest", summary="The files of the job's resume folder, with their sha256",
            **answers(FileManifest))
def resume_manifest(node_id: str, job_name: str, request: Request, attempt: Attempt) -> dict[str, Any]:
    return request.app.state.node_files.resume_manifest(node_id, job_name, attempt)


@router.get(RUN + "/resume/files/{path:path}", summary="A file of the job's resume folder (Range: resumable)",
            response_class=FileResponse, responses=BYTES)
def resume_file(node_id: str, job_name: str, path: str, request: Request, attempt: Attempt) -> FileResponse:
    return _file_response(*request.app.state.node_files.resume_file(node_id, job_name, attempt, path))


async def _put_chunk(request: Request, node_id: str, job_name: str, attempt: int, output: str | None, path: str,
                     offset: int) -> dict[str, Any]:
    files = request.app.state.node_files
    # A body for a run that is not this node's is not read at all.
    upload = await run_in_threadpool(files.upload, node_id, job_name, attempt, output)
    data = await _chunk(request)
    return await run_in_threadpool(files.put_chunk, upload, path, offset, data)


@router.put(RUN + "/resume/files/{path:path}", summary="Part of a file of the resume folder, staged until a commit",
            **answers(StagedChunk))
async def put_resume_file(node_id: str, job_name: str, path: str, request: Request, attempt: Attempt,
                          offset: int = Query(0, ge=0, le=2**40)) -> dict[str, Any]:
    return await _put_chunk(request, node_id, job_name, attempt, None, path, offset)


@router.get(RUN + "/resume/staged", summary="The resume folder's files sent and not committed yet",
            **answers(StagedFiles))
def resume_staged(node_id: str, job_name: str, request: Request, attempt: Attempt) -> dict[str, Any]:
    files = request.app.state.node_files
    return files.staged(files.upload(node_id, job_name, attempt, None))


@router.post(RUN + "/resume/commit", summary="Make the files named the resume folder's content",
             **answers(Committed))
def commit_resume(node_id: str, job_name: str, body: Commit, request: Request, attempt: Attempt) -> dict[str, Any]:
    files = request.app.state.node_files
    return files.commit(files.upload(node_id, job_name, attempt, None), body.files)


@router.put(RUN + "/outputs/{name}/files/{path:path}", summary="Part of a file of an output, staged until a commit",
            **answers(StagedChunk))
async def put_output_file(node_id: str, job_name: str, name: str, path: str, request: Request, attempt: Attempt,
                          offset: int = Query(0, ge=0, le=2**40)) -> dict[str, Any]:
    return await _put_chunk(request, node_id, job_name, attempt, name, path, offset)


@router.get(RUN + "/outputs/{name}/staged", summary="An output's files sent and not committed yet",
            **answers(StagedFiles))
def output_staged(node_id: str, job_name: str, name: str, request: Request, attempt: Attempt) -> dict[str, Any]:
    files = request.app.state.node_files
    return files.staged(files.upload(node_id, job_name, attempt, name))


@router.post(RUN + "/outputs/{name}/commit", summary="Check the files sent and put them at the output's path",
             **answers(Committed))
def commit_output(node_id: str, job_name: str, name: str, body: Commit, request: Request,
                  attempt: Attempt) -> dict[str, Any]:
    files = request.app.state.node_files
    return files.commit(files.upload(node_id, job_name, attempt, name), body.files)
