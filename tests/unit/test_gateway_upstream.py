"""The gateway's upstream connections against a real loopback server: a connection that closes
between its pick and its write fails as an unanswered exchange (the gateway's 424), never with the
transport's RuntimeError, which left the caller without an answer."""

from __future__ import annotations

import asyncio

import pytest

from cible.server.gateway.server import _new_loop
from cible.server.gateway.upstream import UpstreamError, UpstreamPool


def _run(scenario) -> None:  # noqa: ANN001
    """On the gateway's own loop (uvloop, whose transports raise on a write after close)."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(scenario())


async def _answering_server(seen: list[bytes] | None = None) -> asyncio.AbstractServer:
    """Answers `ok`; `GET /die-late` is read, then the connection closes 0.5 s later without an
    answer (a replica killed in run()); `GET /die-now` closes at once, the first time only (a
    keep-alive close crossing the request)."""
    seen = [] if seen is None else seen

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ")[1]
                seen.append(target)
                if target == b"/die-late":
                    await asyncio.sleep(0.5)
                    return
                if target == b"/die-now" and seen.count(target) == 1:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway's side closed
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _against_the_server(scenario) -> list[bytes]:  # noqa: ANN001
    """Run `scenario(pool)` with a pool to a fresh `_answering_server`; the request targets it saw."""
    seen: list[bytes] = []

    async def run() -> None:
        server = await _answering_server(seen)
        pool = UpstreamPool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", asyncio.get_running_loop())
        try:
            await scenario(pool)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    _run(run)
    return seen


def test_an_exchange_on_a_connection_closed_before_the_write_is_an_upstream_error() -> None:
    async def scenario(pool: UpstreamPool) -> None:
        loop = asyncio.get_running_loop()
        conn = await pool._connect(loop.time() + 5)
        conn.transport.abort()  # as a replica's reset does: the transport is closed at once
        await asyncio.sleep(0)
        with pytest.raises(UpstreamError, match="closed the connection") as caught:
            await pool._exchange(conn, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", b"", False, loop.time() + 5)
        assert caught.value.resendable  # nothing went out
        # the pool goes on: the next request opens a fresh connection and is answered
        status, _, body = await pool.request(b"GET", b"/", b"", b"", 5)
        assert (status, body) == (200, b"ok")

    _against_the_server(scenario)


def test_a_pooled_connection_closing_before_its_reuse_is_replaced_by_a_fresh_one() -> None:
    async def scenario(pool: UpstreamPool) -> None:
        assert (await pool.request(b"GET", b"/", b"", b"", 5))[0] == 200
        (idle,) = pool._idle
        idle.transport.close()  # still in the pool, not yet marked closed
        assert not idle.closed
        assert (await pool.request(b"GET", b"/", b"", b"", 5))[0] == 200

    assert _against_the_server(scenario) == [b"/", b"/"]


def test_a_request_the_replica_read_and_died_on_is_not_resent_but_a_crossed_close_is() -> None:
    async def scenario(pool: UpstreamPool) -> None:
        assert (await pool.request(b"GET", b"/", b"", b"", 5))[0] == 200  # a pooled connection now
        with pytest.raises(UpstreamError):
            await pool.request(b"GET", b"/die-late", b"", b"", 5)
        assert (await pool.request(b"GET", b"/", b"", b"", 5))[0] == 200
        assert (await pool.request(b"GET", b"/die-now", b"", b"", 5))[:3:2] == (200, b"ok")

    seen = _against_the_server(scenario)
    assert seen.count(b"/die-late") == 1, "resent after the replica had it for 0.5 s"
    assert seen.count(b"/die-now") == 2  # the crossed close: once more, on a fresh connection
