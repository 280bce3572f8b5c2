"""The agent's HTTP client: http.client with kept-alive connections, standard library only.

An agent runs on hosts that have nothing but Python 3, so it cannot use httpx. It needs little:
JSON bodies, raw byte chunks (`PUT` of a log file's part), a timeout per request (a long-polled
heartbeat waits longer than the poll), http and https URLs, and one rule for failures: any
failure to get an answer (refused, reset, timed out, a TLS error, a broken reply) is a
`TransportError`; an answer, whatever its status, is a `Response`.

Connections are kept alive and shared between the agent's threads (one at a time each): a
heartbeat every few seconds and a chunk every 50 ms would otherwise each pay a TCP (and TLS)
handshake. A kept connection the server has since closed (uvicorn drops idle ones after 5 s) is
seen before use, or at the latest when a request on it gets no answer at all, and the request is
then sent once more on a new connection: the server never saw it.

No proxy is used (HTTP_PROXY and the like are ignored): an agent reaches its server directly or
through the SSH tunnel cible sets up, on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

USER_AGENT = "cible-agent"
MAX_IDLE_PER_SERVER = 4  # the agent's threads: heartbeat, watcher, and a little slack
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 path characters; anything else (space, %, ?, #, non-ASCII) is escaped
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportError(Exception):
    """No answer from the server: it is down, restarting, unreachable or cut off mid-reply."""


class HTTPStatusError(Exception):
    """An answer whose status says the call failed (raised by `Response.raise_for_status`)."""

    def __init__(self, message: str, response: Response) -> None:
        super().__init__(message)
        self.response = response


class Response:
    def __init__(self, status_code: int, content: bytes = b"", headers: Mapping[str, str] | None = None,
                 url: str = "") -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers or {}
        self.url = url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPStatusError(f"HTTP {self.status_code} from {self.url}: {self.text[:200]}", self)

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class AgentHttp:
    """Requests to full URLs, over a small pool of kept-alive connections per server. Thread-safe."""

    def __init__(self, timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self._ssl_context = ssl_context  # made on first https use: the default context (system CAs)
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None,
                content: bytes | None = None, params: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Response:
        """Send one request and read its whole answer. `timeout` (seconds) bounds the connect and each
        read: a long-polled call passes more than its poll. Raises TransportError when no answer came."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:  # a port that is no number, or out of range
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        key = (parts.scheme, parts.hostname, port)
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        query = "&".join(q for q in (parts.query, urlencode(params or {})) if q)
        if query:
            target += "?" + query
        sent = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        body = content
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        wait = self.timeout if timeout is None else timeout
        while True:
            conn, reused = self._connection(key, wait)
            try:
                conn.request(method, target, body=body, headers=sent)
                answer = conn.getresponse()
                data = answer.read()
            except _STALE as exc:
                conn.close()
                if reused:  # a kept connection the server had closed: it never saw this request
                    continue
                raise TransportError(f"{method} {url}: {_describe(exc)}") from None
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, TLS, a broken reply
                conn.close()
                raise TransportError(f"{method} {url}: {_describe(exc)}") from None
            if answer.will_close:
                conn.close()
            else:
                self._keep(key, conn)
            return Response(answer.status, data, answer.headers, url)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # -- the pool ---------------------------------------------------------------------------------
    def _connection(self, key: tuple[str, str, int], timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection to `key`'s server that is still open, else a new one (connected on first use)."""
        while True:
            with self._lock:
                kept = self._idle.get(key)
                conn = kept.pop() if kept else None
            if conn is None:
                break
            if conn.sock is None or _closed_by_peer(conn.sock):
                conn.close()
                continue
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
            return conn, True
        scheme, host, port = key
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context), False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def _keep(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            kept = self._idle.setdefault(key, [])
            if not self._closed and conn.sock is not None and len(kept) < MAX_IDLE_PER_SERVER:
                kept.append(conn)
                return
        conn.close()


def _closed_by_peer(sock: Any) -> bool:
    """An idle kept-alive socket that is readable has been closed by the server (or holds bytes no
    request asked for): either way it cannot carry the next request."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
