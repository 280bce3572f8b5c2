"""The scoring server's ASGI app: Azure's routes, codes, messages and headers (azureml-spec §7.2).

| route | answer |
| --- | --- |
| `GET /` (HEAD) | 200 `Healthy`; 503 `{"message": why}` while the script is not ready (init failed) |
| `POST /score` (GET, OPTIONS) | run()'s result as JSON, or the AMLResponse it returned; OPTIONS 200 (unless @rawhttp) |
| `GET /swagger.json?version=` | the OpenAPI document (swagger.py); 404 for an unknown version |
| other | 404 / 405 `{"message"}` |

Errors are JSON `{"message"}`: 400 bad input, 415 not JSON where JSON is needed, 431 request-id
headers over 100 characters, 500 `An unexpected error occurred in scoring script. Check the logs for
more info.` when run() raises (its traceback goes to the log), 500 `Scoring timeout after N ms`.
Every answer carries `x-request-id` (echoed or new), `x-ms-request-id`, `x-ms-client-request-id`
(Azure's rules), `TraceId` when sent, and `x-ms-server-version: cible/<version>`; answers of
/score carry `x-ms-run-function-failed` and `x-ms-run-fn-exec-ms`.

Speed is the point of this module (see the package docstring): no framework, one pass over the
request headers, run() called inline on the event loop (the main thread), and the timeout armed
with a SIGALRM itimer around it, which is what Azure does: a run() busy in Python code is
interrupted; one blocked inside a C call is interrupted when it returns to Python.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import cible
from cible.serving import codec
from cible.serving.request import AMLRequest, title_case_headers
from cible.serving.script import BadInput, Scorer, UnsupportedInput
from cible.serving.shims import AMLResponse
from cible.serving.swagger import SwaggerDocuments, SwaggerNotFound

logger = logging.getLogger("cible.serving")

RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."
NOT_FOUND = ("The requested URL was not found on the server. If you entered the URL manually please check your "
             "spelling and try again.")
NOT_ALLOWED = "The method is not allowed for the requested URL."
HEADER_LIMIT = 100
# On GET / while the script is not loaded (init() raised): tells the endpoint reconciler's probe that this
# replica will not get ready by waiting (server/reconcilers/probes.py).
INIT_FAILED_HEADER = b"x-cible-init-failed"
DEFAULT_TIMEOUT_MS = 3_600_000  # SCORING_TIMEOUT_MS's default on Azure

_JSON = b"application/json"
_TEXT_HTML = b"text/html; charset=utf-8"
_TRUE, _FALSE = b"True", b"False"
_MAIN_THREAD = threading.main_thread().ident


class ScoringTimeout(BaseException):
    """Raised into run() by the SIGALRM handler. A BaseException, so a run() that catches Exception
    does not swallow its own timeout."""


_armed = False  # the alarm raises only while run() is on the stack; a late signal is ignored


def _on_alarm(signum: int, frame: Any) -> None:
    if _armed:
        raise ScoringTimeout


class ServingState:
    """What the app serves now: a ready scorer, or the reason there is none. `on_change` hears every
    change (main.py rewrites the state file)."""

    def __init__(self, app_root: str, on_change: Callable[[ServingState], None] | None = None) -> None:
        self.app_root, self.on_change = app_root, on_change
        self.scorer: Scorer | None = None
        self.error: str | None = "The scoring script is not loaded yet."
        self.swagger: SwaggerDocuments | None = None

    @property
    def ready(self) -> bool:
        return self.scorer is not None

    def set(self, scorer: Scorer | None, error: str | None) -> None:
        self.scorer, self.error = scorer, (None if scorer is not None else error or "not ready")
        self.swagger = SwaggerDocuments(self.app_root, scorer.run) if scorer is not None else None
        if self.on_change is not None:
            self.on_change(self)


class ScoringApp:
    """The ASGI callable. `timeout_ms` <= 0 turns the scoring timeout off."""

    def __init__(self, state: ServingState, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self.state = state
        self.timeout_s = max(timeout_ms, 0) / 1000
        self.timeout_ms = timeout_ms
        self._alarm: bool | None = None  # SIGALRM handler installed (main thread only), decided on first use
        enabled = os.environ.get("SERVER_VERSION_LOG_RESPONSE_ENABLED", "true").lower() not in ("false", "0", "no")
        self._server_version = [(b"x-ms-server-version", f"cible/{cible.__version__}".encode())] if enabled else []

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        ids, content_type, problem = self._request_ids(scope["headers"])
        path, method = scope["path"], scope["method"]
        try:
            if problem is not None:
                await self._error(send, ids, 431, problem)
            elif path == "/score":
                await self._score(scope, receive, send, method, ids, content_type)
            elif path == "/":
                await self._health(send, method, ids)
            elif path == "/swagger.json":
                await self._swagger(scope, send, method, ids)
            else:
                await self._error(send, ids, 404, NOT_FOUND)
        except Exception:  # a fault of the server's own: Azure's JSON 500, not uvicorn's text one
            logger.error("Unhandled error answering %s %s", method, path, exc_info=True)
            try:
                await self._error(send, ids, 500, INTERNAL_ERROR)
            except Exception:  # noqa: BLE001 - the answer had started: nothing more can be said
                pass

    # -- request ids (Azure's rules: routes.py _init_headers)
    def _request_ids(self, headers: list[tuple[bytes, bytes]]) -> tuple[list, bytes | None, str | None]:
        request_id = legacy = client = trace = content_type = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"x-ms-request-id":
                legacy = value
            elif name == b"x-ms-client-request-id":
                client = value
            elif name == b"traceid":
                trace = value
        problem = None
        if request_id is None:
            request_id = str(uuid.uuid4()).encode()
        elif len(request_id) > HEADER_LIMIT:
            request_id, problem = None, f"x-request-id must not exceed {HEADER_LIMIT} characters"
        if legacy:
            client = client or legacy
        else:
            legacy = client or request_id
        if problem is None and ((legacy and len(legacy) > HEADER_LIMIT) or (client and len(client) > HEADER_LIMIT)):
            legacy = client = None
            problem = f"x-ms-request-id and x-ms-client-request-id must not exceed {HEADER_LIMIT} characters"
        ids = [*self._server_version]
        if request_id:
            ids.append((b"x-request-id", request_id))
        if legacy:
            ids.append((b"x-ms-request-id", legacy))
        if client:
            ids.append((b"x-ms-client-request-id", client))
        if trace is not None:
            ids.append((b"traceid", trace))
        return ids, content_type, problem

    # -- routes
    async def _health(self, send: Callable, method: str, ids: list) -> None:
        if method not in ("GET", "HEAD", "OPTIONS"):
            await self._error(send, ids, 405, NOT_ALLOWED)
        elif not self.state.ready:  # the script failed to load or init() raised: the replica says so
            await self._error(send, [*ids, (INIT_FAILED_HEADER, _TRUE)], 503, self.state.error or "not ready")
        elif method == "OPTIONS":
            await _send(send, 200, b"", _TEXT_HTML, [*ids, (b"allow", b"GET, HEAD, OPTIONS")])
        else:
            await _send(send, 200, b"Healthy", _TEXT_HTML, ids)

    async def _swagger(self, scope: dict[str, Any], send: Callable, method: str, ids: list) -> None:
        if method not in ("GET", "HEAD"):
            await self._error(send, ids, 405, NOT_ALLOWED)
            return
        documents = self.state.swagger
        if documents is None:
            await self._error(send, ids, 503, self.state.error or "not ready")
            return
        version = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("version")
        try:
            document = documents.get(version)
        except SwaggerNotFound as exc:
            await self._error(send, ids, 404, str(exc))
            return
        await _send(send, 200, codec.dumps(document), _JSON, [*ids, (b"x-ms-run-function-failed", _FALSE)])

    async def _score(self, scope: dict[str, Any], receive: Callable, send: Callable, method: str, ids: list,
                     content_type: bytes | None) -> None:
        scorer = self.state.scorer
        if scorer is None:
            await self._error(send, ids, 503, self.state.error or "not ready")
            return
        if method not in ("POST", "GET", "OPTIONS"):
            await self._error(send, ids, 405, NOT_ALLOWED)
            return
        mode = scorer.mode
        body = await _read_body(receive)
        if body is None:  # the client went away before sending its whole body
            return
        if method == "OPTIONS" and mode != "rawhttp":  # CORS preflight (Azure answers it without run())
            await _send(send, 200, b"", _TEXT_HTML, [*ids, (b"x-ms-run-function-failed", _FALSE)])
            return
        kwargs = None
        try:
            if mode == "raw":
                data: Any = _text(body) if method == "POST" else json.dumps(_query_values(scope))
            elif mode == "schema":
                kwargs = scorer.schema_arguments(_json_object(body, content_type) if method == "POST"
                                                 else _query_values(scope))
            elif mode == "rawhttp":
                data = AMLRequest(scope, body)
            else:  # mlflow: the body itself, parsed by the model's scorer
                data = body if method == "POST" else json.dumps(_query_values(scope)).encode()
        except BadInput as exc:
            await self._error(send, ids, 400, str(exc))
            return
        except UnsupportedInput as exc:
            await self._error(send, ids, 415, str(exc))
            return
        request_headers = title_case_headers(scope["headers"]) if getattr(scorer, "wants_headers", False) else None
        try:
            result, elapsed_ms = self._invoke(scorer, mode, data if kwargs is None else None, kwargs, request_headers)
        except ScoringTimeout:
            logger.error("Scoring timeout after %s ms (x-request-id %s)", self.timeout_ms, _rid(ids), exc_info=True)
            await self._error(send, ids, 500, f"Scoring timeout after {self.timeout_ms} ms", failed=True)
            return
        except Exception as exc:  # noqa: BLE001 - whatever run() raises is Azure's 500
            if mode == "mlflow" and isinstance(exc, BadInput):
                await self._error(send, ids, 400, str(exc))
                return
            logger.error("run() raised an exception (x-request-id %s)", _rid(ids), exc_info=True)
            malformed = _malformed_json(body, content_type) if mode == "raw" and method == "POST" else None
            if malformed:  # the caller's fault, said as such (Azure would answer its 500 here)
                await self._error(send, ids, 400, malformed, failed=True)
                return
            await self._error(send, ids, 500, RUN_FAILED, failed=True)
            return
        exec_ms = (b"x-ms-run-fn-exec-ms", b"%.3f" % elapsed_ms)
        if isinstance(result, AMLResponse) or _is_response(result):
            await self._send_response(send, result, ids, exec_ms)
            return
        try:
            out = codec.dumps(result)
        except Exception:  # noqa: BLE001 - a result JSON cannot hold: Azure's unhandled-error answer
            logger.error("run()'s result cannot be serialised as JSON (x-request-id %s)", _rid(ids), exc_info=True)
            await self._error(send, ids, 500, INTERNAL_ERROR)
            return
        await _send(send, 200, out, _JSON, [*ids, (b"x-ms-run-function-failed", _FALSE), exec_ms])

    def _invoke(self, scorer: Scorer, mode: str, data: Any, kwargs: dict[str, Any] | None,
                request_headers: dict[str, str] | None) -> tuple[Any, float]:
        """run() (or the MLflow model), under the SIGALRM timeout; returns (result, elapsed ms)."""
        global _armed
        timed = self.timeout_s > 0 and threading.get_ident() == _MAIN_THREAD and self._alarm_installed()
        start = time.perf_counter()
        if timed:
            _armed = True
            signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            if mode == "mlflow":
                result = scorer.score(data)
            elif kwargs is not None:
                result = scorer.run(**kwargs, request_headers=request_headers) if request_headers is not None \
                    else scorer.run(**kwargs)
            elif scorer.positional:
                result = scorer.run(data)
            elif request_headers is not None:
                result = scorer.run(**{scorer.input_name: data, "request_headers": request_headers})
            else:
                result = scorer.run(**{scorer.input_name: data})
        finally:
            if timed:
                _armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        return result, (time.perf_counter() - start) * 1000

    def _alarm_installed(self) -> bool:
        if self._alarm is None:
            try:
                signal.signal(signal.SIGALRM, _on_alarm)
                self._alarm = True
            except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGALRM (Windows)
                self._alarm = False
        return self._alarm

    async def _send_response(self, send: Callable, response: Any, ids: list, exec_ms: tuple[bytes, bytes]) -> None:
        """A response run() returned, sent as it is (status >= 500 marks the run failed, as Azure does)."""
        status = int(response.status_code)
        body = response.get_data()
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers, content_type, failed = [], None, False
        for name, value in response.headers.items():
            lower = str(name).lower()
            if lower in ("content-length", "transfer-encoding"):
                continue
            if lower == "content-type":
                content_type = str(value).encode("latin-1", "replace")
            elif lower == "x-ms-run-function-failed":
                failed = str(value) == "True"
            else:
                headers.append((lower.encode("latin-1"), str(value).encode("latin-1", "replace")))
        failed = failed or status >= 500
        headers += [(b"x-ms-run-function-failed", _TRUE if failed else _FALSE), exec_ms, *ids]
        await _send(send, status, body, content_type, headers)

    async def _error(self, send: Callable, ids: list, status: int, message: str, failed: bool = False) -> None:
        await _send(send, status, codec.dumps({"message": message}), _JSON,
                    [*ids, (b"x-ms-run-function-failed", _TRUE if failed else _FALSE)])


def _is_response(value: Any) -> bool:
    """A Flask/werkzeug Response (or anything shaped like one) returned by run()."""
    return isinstance(getattr(value, "status_code", None), int) and hasattr(value, "headers") \
        and callable(getattr(value, "get_data", None))


def _rid(ids: list) -> str:
    return next((value.decode("latin-1") for name, value in ids if name == b"x-request-id"), "")


def _malformed_json(body: bytes, content_type: bytes | None) -> str | None:
    """Why a JSON request body does not parse, or None (not JSON, or it parses). Asked only once run()
    has raised, so a well-formed request pays nothing for it."""
    if content_type is None or b"json" not in content_type.lower():
        return None
    try:
        json.loads(body)
    except ValueError as exc:
        return f"the request body is not valid JSON: {exc}"
    return None


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"Input cannot be decoded as UTF-8: {exc}") from None


def _json_object(body: bytes, content_type: bytes | None) -> dict[str, Any]:
    """The body of an @input_schema request: JSON (by its content type, else 415), an object (else 400)."""
    mimetype = (content_type or b"").split(b";")[0].strip().lower()
    if not (mimetype == b"application/json" or (mimetype.startswith(b"application/") and mimetype.endswith(b"+json"))):
        raise UnsupportedInput("Expects Content-Type to be application/json")
    try:
        value = codec.loads(body)
    except ValueError as exc:
        if body:
            raise BadInput(f"POST body could not be decoded as JSON: {exc}") from None
        raise BadInput("POST body is empty. Expecting a JSON dictionary.") from None
    if not isinstance(value, dict):
        raise BadInput("POST body should be a JSON dictionary.")
    return value


def _query_values(scope: dict[str, Any]) -> dict[str, Any]:
    """GET /score's query as Azure reads it: each value parsed as JSON where it is JSON (else kept as text),
    a repeated key as a list."""
    values: dict[str, list[Any]] = {}
    for key, text in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        values.setdefault(key, []).append(value)
    return {key: items[0] if len(items) == 1 else items for key, items in values.items()}


async def _read_body(receive: Callable) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    message = await receive()
    if not message.get("more_body", False):
        return None if message["type"] == "http.disconnect" else message.get("body", b"")
    chunks = [message.get("body", b"")]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Callable, status: int, body: bytes, content_type: bytes | None, headers: list) -> None:
    # content-length always: uvicorn then writes the body as it is (no chunked framing)
    start = [(b"content-length", b"%d" % len(body)), *headers]
    if content_type is not None:
        start.insert(0, (b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
