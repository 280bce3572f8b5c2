"""recommend-size's server side, piece by piece: the body's checks, the loopback-only rule, the load
(against a small HTTP server on 127.0.0.1) and the memory of a real process tree."""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cible.core.errors import InvalidRequestError
from cible.server.services.replica_jobs import free_port
from cible.server.services.sizing import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DURATION_S,
    TreeMemory,
    listening_pids,
    loopback_port,
    parse_request,
    percentile,
    run_load,
)


def test_the_body_defaults_and_the_request_as_an_object_or_a_string():
    asked = parse_request({"request": {"data": [[1, 2]]}})
    assert (asked.body, asked.duration_s, asked.concurrency, asked.target_rps) == (
        b'{"data":[[1,2]]}', DEFAULT_DURATION_S, DEFAULT_CONCURRENCY, None)
    asked = parse_request({"request": '{"data": [[1, 2]]}\n', "duration_s": 2.5, "concurrency": 8, "target_rps": 40})
    assert (asked.body, asked.duration_s, asked.concurrency, asked.target_rps) == (
        b'{"data": [[1, 2]]}\n', 2.5, 8, 40)


@pytest.mark.parametrize("body, field", [
    ([], "request"),
    ({}, "request"),
    ({"request": 5}, "request"),
    ({"request": "{}", "duration_s": 0}, "duration_s"),
    ({"request": "{}", "duration_s": 121}, "duration_s"),
    ({"request": "{}", "duration_s": "10"}, "duration_s"),
    ({"request": "{}", "concurrency": 65}, "concurrency"),
    ({"request": "{}", "concurrency": 1.5}, "concurrency"),
    ({"request": "{}", "concurrency": True}, "concurrency"),
    ({"request": "{}", "target_rps": 0}, "target_rps"),
    ({"request": "{}", "target_rps": -3}, "target_rps"),
    ({"request": "{}", "duration": 10}, "duration"),
])
def test_a_bad_body_is_a_400_naming_the_field(body, field):
    with pytest.raises(InvalidRequestError) as refused:
        parse_request(body)
    assert refused.value.details["field"] == field
    assert refused.value.message.startswith(f"{field}: " if isinstance(body, dict) else "the request body is")


@pytest.mark.parametrize("url, port", [("http://127.0.0.1:8123", 8123), ("http://127.0.0.7:9000/", 9000)])
def test_a_replica_on_this_machine_is_measured(url, port):
    assert loopback_port(url, "r1") == port


@pytest.mark.parametrize("url", ["http://10.1.2.3:8123", "http://127.0.1.1:8123", "http://localhost:8123",
                                 "http://[::1]:8123", "http://127.0.0.1", None])
def test_a_replica_elsewhere_is_refused_with_a_clear_400(url):
    with pytest.raises(InvalidRequestError) as refused:
        loopback_port(url, "r1")
    assert f"replica 'r1' listens at {url}, not on this machine (127.0.0.x)" in refused.value.message


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


@contextmanager
def answering(status: int) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the scoring server

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"ok": true}' if status == 200 else b'{"message": "run() raised"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_load_counts_answers_and_latencies():
    with answering(200) as url:
        load = run_load(f"{url}/score", b"{}", concurrency=3, duration_s=0.3, timeout_s=5)
    assert load.succeeded > 0 and load.errors == 0 and load.first_error is None
    assert len(load.latencies_ms) == load.requests == load.succeeded
    assert load.elapsed_s >= 0.3


def test_failing_answers_are_errors_with_the_first_one_said():
    with answering(500) as url:
        load = run_load(f"{url}/score", b"{}", concurrency=2, duration_s=0.2, timeout_s=5)
    assert load.succeeded == 0 and load.errors > 0 and load.unreachable is None
    assert load.first_error == 'status 500: {"message": "run() raised"}'


def test_a_replica_that_is_not_there_stops_the_load_at_once():
    load = run_load(f"http://127.0.0.1:{free_port()}/score", b"{}", concurrency=2, duration_s=30, timeout_s=5)
    assert load.errors == 2 and load.succeeded == 0  # one refusal per worker, not 30 s of them
    assert load.unreachable and "ConnectError" in load.unreachable


def test_the_memory_of_a_process_tree_children_included():
    # A parent that listens on a port and starts a child holding 64 MiB: both are counted.
    script = textwrap.dedent("""
        import socket, subprocess, sys
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        child = subprocess.Popen([sys.executable, "-c",
            "import sys; held = b'x' * (64 << 20); print('held', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        child.stdout.readline()
        print(sock.getsockname()[1], flush=True)
        sys.stdin.read()
        child.stdin.close()
        child.wait()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(parent.stdout.readline())
        assert listening_pids(port) == [parent.pid]
        with TreeMemory(listening_pids(port)) as memory:
            pass
        assert memory.peak >= 64 << 20
        assert not memory.lost
    finally:
        parent.stdin.close()
        parent.wait(timeout=30)
    assert TreeMemory([parent.pid]).sample() == 0
