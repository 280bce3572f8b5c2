"""Keep-alive HTTP/1.1 connections from the gateway to one replica, on asyncio protocols.

Why not httpx or aiohttp: a proxy hop must cost tens of microseconds, and their per-request machinery
(request/response objects, header models, stream wrappers) costs more than the scoring request itself
on a 2-core machine. Here one `asyncio.Protocol` per connection feeds bytes to an httptools
(llhttp) response parser and resolves one future per exchange; the request goes out in one
`writelines` of the head and the caller's body (the body is never copied).

Responses are read whole (Content-Length, chunked, or until the replica closes) and handed back as
`(status, headers, body)`: scoring answers are small, and a whole body lets the gateway set an exact
Content-Length and count the request once it is really over.

Retrying: a request is resent at most once, on a fresh connection, and only when it went out on a
*reused* idle connection that closed with not one byte of answer within KEEP_ALIVE_RACE_S of the write
(or closed before the write). That is the keep-alive race: the replica closed an idle connection
(uvicorn's keep-alive timeout) just as we wrote to it, its FIN already on the way, so it never read
the request and resending cannot run `run()` twice. Idle connections the replica closes are normally
dropped from the pool before they are picked (`connection_lost` fires on the FIN). A failure on a fresh
connection, after any byte of answer, or later than that window is not retried: the replica is down or
died mid-request (killed while its `run()` ran), and a resend would at best hit the same dead process
(the pool is per replica) and at worst run a request twice.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import httptools

MAX_IDLE_PER_REPLICA = 256
# A close that answers a write this soon is the replica's FIN crossing our request, not a replica that
# read it and died: loopback and LAN round trips are well under it, a run() killed midway mostly is not.
KEEP_ALIVE_RACE_S = 0.2


class UpstreamError(Exception):
    """The replica could not be reached or went away before answering (the gateway's 424)."""

    def __init__(self, reason: str, resendable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resendable = resendable  # the replica cannot have read the request (see the module docstring)


class UpstreamTimeout(Exception):
    """No whole answer within the request timeout (the gateway's 408)."""


class UpstreamProtocolError(Exception):
    """The replica answered something that is not HTTP/1.1 (the gateway's 502)."""


class _Connection(asyncio.Protocol):
    """One TCP connection to a replica; one exchange at a time."""

    __slots__ = ("pool", "transport", "parser", "waiter", "status", "headers", "chunks", "received",
                 "closed", "keep_alive", "until_close", "headers_done", "head_only", "sent_at")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.received = False
        self.closed = False
        self.keep_alive = True
        self.until_close = False
        self.headers_done = False
        self.head_only = False
        self.sent_at = 0.0  # the loop's time of the last write

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the 40 ms Nagle stall
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection can no longer be trusted
            self.transport.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"bad HTTP from the replica: {exc}"))
            self.keep_alive = False
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.headers_done and self.until_close:  # body delimited by the close: it is complete
                self._complete()
            else:
                reason = "the replica closed the connection" if exc is None else f"connection lost: {exc}"
                crossed = not self.received and self.pool.now() - self.sent_at < KEEP_ALIVE_RACE_S
                self._fail(UpstreamError(reason, resendable=crossed))
        self.pool._forget(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.waiter is None:  # an answer nobody asked for (bytes after the last one): not reusable
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        if self.head_only:  # a HEAD answer has no body, whatever its Content-Length says
            self.keep_alive = False
            self._complete()
            return
        if self.status < 200:  # an interim answer (we never send Expect, but): the real one follows
            return
        # No length and not chunked: the body runs to the close (RFC 9112 §6.3); llhttp cannot tell us.
        framed = self.status in (204, 304)
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
                framed = True
                break
        self.until_close = not framed

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # the end of an interim answer
            self.headers_done = False
            self.headers = []
            self.chunks = []
            return
        if self.waiter is not None and not self.waiter.done():
            self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
            self._complete()

    # exchange bookkeeping
    def _complete(self) -> None:
        waiter = self.waiter
        headers, chunks = self.headers, self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.waiter = None
        self.headers, self.chunks = [], []  # the caller owns the old ones now
        if waiter is not None and not waiter.done():
            waiter.set_result((self.status, headers, body))

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def start(self, waiter: asyncio.Future, head: bytes, body: bytes, head_only: bool) -> None:
        # Closed between its pick (or its connect) and now, before connection_lost ran: the transport
        # would raise on write. Nothing went out, so it fails as any unanswered exchange does.
        if self.closed or self.transport.is_closing():
            raise UpstreamError("the replica closed the connection", resendable=True)
        self.waiter = waiter
        self.sent_at = self.pool.now()
        self.status = 0
        self.headers = []
        self.chunks = []
        self.received = False
        self.headers_done = False
        self.until_close = False
        self.head_only = head_only
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout())


class UpstreamPool:
    """The idle keep-alive connections to one replica URL. Concurrency is bounded by the caller (the
    gateway's per-deployment slots), so the pool opens connections on demand and keeps up to
    MAX_IDLE_PER_REPLICA idle ones."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"replica URL must be http://HOST:PORT, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port
        self._host_header = f"{parts.hostname}:{parts.port}".encode("ascii")
        self._loop = loop
        self._idle: list[_Connection] = []
        self._retired = False

    async def _connect(self, deadline: float) -> _Connection:
        loop = self._loop
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamTimeout()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port), remaining)
        except asyncio.TimeoutError:
            raise UpstreamError(f"could not connect to {self.url} in time") from None
        except OSError as exc:
            raise UpstreamError(f"could not connect to {self.url}: {exc.strerror or exc}") from None
        return conn

    async def _exchange(self, conn: _Connection, head: bytes, body: bytes, head_only: bool,
                        deadline: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        loop = self._loop
        waiter = loop.create_future()
        conn.start(waiter, head, body, head_only)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            result = await waiter
        except BaseException:
            conn.waiter = None
            if not conn.closed:  # mid-exchange: the next answer on it would be this one's
                conn.transport.abort()
            raise
        finally:
            timer.cancel()
        if conn.keep_alive and not conn.closed and not self._retired and len(self._idle) < MAX_IDLE_PER_REPLICA:
            self._idle.append(conn)
        elif not conn.closed:
            conn.transport.close()
        return result

    async def request(self, method: bytes, target: bytes, header_lines: bytes, body: bytes,
                      timeout_s: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request and read its whole answer. `header_lines` are the forwarded headers, each
        `name: value\\r\\n` (no Host, Content-Length or hop-by-hop ones). Raises UpstreamError,
        UpstreamTimeout or UpstreamProtocolError."""
        deadline = self._loop.time() + timeout_s
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n" % (
            method, target, self._host_header, header_lines, len(body))
        head_only = method == b"HEAD"
        conn = None
        idle = self._idle
        while idle:
            candidate = idle.pop()  # the most recently used: the least likely to have timed out
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            return await self._exchange(await self._connect(deadline), head, body, head_only, deadline)
        try:
            return await self._exchange(conn, head, body, head_only, deadline)
        except UpstreamError as exc:
            if not exc.resendable:
                raise
        # The keep-alive race (see the module docstring): once more, on a fresh connection.
        return await self._exchange(await self._connect(deadline), head, body, head_only, deadline)

    def now(self) -> float:
        return self._loop.time()

    def _forget(self, conn: _Connection) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """No new exchanges keep their connection; idle ones close now."""
        self._retired = True
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
