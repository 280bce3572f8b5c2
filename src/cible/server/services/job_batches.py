"""Many jobs in one request (`POST /api/v1/jobs`, the SDK's `jobs.create_or_update_many`): a sweep of
hundreds of short jobs submitted in a round trip, not one per job.

Every job is checked and planned first, as its own PUT would be; one refused refuses the batch, its
index and field named, and no new job is stored. The new jobs are then stored in one transaction, and
the reconcilers woken once. A job whose name is already stored is answered as its PUT would answer it
(so a batch sent again after a lost answer makes no job twice)."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy.exc import IntegrityError

from cible.core.errors import CibleError, ConflictError, InvalidRequestError
from cible.server.services.jobs import JobService, LostRace, NewJob

MAX_JOBS = 1000  # per request: the SDK sends more in several


def submit_batch(jobs: JobService, bodies: list[dict[str, Any]], user: str | None,
                 as_admin: bool = True) -> list[dict[str, Any]]:
    """Each job's name, status, target and whether this request made it, in the order sent."""
    if not bodies or len(bodies) > MAX_JOBS:
        raise InvalidRequestError(f"jobs: send 1 to {MAX_JOBS} jobs per request ({len(bodies)} were sent)",
                                  details={"field": "jobs"})
    names: dict[str, int] = {}
    prepared: list[NewJob | dict[str, Any]] = []
    for index, body in enumerate(bodies):
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"jobs[{index}].name: each job of a batch is named (the SDK names them)",
                                      details={"field": f"jobs[{index}].name", "index": index})
        if name in names:
            raise InvalidRequestError(f"jobs[{index}].name: '{name}' is also the name of jobs[{names[name]}]",
                                      details={"field": f"jobs[{index}].name", "index": index})
        names[name] = index
        try:
            prepared.append(jobs.prepare(name, body, user, None, as_admin))
        except CibleError as error:
            raise _at(error, index, name) from None
    new = [job for job in prepared if isinstance(job, NewJob)]
    if new:
        try:
            with jobs.store.session() as session:
                now = jobs.clock.now()
                for job in new:
                    jobs.add(session, job, now)
        except (IntegrityError, LostRace):
            raise ConflictError("a job of this batch was stored by another request meanwhile; no job of the batch "
                                "was stored: send it again (a job already stored is answered as it is)") from None
        jobs.on_change(new)
    return [_summary(job) for job in prepared]


def _summary(job: NewJob | dict[str, Any]) -> dict[str, Any]:
    if isinstance(job, NewJob):
        return {"name": job.name, "status": "Queued", "target": job.target, "created": True,
                "warnings": job.warnings}
    return {"name": job["name"], "status": job["status"], "target": job.get("target"), "created": False,
            "warnings": job.get("warnings", [])}


def _at(error: CibleError, index: int, name: str) -> CibleError:
    """The same error, saying which job of the batch it is about."""
    located = copy.copy(error)
    located.message = f"jobs[{index}] ('{name}'): {error.message}"
    located.args = (located.message,)
    if isinstance(error.details, list):  # a spec's problems, each with its field
        located.details = [_placed(item, index) if isinstance(item, dict) else item for item in error.details]
    else:
        located.details = _placed(error.details if isinstance(error.details, dict) else {}, index)
    return located


def _placed(details: dict[str, Any], index: int) -> dict[str, Any]:
    field = details.get("field")
    return {**details, "index": index, **({"field": f"jobs[{index}].{field}"} if field else {})}
