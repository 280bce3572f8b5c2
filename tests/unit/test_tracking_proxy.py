"""The /mlflow reverse proxy and the child's supervision, against a fake upstream process.

The fake stands in for MLflow's server (a tiny ASGI app under uvicorn, started through
TrackingServer like the real one), so these tests check only the proxy's own behaviour: path
and query mapping, headers, streaming both ways, waiting for a starting child, restarting a dead
one and the 503 envelope. The real MLflow server is in tests/integration/test_tracking.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cible.server.errors import install_error_handlers
from cible.server.tracking import TrackingServer
from cible.server.tracking_proxy import tracking_router
from cible.testing import serve_asgi as serve, wait_until

FAKE_UPSTREAM = r'''
import asyncio, hashlib, json, os, sys
from pathlib import Path
import uvicorn

port, marks = int(sys.argv[1]), Path(sys.argv[2])
gate = marks / "healthy"

async def body_of(receive):
    chunks, data = 0, b""
    while True:
        message = await receive()
        if message.get("body"):
            chunks += 1
            data += message["body"]
            (marks / "first-chunk").touch()
        if not message.get("more_body"):
            return data, chunks

async def send_json(send, status, payload, extra=()):
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

async def wait_for(path):
    for _ in range(1500):  # a fake's own bounded wait (30 s)
        if path.exists():
            return
        await asyncio.sleep(0.02)

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/mlflow/health":
        if not gate.exists():
            (marks / "health-polled").touch()
            await send_json(send, 503, {"starting": True})
            return
        await send_json(send, 200, {"ok": True})
        return
    if path == "/mlflow/download":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
        await wait_for(marks / "release")
        await send({"type": "http.response.body", "body": b"part2"})
        return
    data, chunks = await body_of(receive)
    status = int(dict(scope["headers"]).get(b"x-status", b"200"))
    await send_json(send, status, {
        "method": scope["method"], "path": path, "raw_path": scope["raw_path"].decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "length": len(data), "sha256": hashlib.sha256(data).hexdigest(), "chunks": chunks, "pid": os.getpid(),
    }, extra=[(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"x-upstream", b"fake")])

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
'''


class FakeTracking(TrackingServer):
    """TrackingServer whose child is the fake upstream above instead of MLflow."""

    def __init__(self, home: Path, script: Path) -> None:
        super().__init__(home)
        self.script = script
        self.marks = home / "marks"
        self.marks.mkdir(parents=True, exist_ok=True)

    def command(self, port: int) -> list[str]:
        return [sys.executable, str(self.script), str(port), str(self.marks)]

    def open_gate(self) -> None:
        (self.marks / "healthy").touch()


def proxy_app(tracking: TrackingServer, wait_s: float) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(tracking_router(tracking, wait_s=wait_s))
    return app


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeTracking]:
    script = tmp_path / "fake_upstream.py"
    script.write_text(FAKE_UPSTREAM)
    tracking = FakeTracking(tmp_path / "ws", script)
    yield tracking
    tracking.stop()


@pytest.fixture
def ready_proxy(fake: FakeTracking) -> Iterator[tuple[FakeTracking, httpx.Client]]:
    fake.open_gate()
    fake.start()
    assert fake.ready(20)
    with serve(proxy_app(fake, wait_s=20)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield fake, client


def test_path_query_method_and_body_are_forwarded_unchanged(ready_proxy):
    _, client = ready_proxy
    response = client.post(
        "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/dir/a%20b.txt",
        params={"run_id": "r1", "path": "x/y z"}, content=b"payload",
        headers={"Authorization": "Bearer workspace-token", "X-Custom": "kept", "Origin": "http://elsewhere"},
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["raw_path"] == "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/dir/a%20b.txt"
    assert seen["query"] == "run_id=r1&path=x%2Fy+z"
    assert seen["length"] == len(b"payload")
    headers = seen["headers"]
    assert headers["x-custom"] == "kept"
    assert "authorization" not in headers  # the workspace token stays at the workspace
    assert "origin" not in headers
    assert headers["host"] == f"127.0.0.1:{ready_proxy[0].url.rsplit(':', 1)[1]}"  # the child's own host
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/mlflow/ajax-api/2.0/mlflow/runs/get").json()["method"] == method
    assert client.get("/mlflow").json()["path"] == "/mlflow"


def test_status_and_response_headers_come_back_as_sent(ready_proxy):
    _, client = ready_proxy
    response = client.get("/mlflow/api/2.0/mlflow/runs/get", headers={"X-Status": "404"})
    assert response.status_code == 404
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-upstream"] == "fake"
    assert response.headers["content-length"] == str(len(response.content))
    head = client.head("/mlflow/api/2.0/mlflow/runs/get")
    assert head.status_code == 200 and head.content == b""


def test_request_body_is_streamed_to_the_child(ready_proxy):
    fake, client = ready_proxy
    first = fake.marks / "first-chunk"
    big = os.urandom(1 << 20)

    def body() -> Iterator[bytes]:
        yield big
        # The child has the first chunk before the client sends the rest: nothing is buffered.
        wait_until(first.exists, 10, message="the first chunk to reach the child")
        yield b"tail"

    seen = client.put("/mlflow/api/2.0/mlflow-artifacts/artifacts/0/big.bin", content=body()).json()
    assert seen["length"] == len(big) + 4 and seen["chunks"] >= 2
    assert seen["sha256"] == hashlib.sha256(big + b"tail").hexdigest()


def test_response_body_is_streamed_to_the_client(ready_proxy):
    fake, client = ready_proxy
    with client.stream("GET", "/mlflow/download") as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"part1;"  # arrives while the child still holds back the rest
        (fake.marks / "release").touch()
        assert b"".join(chunks) == b"part2"


def test_a_starting_child_is_waited_for(fake: FakeTracking):
    fake.start()
    with serve(proxy_app(fake, wait_s=30)) as url:
        result: dict = {}

        def call() -> None:
            result["response"] = httpx.get(url + "/mlflow/api/2.0/mlflow/experiments/search", timeout=40)

        caller = threading.Thread(target=call)
        caller.start()
        wait_until((fake.marks / "health-polled").exists, 20, message="the proxy to poll the starting child")
        assert caller.is_alive() and "response" not in result  # still waiting, not answered
        fake.open_gate()
        caller.join(40)
        assert result["response"].status_code == 200
        assert result["response"].json()["path"] == "/mlflow/api/2.0/mlflow/experiments/search"


def test_a_child_that_never_answers_gives_a_503_envelope(fake: FakeTracking):
    fake.start()
    with serve(proxy_app(fake, wait_s=0.5)) as url:
        response = httpx.post(url + "/mlflow/api/2.0/mlflow/runs/create", json={}, timeout=10)
    assert response.status_code == 503
    assert response.json() == {"error": {"code": "TrackingUnavailable", "message": response.json()["error"]["message"],
                                         "details": None}}
    assert "not answering yet" in response.json()["error"]["message"]
    assert response.headers["retry-after"]


def test_a_dead_child_is_restarted_on_next_use(ready_proxy):
    fake, client = ready_proxy
    first_pid = client.get("/mlflow/api/2.0/mlflow/experiments/search").json()["pid"]
    os.kill(first_pid, signal.SIGKILL)
    wait_until(lambda: fake.pid is None, 10, message="the killed child to be seen dead")
    response = client.get("/mlflow/api/2.0/mlflow/experiments/search")  # waits for the new child
    assert response.status_code == 200
    assert response.json()["pid"] != first_pid and fake.restarts == 1


def test_a_stopped_server_answers_503_at_once(ready_proxy):
    fake, client = ready_proxy
    fake.stop()
    response = client.get("/mlflow/api/2.0/mlflow/experiments/search")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "TrackingUnavailable"
    assert "stopped" in response.json()["error"]["message"]
    assert fake.pid is None


def test_stop_ends_the_child(fake: FakeTracking):
    fake.open_gate()
    fake.start()
    assert fake.ready(20)
    pid = fake.pid
    fake.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not fake.ready(0)  # and a stopped server does not come back by itself


def test_workspace_app_guards_mlflow_with_its_token(tmp_path: Path):
    """/mlflow is behind the workspace's token check: a missing or wrong token is a 401."""
    from fastapi.testclient import TestClient

    from cible.server.app import create_app
    from cible.server.settings import ServerSettings

    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                    tracking=True), "tok", reconcile=False)
    app.state.tracking.stop()  # no MLflow child here: a request that got past the token check would fail at once
    try:
        client = TestClient(app, raise_server_exceptions=False)  # no lifespan
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = client.get("/mlflow/api/2.0/mlflow/experiments/search", headers=headers)
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "Unauthorized"
    finally:
        app.state.store.close()
