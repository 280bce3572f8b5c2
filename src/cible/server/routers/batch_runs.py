"""/api/v1/jobs/{name}/batch…: a batch job's runners and its progress (services/batch_runs.py).

Callable with the workspace token or with the job's own run token (server/auth.py lets a job's token
reach its own job's batch routes only); a run token of an earlier submission of the name, or of a job
ended a while ago, is refused here as the tracking proxy refuses it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request

from cible.core.errors import ForbiddenError
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.batch_runs import BatchClaimAnswer, BatchLostAnswer, BatchOutcome, BatchProgress, BatchStart
from cible.server.services.batch_runs import BatchRunService

router = APIRouter(prefix="/api/v1/jobs", tags=["batch runs"], default_response_class=JSON)


def _service(request: Request, name: str) -> BatchRunService:
    granted = request.scope.get("state", {}).get("token_scope")
    if granted is not None and granted.kind == "job":
        refusal = request.app.state.batch_token_check(granted.name, granted.salt)
        if refusal is not None:
            raise ForbiddenError(refusal)
    return request.app.state.batch_runs


@router.post("/{name}/batch:start", summary="A batch runner starts: record the split of the input (once) and "
                                            "answer the settings and the number of mini-batches", **answers(BatchStart))
def start(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request, name).start(name, body)


@router.post("/{name}/batch:claim", summary="Report a mini-batch's outcome and claim the next: a mini-batch, "
                                            "a wait, or finished", **answers(BatchClaimAnswer))
def claim(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request, name).claim(name, body)


@router.post("/{name}/batch:lost", summary="A worker process died holding a claim: a failed try of it",
             **answers(BatchLostAnswer))
def lost(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request, name).lost(name, body)


@router.post("/{name}/batch:fail", summary="The batch run cannot go on (its scoring script cannot start)",
             **answers(BatchOutcome))
def fail(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request, name).fail(name, body)


@router.get("/{name}/batch", summary="A batch job's progress: mini-batches done, failed, running, rows/s",
            **answers(BatchProgress))
def show(name: str, request: Request) -> dict[str, Any]:
    return _service(request, name).progress(name) or {}
