"""One place that turns errors into the API's envelope. Bad input is never a 500.

A 500 never echoes the exception: its text can hold SQL, file paths or values of the request
(secrets among them). The body names an incident id; server.log has the traceback.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DataError, StatementError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cible.core.errors import CibleError
from cible.server.store.db import concurrent_update_error, store_error

log = logging.getLogger("cible.server")
HTTP_CODES = {400: "InvalidRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
              413: "PayloadTooLarge"}


def envelope_body(code: str, message: str, details: Any = None) -> bytes:
    """The error envelope's JSON body, `{"error": {"code", "message", "details"}}`: what every refusal
    answers, from a route, a handler or a middleware that writes its own ASGI messages."""
    content = {"error": {"code": code, "message": message, "details": details}}
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def envelope(status: int, code: str, message: str, details: Any = None,
             headers: dict[str, str] | None = None) -> Response:
    return Response(envelope_body(code, message, details), status_code=status, headers=headers,
                    media_type="application/json")


class PayloadTooLargeError(StarletteHTTPException):
    """A request body over its limit. An HTTPException, so that FastAPI's body parsing passes it on
    (it turns any other exception raised while reading a body into a 400)."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"the request body is larger than {human_bytes(limit)}, this server's limit for "
                              f"this route (set by {setting} on the server)")


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def error_response(exc: Exception, scope: dict[str, Any] | None = None) -> Response:
    """The envelope for an exception that no route turned into one."""
    if isinstance(exc, CibleError):
        return envelope(exc.http_status, exc.code, exc.message, exc.details)
    if isinstance(exc, StarletteHTTPException):
        return envelope(exc.status_code, HTTP_CODES.get(exc.status_code, "HttpError"), str(exc.detail))
    if isinstance(exc, StaleDataError):  # a write outside Store.transact that lost the race: the client retries
        error = concurrent_update_error(exc)
        return envelope(error.http_status, error.code, error.message, error.details)
    if _out_of_range(exc):
        # A number of the request that Python holds but the database (or the OS) cannot: the client's.
        return envelope(400, "InvalidRequest", "a number in the request is out of range (integers are stored as "
                        "64-bit: at most 9223372036854775807)")
    if isinstance(exc, DataError):  # e.g. PostgreSQL refusing a NUL character or an out-of-range integer
        return envelope(400, "InvalidRequest", "the workspace store cannot hold a value of the request "
                        "(a number out of range, or a NUL character in a text)")
    where = f"{scope.get('method')} {scope.get('path')}" if scope else "a request"
    unavailable = store_error(exc)
    if unavailable is not None:
        log.warning("%s: %s", where, unavailable.message)
        return envelope(unavailable.http_status, unavailable.code, unavailable.message, unavailable.details)
    incident = secrets.token_hex(4)
    log.error("internal error %s on %s", incident, where, exc_info=exc)
    return envelope(500, "Internal", f"internal error (id {incident}); see server.log", {"id": incident})


def _out_of_range(exc: BaseException) -> bool:
    if isinstance(exc, StatementError):  # SQLAlchemy wraps the driver's OverflowError
        exc = exc.orig if exc.orig is not None else exc
    return isinstance(exc, OverflowError)


def validation_problems(exc: RequestValidationError) -> tuple[str, list[dict[str, str]]]:
    """What a refused request got wrong, field by field, and as one line."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append({"field": where, "message": err.get("msg", "invalid")})
    return "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems), problems


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CibleError)
    async def _cible(_: Request, exc: CibleError) -> Response:
        return envelope(exc.http_status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        message, problems = validation_problems(exc)
        return envelope(422, "InvalidRequest", message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Only what escapes the RequestGuard middleware (which answers without re-raising, so
        # that the connection survives) lands here.
        return error_response(exc, request.scope)
