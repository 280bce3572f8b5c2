"""One exception tree with machine codes.

The server maps each code to an HTTP status and the body
``{"error": {"code", "message", "details"}}``; the client maps the code back to
the same class; the CLI prints the message and exits non-zero.
Stdlib only: the launcher imports this module.
"""

from __future__ import annotations

from typing import Any


class CibleError(Exception):
    """Base of every error cible raises on purpose."""

    code = "Error"
    http_status = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidSpecError(CibleError):
    """A YAML file or request body that does not describe a valid entity."""

    code = "InvalidSpec"
    http_status = 422


class InvalidRequestError(CibleError):
    """A well-formed request that asks for something that cannot be done as asked."""

    code = "InvalidRequest"
    http_status = 400


class NotFoundError(CibleError):
    code = "NotFound"
    http_status = 404


class ConflictError(CibleError):
    code = "Conflict"
    http_status = 409


class InvalidTransitionError(ConflictError):
    """A status change that the entity's transition table does not allow."""

    code = "InvalidTransition"


class ConcurrentUpdateError(ConflictError):
    """A write that met another writer's change of the same row (optimistic concurrency): nothing
    was changed, and the same request sent again is judged against the row as it is now."""

    code = "ConcurrentUpdate"


class UnauthorizedError(CibleError):
    code = "Unauthorized"
    http_status = 401


class ForbiddenError(CibleError):
    """A valid token that may not do this (a job's or a node's scoped token)."""

    code = "Forbidden"
    http_status = 403


class ServerUnavailableError(CibleError):
    """The workspace server cannot be reached or started."""

    code = "ServerUnavailable"
    http_status = 503


class JobFailedError(CibleError):
    """A streamed job ended Failed or Canceled (used by `--stream`)."""

    code = "JobFailed"
    http_status = 409


class InternalError(CibleError):
    code = "Internal"
    http_status = 500


class StoreUnavailableError(CibleError):
    """The workspace store cannot serve the request now (read-only, disk full, damaged, busy)."""

    code = "StoreUnavailable"
    http_status = 503


class StoreDamagedError(CibleError):
    """The server refuses to start on this database (damaged, or missing under existing runs)."""

    code = "StoreDamaged"
    http_status = 503


class UnreadableRecordError(StoreDamagedError):
    """One stored record (a job's run, a compute's status, a node's info) that this release cannot
    read: written by a newer cible, or damaged. Only what needs that record fails; the rest of the
    workspace is served (lists show the item as unreadable)."""

    code = "UnreadableRecord"


class TrackingUnavailableError(CibleError):
    """The workspace's MLflow tracking server is not running (yet) or does not answer."""

    code = "TrackingUnavailable"
    http_status = 503


ERRORS_BY_CODE: dict[str, type[CibleError]] = {
    cls.code: cls
    for cls in (
        CibleError,
        InvalidSpecError,
        InvalidRequestError,
        NotFoundError,
        ConflictError,
        InvalidTransitionError,
        ConcurrentUpdateError,
        UnauthorizedError,
        ForbiddenError,
        ServerUnavailableError,
        JobFailedError,
        InternalError,
        StoreUnavailableError,
        StoreDamagedError,
        UnreadableRecordError,
        TrackingUnavailableError,
    )
}


def error_from_dict(body: dict[str, Any]) -> CibleError:
    """Rebuild the exception a server error envelope describes."""
    cls = ERRORS_BY_CODE.get(body.get("code", ""), CibleError)
    return cls(body.get("message", "unknown error"), details=body.get("details"))
