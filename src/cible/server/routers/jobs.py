"""/api/v1/jobs: thin HTTP over the job service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from cible.core.errors import ForbiddenError
from cible.server.identity import as_admin, caller, identity
from cible.server.routers.paging import DEFAULT_TOP, Skip, Top
from cible.server.routers.responses import BYTES, JSON, answers
from cible.server.schemas.common import FileList
from cible.server.schemas.jobs import Job, JobBatch, JobPage, JobValidation
from cible.server.services.artifacts import ArtifactService
from cible.server.services.job_batches import submit_batch

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], default_response_class=JSON)
LOG_CHUNK = 1 << 20
# Numbers that reach SQL or the OS are range-checked here (a 422, not an OverflowError's 500).
MAX_LOG_OFFSET = 2**40  # 1 TiB: past any log
LOG_ANSWER = {200: {"description": "up to 1 MiB of the log from `offset`", "content": {"application/octet-stream": {}},
                    "headers": {"X-Cible-Next-Offset": {"description": "the offset to read from next",
                                                        "schema": {"type": "string"}},
                                "X-Cible-Job-Status": {"description": "the job's status when read",
                                                       "schema": {"type": "string"}}}}}


def _jobs(request: Request):  # noqa: ANN202
    return request.app.state.jobs


def require_creator(request: Request, name: str, verb: str) -> None:
    """A job is cancelled, archived, restored or deleted by whoever submitted it, or by an Owner."""
    who = identity(request)
    if who.is_admin:
        return
    creator = _jobs(request).creator(name)
    if creator != who.user:
        raise ForbiddenError(f"job '{name}' was submitted by {repr(creator) if creator else 'the workspace token'}; "
                             f"user '{who.user}' ({who.role}) may not {verb} it: only its creator or an Owner may",
                             details={"job": name, "created_by": creator})


def _artifacts(request: Request) -> ArtifactService:
    return request.app.state.artifacts


class JobBatchRequest(BaseModel):
    """Jobs to submit in one request, each a job body as `PUT /jobs/{name}` takes it, with its name."""

    jobs: list[dict[str, Any]] = Field(description="the jobs, each with its `name` (1 to 1000)")


@router.post("", summary="Submit many jobs in one request (each named): all checked first, one refused refuses "
                         "them all; each job's name and status", **answers(JobBatch))
def submit_jobs(request: Request, body: JobBatchRequest) -> dict[str, Any]:
    return {"value": submit_batch(_jobs(request), body.jobs, user=caller(request), as_admin=as_admin(request))}


@router.put("/{name}", summary="Create a job, or update its display name, description and tags", **answers(Job))
def put_job(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _jobs(request).create_or_update(name, body, user=caller(request), as_admin=as_admin(request))


@router.patch("/{name}", summary="Change a job's display_name, description or tags (`az ml job update`)",
              **answers(Job))
def update_job(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _jobs(request).update(name, body)


@router.post("/{name}:validate", summary="Check a job as its submit would (compute, sizes, inputs, environment), "
                                         "storing nothing; the same error as the submit, or where it would run",
             **answers(JobValidation))
def validate_job(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _jobs(request).validate(name, body, user=caller(request), as_admin=as_admin(request))


@router.get("/{name}", summary="A job, with its status history and its MLflow run's latest metrics and params",
            **answers(Job))
def get_job(name: str, request: Request) -> dict[str, Any]:
    job = _jobs(request).get(name)
    return {**job, **_artifacts(request).tracking_summary(job, request.app.state.tracking)}


@router.get("", summary="A page of the jobs, newest first", **answers(JobPage))
def list_jobs(
    request: Request,
    skip: Skip = 0,
    top: Top = 50,
    status: str | None = None,
    experiment_name: str | None = None,
    include_archived: bool = Query(False, description="list archived jobs with the others (`--include-archived`)"),
    archived_only: bool = Query(False, description="list the archived jobs alone (`--archived-only`)"),
    parent_job_name: str | None = Query(None, description="list this sweep's trials or pipeline's steps "
                                                          "(`--parent-job-name`) instead of top-level jobs"),
    compute: str | None = Query(None, description="only the jobs on this compute (`cpu-cluster` or "
                                                  "`azureml:cpu-cluster`; `serverless`: jobs on serverless nodes)"),
    created_by: str | None = Query(None, description="only the jobs this user submitted (`--created-by`; "
                                                     "`--mine`: the caller)"),
) -> dict[str, Any]:
    return _jobs(request).list(skip=skip, top=top, status=status, experiment=experiment_name,
                               include_archived=include_archived, archived_only=archived_only,
                               parent_job_name=parent_job_name, compute=compute, created_by=created_by)


@router.delete("/{name}", status_code=204)
def delete_job(name: str, request: Request) -> Response:
    require_creator(request, name, "delete")
    _jobs(request).delete(name)
    return Response(status_code=204)


@router.post("/{name}:cancel", summary="Ask for a job's cancel", **answers(Job))
def cancel_job(name: str, request: Request) -> dict[str, Any]:
    require_creator(request, name, "cancel")
    return _jobs(request).cancel(name, by=identity(request).user)


@router.post("/{name}:archive", summary="Hide an ended job from `job list` (`az ml job archive`)", **answers(Job))
def archive_job(name: str, request: Request) -> dict[str, Any]:
    require_creator(request, name, "archive")
    return _jobs(request).set_archived(name, True)


@router.post("/{name}:restore", summary="Show an archived job in `job list` again (`az ml job restore`)",
             **answers(Job))
def restore_job(name: str, request: Request) -> dict[str, Any]:
    require_creator(request, name, "restore")
    return _jobs(request).set_archived(name, False)


@router.get("/{name}/logs", summary="Bytes of user_logs/std_log.txt from an offset", response_class=Response,
            responses=LOG_ANSWER)
def job_logs(name: str, request: Request, offset: int = Query(0, ge=0, le=MAX_LOG_OFFSET)) -> Response:
    status, data, next_offset = _artifacts(request).read_log(name, offset, LOG_CHUNK)
    headers = {"X-Cible-Next-Offset": str(next_offset), "X-Cible-Job-Status": status}
    return Response(content=data, media_type="application/octet-stream", headers=headers)


@router.get("/{name}/files", summary="The job's downloadable files, in `az ml job download` layout",
            **answers(FileList))
def job_files(name: str, request: Request, output_name: str | None = None, all: bool = False,  # noqa: A002
              skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return _artifacts(request).list_files(name, output_name=output_name, everything=all, skip=skip, top=top)


@router.get("/{name}/files/{path:path}", summary="One of the job's files", response_class=FileResponse,
            responses=BYTES)
def job_file(name: str, path: str, request: Request) -> FileResponse:
    return FileResponse(_artifacts(request).file_path(name, path))
