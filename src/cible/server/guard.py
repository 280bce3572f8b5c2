"""RequestGuard: the outermost pure ASGI middleware of the workspace server.

- Request bodies have a size limit, enforced before anything is buffered: a Content-Length over
  it is answered 413 at once, and a streamed (chunked) body is counted as the app reads it. Routes
  that stream uploads to disk get their own, larger limits.
- A NUL character in the URL is refused (400): paths and names reach the file system and SQL.
- An exception no handler answered becomes the error envelope here, without re-raising: Starlette's
  ServerErrorMiddleware answers and then re-raises, and uvicorn drops the keep-alive connection.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import ClientDisconnect

from cible.server.errors import PayloadTooLargeError, envelope, error_response
from cible.server.settings import ServerSettings

log = logging.getLogger("cible.server")

# (method or None for any, path pattern, setting that holds the limit)
_UPLOADS = "max_upload_bytes"
_ROUTE_LIMITS = (
    ("PUT", re.compile(r"/api/v1/blobs/[^/]+"), _UPLOADS),
    ("PUT", re.compile(r"/api/v1/agent/nodes/[^/]+/runs/[^/]+/files/.+"), "max_agent_chunk_bytes"),
    # A node that does not share the workspace: chunks of its resume folder and outputs, and their commits
    # (path -> sha256 of every file: larger than a plain request for a folder of many files).
    ("PUT", re.compile(r"/api/v1/agent/nodes/[^/]+/runs/[^/]+/(resume|outputs/[^/]+)/files/.+"),
     "max_agent_chunk_bytes"),
    ("POST", re.compile(r"/api/v1/agent/nodes/[^/]+/runs/[^/]+/(resume|outputs/[^/]+)/commit"),
     "max_agent_chunk_bytes"),
    (None, re.compile(r"^/mlflow/(ajax-)?api/2\.0/mlflow-artifacts/.*"), _UPLOADS),  # artifacts logged via the proxy
)
_ENV = {"max_request_bytes": "CIBLE_MAX_REQUEST_BYTES", "max_upload_bytes": "CIBLE_MAX_UPLOAD_BYTES",
        "max_agent_chunk_bytes": "CIBLE_MAX_AGENT_CHUNK_BYTES"}


class RequestGuard:
    def __init__(self, app: Any, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    def limit_of(self, scope: dict[str, Any]) -> tuple[int, str]:
        """The body limit of a request, and the environment variable that sets it."""
        name = "max_request_bytes"
        for method, pattern, setting in _ROUTE_LIMITS:
            if method in (None, scope["method"]) and pattern.fullmatch(scope["path"]):
                name = setting
                break
        return getattr(self.settings, name), _ENV[name]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await envelope(400, "InvalidRequest", "a NUL character (%00) is never valid in a URL")(scope, receive, send)
            return
        limit, setting = self.limit_of(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # Answered without reading the body (uvicorn discards what still arrives).
            await error_response(PayloadTooLargeError(limit, setting))(scope, receive, send)
            return
        received = 0
        started = ended = False

        async def receive_counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(limit, setting)
            return message

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        try:
            await self.app(scope, receive_counted, send_tracked)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            if not started:
                await error_response(exc, scope)(scope, receive, send)
            elif not ended:
                raise  # half a body was sent: only closing the connection tells the client
            else:
                log.warning("error after %s %s was answered", scope["method"], scope["path"], exc_info=exc)


def _content_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
