"""Fakes and helpers shipped with the code, for the tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from cible.core.clock import Clock


class FrozenClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


T = TypeVar("T")


def wait_until(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str = "") -> T:
    """Poll `fn` until it returns something truthy and return that; fail at the deadline.

    For tests that watch real processes, where there is no clock to drive.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message or fn!r}; last value: {last!r}")
        time.sleep(interval)  # polling, bounded by the deadline


def kill_nodes(home: Path) -> None:
    """End every `local` node agent of the workspace at `home`, and what it runs (a stopped
    server leaves its cluster nodes running, so tests clean up after themselves)."""
    import json

    from cible.launch.procs import signal_tree

    for agent_file in (home / "nodes").glob("*/agent.json"):
        try:
            pid = json.loads(agent_file.read_text())["pid"]
        except (ValueError, KeyError, OSError):
            continue
        signal_tree(pid, wait_s=10)


@contextmanager
def serve_asgi(app, *, backlog: int = 128) -> Iterator[str]:  # noqa: ANN001
    """Serve an ASGI app with a real uvicorn on 127.0.0.1 in a thread; yields its base URL.

    For tests that need real connections (keep-alive, streamed bodies) where TestClient buffers.
    """
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 20, message="the test server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def __getattr__(name: str):  # noqa: ANN202
    """`from cible.testing import FakeNodeProvider, FakeJobRunner`: the fake node provider and job
    runner, each from its own module (imported when asked for; the conformance suite is
    `cible.testing.conformance`)."""
    if name == "FakeNodeProvider":
        from cible.testing.fake_provider import FakeNodeProvider

        return FakeNodeProvider
    if name == "FakeJobRunner":
        from cible.testing.fake_runner import FakeJobRunner

        return FakeJobRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
