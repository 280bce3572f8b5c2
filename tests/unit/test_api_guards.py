"""Request guards: body limits before anything is buffered, NUL bytes, numbers out of range, string
caps of job specs, and 500s that neither echo the exception nor drop a keep-alive connection."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from api_support import TOKEN, api_client, error_of
from fastapi import Request
from fastapi.testclient import TestClient
from sqlalchemy import text

from cible.client.local import is_healthy
from cible.core.errors import InvalidRequestError
from cible.server.settings import ServerSettings, env_bytes
from cible.server.store.rows import QuotaRequestRow
from cible.testing import serve_asgi

HELLO = {"command": "echo hello", "compute": "local"}
SECRET = "hunter2-secret-value"


@pytest.fixture
def api(tmp_path) -> Iterator[TestClient]:  # noqa: ANN001
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path, max_request_bytes=4096,
                    max_upload_bytes=64 << 10, max_agent_chunk_bytes=8192) as client:
        yield client


def call(app: Any, method: str, path: str, chunks: Iterable[bytes] = (), headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any], int]:
    """One request straight through the ASGI app, its body streamed from `chunks` (endless ones
    too); returns the status, the JSON body and how many body chunks the app asked for."""
    pending, asked, sent = iter(chunks), 0, []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    raw_headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": raw_headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), asked


# -- body limits ---------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_before_a_byte_is_read(api: TestClient):
    endless = itertools.repeat(b"x" * 1024)
    status, body, asked = call(api.app, "PUT", "/api/v1/jobs/j1", endless, {"content-length": str(400 << 20)})
    assert status == 413 and asked == 0
    assert body["error"]["code"] == "PayloadTooLarge"
    assert "4 KiB" in body["error"]["message"] and "CIBLE_MAX_REQUEST_BYTES" in body["error"]["message"]


def test_a_streamed_body_is_cut_at_the_limit(api: TestClient):
    # Chunked: no Content-Length, so the guard counts what the app reads and stops it at the limit.
    status, body, asked = call(api.app, "PUT", "/api/v1/jobs/j1", itertools.repeat(b" " * 1024))
    assert status == 413 and body["error"]["code"] == "PayloadTooLarge"
    assert asked == 5  # 4 KiB read, the fifth chunk is one too many
    # The agent files route has its own cap, and reads nothing for a job that does not exist.
    route = "/api/v1/agent/nodes/n1/runs/nope/files/user_logs/std_log.txt?attempt=1"
    status, body, asked = call(api.app, "PUT", route, itertools.repeat(b"x" * 1024))
    assert (status, body["error"]["code"], asked) == (404, "NotFound", 0)
    api.put("/api/v1/jobs/j1", json=HELLO)
    route = route.replace("/nope/", "/j1/")
    status, body, asked = call(api.app, "PUT", route, itertools.repeat(b"x" * 1024))
    assert status == 413 and asked == 9 and "CIBLE_MAX_AGENT_CHUNK_BYTES" in body["error"]["message"]


def test_json_under_the_limit_passes_and_uploads_have_their_larger_limit(api: TestClient):
    assert api.put("/api/v1/jobs/j1", json=HELLO).status_code == 200
    data = b"a" * (32 << 10)  # over the JSON limit, under the upload limit: streamed to the blob store
    digest = hashlib.sha256(data).hexdigest()
    response = api.put(f"/api/v1/blobs/{digest}", content=data)
    assert response.status_code == 201, response.text
    assert api.post("/api/v1/blobs:missing", json={"sha256": [digest]}).json()["missing"] == []
    big = b"b" * (80 << 10)
    status, body, _ = call(api.app, "PUT", f"/api/v1/blobs/{hashlib.sha256(big).hexdigest()}",
                           (big[i:i + 4096] for i in range(0, len(big), 4096)))
    assert status == 413 and "CIBLE_MAX_UPLOAD_BYTES" in body["error"]["message"]
    blobs = api.app.state.blobs.root
    assert not [p for p in blobs.rglob("*") if p.is_file() and p.name.endswith(".part")]  # nothing half-written
    # A wrong digest is still refused, after the stream.
    response = api.put(f"/api/v1/blobs/{'0' * 64}", content=b"zz")
    assert response.status_code == 400 and "hashes to" in error_of(response)["message"]


def test_sizes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CIBLE_MAX_REQUEST_BYTES", "2M")
    monkeypatch.setenv("CIBLE_MAX_UPLOAD_BYTES", "3GiB")
    settings = ServerSettings()
    assert settings.max_request_bytes == 2 << 20 and settings.max_upload_bytes == 3 << 30
    assert settings.max_agent_chunk_bytes == 32 << 20  # the default
    monkeypatch.setenv("CIBLE_MAX_REQUEST_BYTES", "lots")
    with pytest.raises(InvalidRequestError, match="CIBLE_MAX_REQUEST_BYTES='lots' is not a size"):
        env_bytes("CIBLE_MAX_REQUEST_BYTES", 1)


# -- bad input is a 4xx -------------------------------------------------------------------------


def test_a_nul_in_the_url_is_a_400(api: TestClient):
    api.put("/api/v1/jobs/j1", json=HELLO)
    for url in ("/api/v1/jobs/j1/files/outputs/a%00b", "/api/v1/jobs?status=Queued%00"):
        response = api.get(url)
        assert response.status_code == 400 and "NUL" in error_of(response)["message"], url


@pytest.mark.parametrize("method,url,body", [
    ("GET", f"/api/v1/jobs/j1/logs?offset={2**64}", None),
    ("GET", f"/api/v1/jobs?skip={2**64}", None),
    ("GET", "/api/v1/jobs?top=100000", None),
    ("PUT", "/api/v1/quotas/total", {"vcpus": 2**64}),
    ("POST", "/api/v1/quotas/total/requests", {"vcpus": 2**64}),
    ("POST", f"/api/v1/quota-requests/{2**64}:approve", None),
    ("POST", f"/api/v1/quota-requests/{2**40}:deny", None),
    ("PUT", f"/api/v1/agent/nodes/n1/runs/j1/files/user_logs/x?attempt=1&offset={2**64}", None),
    ("PUT", "/api/v1/jobs/j2", {**HELLO, "limits": {"timeout": 2**64}}),
    ("PUT", "/api/v1/jobs/j2", {**HELLO, "distribution": {"type": "pytorch", "process_count_per_instance": 2**40}}),
])
def test_numbers_out_of_range_are_refused(api: TestClient, method: str, url: str, body: Any):
    api.put("/api/v1/jobs/j1", json=HELLO)
    response = api.request(method, url, json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] in ("InvalidRequest", "InvalidSpec")


@pytest.mark.parametrize("field,value,needle", [
    ("command", "echo " + "x" * (64 << 10), "command: it is 65541 bytes; at most 65536"),
    ("command", "echo " + "é" * (33 << 10), "bytes; at most 65536"),  # UTF-8 bytes, as exec counts them
    ("description", "d" * (16 << 10 | 1), "description: it is 16385 characters"),
    ("display_name", "n" * 257, "display_name: it is 257 characters; at most 256"),
    ("tags", {"k" * 251: "v"}, "tag name"),
    ("tags", {"k": "v" * 8001}, "tag 'k'"),
    ("environment_variables", {"BIG": "v" * (32 << 10 | 1)}, "environment variable 'BIG'"),
    ("environment_variables", {f"V{i}": "v" * (30 << 10) for i in range(20)}, "the job spec is"),
    ("inputs", {f"i{i}": "v" * (30 << 10) for i in range(20)}, "at most 524288 are allowed"),
])
def test_free_text_of_a_job_has_a_size_limit(tmp_path, field: str, value: Any, needle: str):  # noqa: ANN001
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path) as api:  # the default 8 MiB body limit
        response = api.put("/api/v1/jobs/j1", json={**HELLO, field: value})
        assert response.status_code == 422, response.text
        assert needle in error_of(response)["message"]
        assert api.put("/api/v1/jobs/j1", json={**HELLO, "command": "echo " + "x" * 60_000}).status_code == 200


# -- 500s ---------------------------------------------------------------------------------------


def _add_test_routes(app: Any) -> None:
    store = app.state.store

    def boom() -> None:
        raise RuntimeError(f"something broke holding {SECRET}")

    def overflow() -> None:
        with store.session() as session:  # SQLite cannot hold it: the driver's OverflowError
            session.get(QuotaRequestRow, 2**70)

    def duplicate() -> None:
        with store.session() as session:  # an IntegrityError whose parameters hold a secret
            for _ in range(2):
                session.execute(text("INSERT INTO quotas (scope, vcpus, updated_at) VALUES (:s, 1, '2020-01-01')"),
                                {"s": SECRET})

    def peer(request: Request) -> dict[str, Any]:
        return {"port": request.scope["client"][1]}

    for path, endpoint in (("boom", boom), ("overflow", overflow), ("duplicate", duplicate), ("peer", peer)):
        app.add_api_route(f"/api/v1/test/{path}", endpoint)


def test_an_unexpected_error_is_a_500_that_echoes_nothing(api: TestClient, caplog: pytest.LogCaptureFixture):
    _add_test_routes(api.app)
    for route in ("boom", "duplicate"):
        with caplog.at_level(logging.ERROR, logger="cible.server"):
            response = api.get(f"/api/v1/test/{route}")
        assert response.status_code == 500
        error = error_of(response)
        assert error["code"] == "Internal" and SECRET not in response.text
        assert error["message"] == f"internal error (id {error['details']['id']}); see server.log"
        # server.log has the incident with its traceback, and no SQL parameter
        assert f"internal error {error['details']['id']}" in caplog.text and "Traceback" in caplog.text
        if route == "duplicate":
            assert SECRET not in caplog.text and "parameters hidden" in caplog.text
        caplog.clear()
    response = api.get("/api/v1/test/overflow")
    assert response.status_code == 400 and "out of range" in error_of(response)["message"]


def test_a_500_keeps_the_keep_alive_connection(api: TestClient):
    _add_test_routes(api.app)
    with serve_asgi(api.app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        first = client.get("/api/v1/test/peer").json()["port"]
        response = client.get("/api/v1/test/boom")
        assert response.status_code == 500 and error_of(response)["code"] == "Internal"
        response = client.put("/api/v1/jobs/j1", content=b"{" * 10_000, headers={"content-type": "application/json"})
        assert response.status_code == 413
        # the same TCP connection (the same client port) after the 500 and the 413: none was reset
        assert client.get("/api/v1/test/peer").json()["port"] == first
        assert is_healthy(url, TOKEN) and not is_healthy(url, "wrong")
        # A degraded server (503) still runs: the CLI must not start a second one on the workspace.
        api.app.state.settings.min_free_disk_bytes = 1 << 60
        assert client.get("/api/v1/health").status_code == 503 and is_healthy(url, TOKEN)
