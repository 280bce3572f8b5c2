"""Helpers shared by the integration tests: polling with a deadline, a local http server, process checks."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from cible.testing import wait_until  # noqa: F401  (re-exported for the tests)


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (directory index pages included); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Gate:
    """`arrived` is set when a request comes in; the answer waits for `release`."""

    def __init__(self) -> None:
        self.arrived, self.release = threading.Event(), threading.Event()


@contextmanager
def gated_http_file(body: bytes = b"slow data\n") -> Iterator[tuple[Gate, str]]:
    """An http file on 127.0.0.1 whose download hangs until the test releases it."""
    gate = Gate()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            gate.arrived.set()
            gate.release.wait(timeout=30)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gate, f"http://127.0.0.1:{server.server_address[1]}/slow.csv"
    finally:
        gate.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
