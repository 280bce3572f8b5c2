"""cible.agent.transfer when things go wrong mid-way: a file that shrinks while it is sent, a server
that takes a chunk and holds no more for it, a server gone for longer than a few seconds (a restart,
a tunnel that blipped), a refusal, and a commit that waits while the server hashes what was sent."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from node_files_support import World, served_world

import cible.agent.transfer as transfer_module
from cible.agent.transfer import Transfer, TransferError


class Looping(Exception):
    """A send that goes round without end (what the tests stop, instead of hanging)."""




def route(rel: str) -> str:
    return f"/api/v1/agent/nodes/n1/runs/j1/{rel}?attempt=1"


class FakeTime:
    """The transfer module's clock: a pause moves it on at once, so minutes of retries take none."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeTime:  # noqa: ANN001
    fake = FakeTime()
    monkeypatch.setattr(transfer_module, "time", fake)
    return fake


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next of `script` (shared by the test): "drop" closes the connection
    without an answer, a number answers that status; once it is used up, 200 with {"ok": true}."""

    script: list[Any] = []
    seen: list[str] = []
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        step = self.script.pop(0) if self.script else 200
        if step == "drop":
            self.close_connection = True
            return
        body = json.dumps({"ok": True} if step == 200 else
                          {"error": {"code": "Busy" if step >= 500 else "Forbidden", "message": f"said {step}",
                                     "details": None}}).encode()
        self.send_response(step)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[Scripted]]]:
    handler = type("Handler", (Scripted,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


def stop_after(calls: int, seen: list[int]):  # noqa: ANN201
    def progress(_: str, done: int) -> None:
        seen.append(done)
        if len(seen) > calls:
            raise Looping(f"{len(seen)} progress calls: {seen[-5:]}")
    return progress


# -- a file that shrinks while it is sent ----------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    with served_world(tmp_path) as world_and_url:
        yield world_and_url


def test_a_file_that_shrinks_while_it_is_sent_is_hashed_and_sent_again(served, tmp_path: Path):
    """A checkpoint rewritten shorter while a resume sync sends it: the read comes to the end early."""
    world, url = served
    source = tmp_path / "out"
    source.mkdir()
    path = source / "ckpt.bin"
    path.write_bytes(os.urandom(20_000))
    shorter = os.urandom(3_000)
    seen: list[int] = []
    looping = stop_after(50, seen)

    def progress(route_: str, done: int) -> None:
        if done == 4096 and path.stat().st_size == 20_000:
            path.write_bytes(shorter)  # after its first chunk went
        looping(route_, done)

    answer = Transfer(url, world.token("n1"), chunk_bytes=4096, on_progress=progress).upload_tree(
        source, route("outputs/model/files"), route("outputs/model/commit"))
    assert answer["files"] == 1
    assert (world.paths.datastore() / "azureml" / "j1" / "model" / "ckpt.bin").read_bytes() == shorter
    assert seen[-1] == 3_000  # sent again, whole, from its start


def test_a_send_that_gets_nowhere_is_an_error_not_a_loop(tmp_path: Path, monkeypatch):
    """A server that takes each chunk and still holds nothing more of the file."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    transfer = Transfer("http://127.0.0.1:9", "t", chunk_bytes=4, on_progress=stop_after(50, []))
    monkeypatch.setattr(transfer, "_json_call", lambda method, route_, **_: {"staged": 0})
    with pytest.raises(TransferError, match=r"PUT /r: the server holds 0 bytes .* no progress"):
        transfer._send(path, "/r", 0)


# -- a server gone for a while ----------------------------------------------------------------------


def test_a_server_gone_for_half_a_minute_is_waited_for(scripted, clock: FakeTime):
    """A restart (no answer, then 503s while it starts) longer than the old 6 s of retries."""
    url, handler = scripted
    handler.script[:] = ["drop"] * 8 + [503] * 4
    assert Transfer(url, "t").get_json("/x") == {"ok": True}
    assert len(handler.seen) == 13
    assert 30 < sum(clock.pauses) < 60 and max(clock.pauses) <= transfer_module.MAX_PAUSE_S


def test_a_download_waits_for_the_server_too(scripted, clock: FakeTime, tmp_path: Path):
    url, handler = scripted
    handler.script[:] = ["drop"] * 6 + [502] * 4  # then {"ok": true} as the file's bytes
    dest = Transfer(url, "t").download("/f", tmp_path / "f")
    assert dest.read_bytes() == b'{"ok": true}' and sum(clock.pauses) > 20


def test_the_time_to_try_again_has_an_end_and_the_error_says_what_the_server_said(scripted, clock: FakeTime):
    url, handler = scripted
    handler.script[:] = [503] * 1000
    with pytest.raises(TransferError) as raised:
        Transfer(url, "t", retry_for_s=120).get_json("/x")
    assert 120 <= sum(clock.pauses) + 1e-6 and clock.now - 1000 <= 121
    error = raised.value
    assert error.status == 503 and error.code == "Busy" and not error.gone
    assert error.message.startswith("GET /x: gave up after ") and "503 Busy: said 503" in error.message


def test_a_refusal_is_not_tried_again(scripted, clock: FakeTime):
    url, handler = scripted
    handler.script[:] = [403]
    with pytest.raises(TransferError) as raised:
        Transfer(url, "t").get_json("/x")
    assert raised.value.status == 403 and clock.pauses == [] and len(handler.seen) == 1


def test_a_wait_to_try_again_can_be_stopped_by_the_caller(scripted, clock: FakeTime):
    """A run canceled while its server is away: on_progress hears of each wait and stops it."""
    url, handler = scripted
    handler.script[:] = ["drop"] * 1000
    seen: list[int] = []
    with pytest.raises(Looping):
        Transfer(url, "t", on_progress=stop_after(2, seen)).get_json("/x")
    assert seen == [-1, -1, -1] and len(handler.seen) == 3


# -- a commit waits while the server hashes ----------------------------------------------------------


def test_a_commit_waits_as_long_as_a_manifest(served, tmp_path: Path, monkeypatch):
    world, url = served
    source = tmp_path / "out"
    source.mkdir()
    (source / "a.txt").write_bytes(b"a")
    transfer = Transfer(url, world.token("n1"), timeout=7.0, manifest_timeout=99.0)
    waits: dict[str, float | None] = {}
    real_open = transfer._open

    def recording_open(method: str, route_: str, **kwargs: Any):  # noqa: ANN202
        waits[f"{method} {route_.split('?')[0].rsplit('/', 1)[-1]}"] = kwargs.get("timeout")
        return real_open(method, route_, **kwargs)
    monkeypatch.setattr(transfer, "_open", recording_open)
    transfer.upload_tree(source, route("outputs/model/files"), route("outputs/model/commit"))
    assert waits == {"PUT a.txt": None, "POST commit": 99.0}  # a chunk: the usual 60 s; the commit: long
    assert (world.paths.datastore() / "azureml" / "j1" / "model" / "a.txt").read_bytes() == b"a"
