"""The gateway server: an HTTP/1.1 front on its own thread and uvloop event loop.

Why its own thread and loop: the API server's work (database, reconcilers) must never sit between a
scoring request and its replica.

Why not uvicorn + ASGI, as first designed: side by side on the 2-core machine (wrk -t1, in front of
perf-anchors' floor: FastAPI + orjson + predict), the same routing code behind uvicorn's ASGI layer
added +0.26 ms p50 at concurrency 1 and reached 0.67× the floor's requests/s at 32; this protocol adds
+0.14 ms and reaches 0.89× (in front of a constant-answer app: 0.27× against 0.61×). uvicorn's
per-request scope and message dicts, Event, keep-alive timer and separate head/body writes cost more
than the proxying itself. The hop is the product here, so the front is this small protocol: httptools
(llhttp) parses, `app.py` decides, the answer goes out in one write. TCP_NODELAY is set on
every socket explicitly (perf-anchors §4.3: the 40 ms Nagle stall). Nothing is logged per request.

HTTP behaviour: keep-alive (HTTP/1.1 default, `Connection: close` and HTTP/1.0 honoured), pipelined
requests answered in order, `Expect: 100-continue`, headers capped at 64 KiB (431), idle connections
closed after `keep_alive_s`, a body over the limit answered 413 at once and the connection closed.
Every state change and read goes through the loop thread (`_on_loop`), so the request path needs no
locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httptools

from cible.server.gateway.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SCALE_FROM_ZERO_WAIT_S,
    GatewayApp,
    Request,
    message_body,
)
from cible.server.gateway.routes import RouteTable

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
SHUTDOWN_GRACE_S = 5.0

_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus}
# Request headers that stay at the gateway: hop-by-hop ones (RFC 9110 §7.6.1), those it writes itself
# (host, content-length), the credential, and Expect (answered here).
_REQUEST_SKIP = frozenset({
    b"authorization", b"content-length", b"host", b"connection", b"keep-alive", b"proxy-connection",
    b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-authorization", b"expect",
})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _ClientConnection(asyncio.Protocol):
    """One client connection: parse requests, hand them to the app, write the answers in order."""

    __slots__ = ("app", "busy", "closing", "front", "head_bytes", "head_too_large", "idle", "linger", "parser",
                 "queue", "req", "transport", "in_head", "head_raw")

    def __init__(self, front: _Front) -> None:
        self.front = front
        self.app = front.app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.req: Request | None = None
        self.busy = False  # a request of this connection is being answered
        self.queue: deque[Request] | None = None  # pipelined requests waiting their turn
        self.closing = False
        self.idle = 0  # sweeps since the last byte or answer
        self.head_bytes = 0
        self.head_too_large = False
        self.in_head = False  # between a request's first byte and the end of its headers
        self.head_raw = 0  # bytes received meanwhile (httptools holds a header line whole until it ends)
        self.linger = False  # answered before the body was read: half-close, drain, then close

    # ---- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue = None
        self.front.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.idle = 0
        if self.in_head:  # one endless header line must not grow the parser's buffer without bound
            self.head_raw += len(data)
            if self.head_raw > 2 * MAX_HEAD_BYTES:
                self.head_too_large = True
                self._refuse(431, f"Request headers larger than {MAX_HEAD_BYTES} bytes")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # Upgrade (h2c, websocket) is not offered: the request was answered as HTTP/1.1
        except httptools.HttpParserCallbackError:
            logger.exception("gateway: a request broke the handler")
            self._refuse(500, "Gateway error")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Bad request: {exc}")
        if self.head_too_large and not self.closing:
            self._refuse(431, f"Request headers larger than {MAX_HEAD_BYTES} bytes")

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.queue:
            self.transport.resume_reading()

    # ---- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.req = Request()
        self.head_bytes = 0
        self.in_head, self.head_raw = True, 0

    def on_url(self, url: bytes) -> None:
        self.req.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True
            return
        req = self.req
        lname = name.lower()
        if lname in _REQUEST_SKIP:
            if lname == b"authorization":
                req.auth = value
            elif lname == b"content-length":
                req.content_length = int(value) if value.strip().isdigit() else -1
            elif lname == b"expect":
                req.expect_continue = value.strip().lower() == b"100-continue"
            return
        if lname == b"azureml-model-deployment":
            req.pin = value
        req.header_lines += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_too_large:
            return
        req = self.req
        parser = self.parser
        req.method = parser.get_method()
        req.is_head = req.method == b"HEAD"
        req.keep_alive = parser.should_keep_alive()
        self.app.admit(req)
        reject = req.reject
        if reject is not None and (reject[0] == 413 or req.expect_continue):
            self._answer_early(req)  # no use reading a body we refuse
        elif req.expect_continue:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        req = self.req
        if self.closing or req is None:
            return
        req.size += len(body)
        if req.size > self.app.max_body_bytes:
            req.reject = (413, f"Payload too large: the limit is {self.app.max_body_bytes} bytes", None)
            self._answer_early(req)
        elif req.reject is None:
            req.body.append(body)

    def on_message_complete(self) -> None:
        req, self.req = self.req, None
        if self.closing or req is None or self.head_too_large:
            return
        if self.busy:
            if self.queue is None:
                self.queue = deque()
            self.queue.append(req)
            self.transport.pause_reading()
            return
        self._start(req)

    # ---- answering -------------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        self.busy = True
        reject = req.reject
        if reject is not None:
            self.app.reply_error(self, req, reject[0], reject[1], reject[2])
        else:
            self.app.dispatch(req, self)

    def _start_queued(self, req: Request) -> None:
        if self.closing or self.transport.is_closing():
            self.busy = False
            return
        self._start(req)

    def _answer_early(self, req: Request) -> None:
        """Answer `req` before its body is read, then close: the rest of the body is never read."""
        self.req = None
        if self.busy:  # an earlier request is still being answered: close after it, this one unanswered
            self.closing = True
            self.transport.pause_reading()
            return
        req.keep_alive = False
        self.linger = True
        self._start(req)
        self.closing = True

    def _refuse(self, status: int, text: str) -> None:
        self.req = None
        if self.busy:
            self.closing = True
            self.transport.pause_reading()
            return
        req = Request()
        req.keep_alive = False
        self.linger = True
        self.busy = True
        self.respond(req, status, [b"content-type: application/json\r\n"], message_body(text))
        self.closing = True

    def respond(self, req: Request, status: int, head: list[bytes], body: bytes) -> None:
        transport = self.transport
        if not transport.is_closing():
            keep = req.keep_alive and not self.closing
            parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
            parts += head
            parts.append(b"content-length: %d\r\n%s" % (len(body), b"\r\n" if keep else b"connection: close\r\n\r\n"))
            if req.is_head or not body:
                transport.write(b"".join(parts))
            elif len(body) <= 65536:
                parts.append(body)
                transport.write(b"".join(parts))
            else:  # a big body is not copied again
                transport.writelines((b"".join(parts), body))
            if not keep:
                if self.linger and transport.can_write_eof():
                    # Closing with unread request bytes in the socket makes the kernel send a reset, which can
                    # destroy the answer before the client reads it. Half-close instead: the client gets the
                    # answer and our FIN, what it still sends is read and dropped, the sweep closes later.
                    transport.write_eof()
                else:
                    transport.close()
        self.busy = False
        self.idle = 0
        queue = self.queue
        if self.linger:
            return
        if queue and not transport.is_closing():
            nxt = queue.popleft()
            if not queue:
                transport.resume_reading()
            # Next turn of the loop, not a nested call: a pipeline of requests answered at once (404, 401)
            # would otherwise recurse once per request.
            self.busy = True  # held until it starts: a request parsed meanwhile queues behind it
            asyncio.get_running_loop().call_soon(self._start_queued, nxt)
        elif self.closing and not transport.is_closing():
            transport.close()


class _Front:
    """The listening side: the connections, their idle sweep, and a graceful close."""

    def __init__(self, app: GatewayApp, keep_alive_s: float) -> None:
        self.app = app
        self.keep_alive_s = keep_alive_s
        self.connections: set[_ClientConnection] = set()
        self.server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _ClientConnection(self), sock=sock, backlog=2048)
        self._sweeper = loop.call_later(1.0, self._sweep)

    def _sweep(self) -> None:
        """Once a second: close connections idle (no byte in, nothing being answered) for keep_alive_s."""
        limit = self.keep_alive_s
        for conn in list(self.connections):
            if conn.busy:
                continue
            conn.idle += 1
            if (conn.idle > limit or (conn.linger and conn.idle >= 2)) and conn.transport is not None:
                conn.transport.close()
        self._sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)

    async def close(self) -> None:
        """Stop accepting; close idle connections now and busy ones after their answer; abort what is
        left after SHUTDOWN_GRACE_S."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.closing = True
            if not conn.busy and conn.transport is not None:
                conn.transport.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Gateway:
    """One HTTP port in front of every endpoint's replicas.

    `check_credential(endpoint, auth_mode, bearer)` says whether a bearer credential is good; it is
    called on the gateway's loop for every request of a key/aml_token endpoint, so it must be quick
    and must not block (an in-memory compare). `on_demand(endpoint, deployment)` is called in a worker
    thread, at most once a second per deployment, while requests wait for a deployment that has no
    ready replica and `scale_from_zero`. `clock` times the metrics.
    """

    def __init__(self, check_credential: Callable[[str, str, str], bool], on_demand: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 scale_from_zero_wait_s: float = DEFAULT_SCALE_FROM_ZERO_WAIT_S,
                 rng: random.Random | None = None, keep_alive_s: float = 30.0) -> None:
        self._app = GatewayApp(check_credential, on_demand, clock, max_body_bytes=max_body_bytes,
                               scale_from_zero_wait_s=scale_from_zero_wait_s, rng=rng)
        self._front = _Front(self._app, keep_alive_s)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port: int | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> int:
        """Listen on host:port (0 = any free port) and return the port once requests are served."""
        if self._thread is not None:
            raise RuntimeError("the gateway is already started")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        started = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(sock, started), name="cible-gateway", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"the gateway did not start: {error!r}")
        return self.port

    def _run(self, sock: socket.socket, started: threading.Event) -> None:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(sock, started))
        except BaseException as exc:  # noqa: BLE001 - reported to start(), or lost at exit
            self._error = exc
        finally:
            with self._lock:
                self._loop_thread_id = None
            try:
                loop.run_until_complete(self._app.aclose())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                sock.close()
                started.set()  # a start() still waiting learns of the failure

    async def _serve(self, sock: socket.socket, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        with self._lock:
            self._app.bind(asyncio.get_running_loop())
            self._loop_thread_id = threading.get_ident()
        await self._front.start(sock)
        started.set()
        await self._stop.wait()
        self._app.shutting_down()
        await self._front.close()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop listening, answer waiting requests 503, let in-flight ones finish (up to 5 s), close the
        upstream connections, and end the thread."""
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            if self._loop_thread_id is not None and self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(timeout_s)
        self._thread = None
        self._loop = None

    # ---- state -----------------------------------------------------------------------------------

    def _on_loop(self, fn: Callable[..., Any], *args: Any, timeout_s: float = 10.0) -> Any:
        """Run `fn(*args)` where the request path runs (the loop thread), and return its result."""
        with self._lock:
            loop_thread = self._loop_thread_id
            if loop_thread is None or loop_thread == threading.get_ident():  # not serving, or on the loop
                return fn(*args)
            result: concurrent.futures.Future = concurrent.futures.Future()

            def call() -> None:
                try:
                    result.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                    result.set_exception(exc)

            self._loop.call_soon_threadsafe(call)
        return result.result(timeout_s)

    def publish(self, table: RouteTable) -> None:
        """Make `table` the live routes (thread-safe); returns once requests see it. Waiting requests
        are woken: let through where slots appeared, 503 where their deployment is gone."""
        self._on_loop(self._app.apply, table)

    def stats(self, endpoint: str) -> dict[str, dict[str, float | int]]:
        """Per deployment over the last 5 minutes: requests_per_s, p50_ms, p99_ms, errors (non-2xx from
        replicas and the gateway's 408/424/429/502/503), in_flight and queued (now)."""
        return self._on_loop(self._app.stats, endpoint)

    def in_flight(self, endpoint: str, deployment: str, window_s: float = 10.0) -> float:
        """Mean requests in flight at the deployment's replicas over the last `window_s` seconds."""
        return self._on_loop(self._app.mean_in_flight, endpoint, deployment, window_s)

    @property
    def max_body_bytes(self) -> int:
        return self._app.max_body_bytes
