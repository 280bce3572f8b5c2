"""One place that turns errors into the API's envelope. Bad input is never a 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cible.core.errors import CibleError

log = logging.getLogger("cible.server")


def envelope(status: int, code: str, message: str, details=None) -> JSONResponse:  # noqa: ANN001
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, "details": details}})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CibleError)
    async def _cible(_: Request, exc: CibleError) -> JSONResponse:
        return envelope(exc.http_status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append({"field": where, "message": err.get("msg", "invalid")})
        message = "; ".join(f"{p['field'] or 'body'}: {p['message']}" for p in problems)
        return envelope(422, "InvalidRequest", message, problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed", 401: "Unauthorized"}.get(exc.status_code, "HttpError")
        return envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected server error")
        return envelope(500, "Internal", f"internal error: {type(exc).__name__}: {exc}")
