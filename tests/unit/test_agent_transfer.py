"""cible.agent.transfer against the workspace server on a real uvicorn (127.0.0.1): a run's files
fetched and sent through its steps, downloads and uploads cut short and continued, refusals."""

from __future__ import annotations

import ast
import hashlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from node_files_support import CODE, DATA, SNAPSHOT_INPUT, World, served_world, sha

import cible.agent.transfer as transfer_module
from cible.agent.localize import AFTER, BEFORE, localize
from cible.agent.staged import RunTransfer
from cible.agent.transfer import Transfer, TransferError
from cible.launch.staging import materialise_snapshot

BIG = 20 << 20
MB = 1 << 20


class Abort(Exception):
    """Stands for the agent killed mid-transfer."""




def run_transfer(world: World, url: str, attempt: int = 1, **options) -> RunTransfer:  # noqa: ANN003
    return RunTransfer(Transfer(url, world.token("n1"), **options), "n1", "j1", attempt)


def abort_after(limit: int, seen: list[int] | None = None):  # noqa: ANN201
    def progress(route: str, done: int) -> None:
        if seen is not None:
            seen.append(done)
        if done >= limit:
            raise Abort(route)
    return progress


def big_input(world: World) -> bytes:
    data = os.urandom(BIG)
    (world.paths.datastore() / "data" / "big.bin").write_bytes(data)
    return data


# -- a run's steps --------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    with served_world(tmp_path) as world_and_url:
        yield world_and_url


def test_a_runs_files_come_before_and_go_after_through_its_steps(served, tmp_path: Path):
    world, url = served
    saved = world.paths.run_dir("j1") / "checkpoint"
    saved.mkdir(parents=True)
    (saved / "epoch.txt").write_text("3")  # what an earlier attempt saved
    node_root = tmp_path / "node"
    plan, steps = localize(world.node_plan(), node_root, server_url=url)
    runs = run_transfer(world, url)
    runs.do_all(steps, BEFORE)

    blob_root = Path(plan["blob_root"])
    code = materialise_snapshot(blob_root, world.code, tmp_path / "wd")  # what the launcher does with it
    assert {p.relative_to(code).as_posix(): p.read_bytes() for p in code.rglob("*") if p.is_file()} == CODE
    snap = plan["inputs"]["snap"]["source"]
    staged = materialise_snapshot(blob_root, snap["snapshot"], tmp_path / "snap", snap["subpath"])
    assert sorted(p.name for p in staged.iterdir()) == ["1.txt", "2.txt"]
    assert not (blob_root / sha(SNAPSHOT_INPUT["other.txt"])[:2] / sha(SNAPSHOT_INPUT["other.txt"])).exists()
    data = Path(plan["inputs"]["data"]["source"]["local_path"])
    assert {p.relative_to(data).as_posix(): p.read_bytes() for p in data.rglob("*") if p.is_file()} == DATA
    assert Path(plan["inputs"]["one"]["source"]["local_path"]).read_bytes() == b"x,y\n1,2\n"
    resume = Path(plan["resume_dir"])
    assert (resume / "epoch.txt").read_text() == "3"
    assert not list(node_root.rglob("*.part"))

    # The job ran: it wrote its outputs and saved again.
    for name, files in {"model": {"w.bin": b"weights", "sub/cfg.json": b"{}"}, "up": {"r.txt": b"result"},
                        "artifacts": {"notes.txt": b"n"}}.items():
        for rel, content in files.items():
            path = Path(plan["outputs"][name]["local_path"]) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    (resume / "epoch.txt").write_text("4")
    (resume / "model.pt").write_bytes(b"m")
    runs.do_all(steps, AFTER)

    datastore = world.paths.datastore() / "azureml" / "j1"
    assert (datastore / "model" / "w.bin").read_bytes() == b"weights"
    assert (datastore / "model" / "sub" / "cfg.json").read_bytes() == b"{}"
    assert (datastore / "up" / "r.txt").read_bytes() == b"result"
    assert (world.paths.run_dir("j1") / "artifacts" / "notes.txt").read_bytes() == b"n"
    assert {p.name: p.read_text() for p in saved.iterdir()} == {"epoch.txt": "4", "model.pt": "m"}

    # Done again (a restarted agent): what is there already is kept, the commits say the same.
    runs.do_all(steps, BEFORE)
    runs.do_all(steps, AFTER)
    assert {p.name: p.read_text() for p in saved.iterdir()} == {"epoch.txt": "4", "model.pt": "m"}


def test_a_refusal_names_the_step_route_status_and_the_servers_message(served):
    world, url = served
    _, steps = localize(world.node_plan(), Path("/nonexistent/node"))
    with pytest.raises(TransferError) as raised:
        run_transfer(world, url, attempt=2).do(steps[1])  # input 'data', for an attempt that is not n1's
    error = raised.value
    assert error.status == 409 and error.gone and error.code == "Conflict"
    assert error.message.startswith("input 'data': GET /api/v1/agent/nodes/n1/runs/j1/inputs/data/manifest?attempt=2: ")
    assert "does not run attempt 2 of job 'j1'" in error.message


def test_an_input_that_does_not_exist_is_no_reason_to_drop_the_run(served):
    world, url = served
    (world.paths.datastore() / "single.csv").unlink()
    _, steps = localize(world.node_plan(), Path("/nonexistent/node"))
    with pytest.raises(TransferError) as raised:
        run_transfer(world, url).do(steps[2])  # input 'one'
    assert raised.value.status == 404 and not raised.value.gone  # the job fails, saying why
    assert "input 'one'" in raised.value.message and "single.csv does not exist" in raised.value.message


def test_no_server_is_a_clear_error_once_the_time_to_try_again_is_spent():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransferError, match=r"GET /x: gave up after 1 try in 0\.0 s: ConnectionRefusedError"):
        Transfer(f"http://127.0.0.1:{port}", "t", retry_for_s=0).get_json("/x")


# -- downloads cut short ----------------------------------------------------------------------------


def test_a_download_cut_short_goes_on_from_where_it_stopped(served, tmp_path: Path):
    world, url = served
    data = big_input(world)
    route = run_transfer(world, url).route("inputs/data/files/big.bin")
    dest = tmp_path / "big.bin"
    with pytest.raises(Abort):
        Transfer(url, world.token("n1"), on_progress=abort_after(5 * MB)).download(route, dest)
    part = dest.with_name("big.bin.part")
    had = part.stat().st_size
    assert 5 * MB <= had < BIG and not dest.exists()

    seen: list[int] = []
    Transfer(url, world.token("n1"), on_progress=abort_after(BIG + 1, seen)).download(route, dest)
    assert seen[0] - MB <= had < seen[0]  # the first block it got came after what the .part had: a Range
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha(data) and not part.exists()


def test_a_part_left_by_a_killed_agent_is_continued_and_a_wrong_one_started_over(served, tmp_path: Path):
    world, url = served
    data = big_input(world)
    route = run_transfer(world, url).route("inputs/data/files/big.bin")
    dest = tmp_path / "big.bin"
    part = dest.with_name("big.bin.part")
    part.write_bytes(data[:7 * MB])
    seen: list[int] = []
    Transfer(url, world.token("n1"), on_progress=abort_after(BIG + 1, seen)).download(route, dest, sha(data), BIG)
    assert seen[0] > 7 * MB and dest.read_bytes() == data

    dest.unlink()
    part.write_bytes(bytes(7 * MB))  # not the file's first bytes: caught by the sha256, fetched again whole
    seen.clear()
    Transfer(url, world.token("n1"), on_progress=abort_after(BIG + 1, seen)).download(route, dest)
    assert seen[0] > 7 * MB and min(seen) <= MB  # continued first, then, the check failing, from the start
    assert dest.read_bytes() == data and not part.exists()


def test_an_answer_cut_off_by_the_network_is_continued_by_range(tmp_path: Path):
    data = os.urandom(3 * MB)
    ranges: list[str | None] = []

    class CutOnce(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked = self.headers.get("Range")
            ranges.append(asked)
            start = int(asked.split("=")[1].rstrip("-")) if asked else 0
            self.send_response(206 if asked else 200)
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("X-Content-SHA256", sha(data))
            self.end_headers()
            if asked:
                self.wfile.write(data[start:])
            else:  # the first answer stops half way: the connection drops
                self.wfile.write(data[:MB + 123])
                self.close_connection = True

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), CutOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = Transfer(f"http://127.0.0.1:{server.server_port}", "t").download("/f", tmp_path / "f")
    finally:
        server.shutdown()
        server.server_close()
    assert dest.read_bytes() == data
    assert ranges == [None, f"bytes={MB + 123}-"]


# -- uploads cut short -------------------------------------------------------------------------------


def test_an_upload_cut_short_goes_on_from_what_the_server_has(served, tmp_path: Path):
    world, url = served
    data = os.urandom(BIG)
    source = tmp_path / "out"
    source.mkdir()
    (source / "big.bin").write_bytes(data)
    (source / "empty.txt").write_bytes(b"")
    runs = run_transfer(world, url)
    files, commit, staged = (runs.route(f"outputs/model/{rel}") for rel in ("files", "commit", "staged"))
    with pytest.raises(Abort):
        Transfer(url, world.token("n1"), chunk_bytes=4 * MB, on_progress=abort_after(4 * MB)).upload_tree(
            source, files, commit, staged_route=staged)
    seen: list[int] = []
    answer = Transfer(url, world.token("n1"), chunk_bytes=4 * MB, on_progress=abort_after(BIG + 1, seen)).upload_tree(
        source, files, commit, staged_route=staged)
    assert seen[0] == 8 * MB  # its first chunk was the second: the first was on the server already
    assert answer == {"files": 2, "sent": 2, "unchanged": 0, "removed": 0}
    dest = world.paths.datastore() / "azureml" / "j1" / "model"
    assert hashlib.sha256((dest / "big.bin").read_bytes()).hexdigest() == sha(data)
    assert (dest / "empty.txt").read_bytes() == b""


def test_a_file_changed_while_it_was_sent_is_sent_again(served, tmp_path: Path, monkeypatch):
    world, url = served
    source = tmp_path / "out"
    source.mkdir()
    (source / "a.txt").write_bytes(b"first")
    runs = run_transfer(world, url)
    transfer = runs.transfer
    real_send = Transfer._send
    sent: list[str] = []

    def change_then_send(self, path: Path, route: str, staged: int) -> None:  # noqa: ANN001
        sent.append(route)
        if len(sent) == 1:
            path.write_bytes(b"second, longer")  # rewritten by the job after it was hashed, before it was sent
        real_send(self, path, route, staged)
    monkeypatch.setattr(Transfer, "_send", change_then_send)
    transfer.upload_tree(source, runs.route("outputs/model/files"), runs.route("outputs/model/commit"))
    assert len(sent) == 2
    assert (world.paths.datastore() / "azureml" / "j1" / "model" / "a.txt").read_bytes() == b"second, longer"


# -- what it may import -------------------------------------------------------------------------------


def test_transfer_imports_only_the_standard_library_and_stdlib_only_cible_modules():
    tree = ast.parse(Path(transfer_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    own = {name for name in imported if name.split(".")[0] == "cible"}
    assert own == {"cible.core.safepaths", "cible.runfiles"}
    assert {name.split(".")[0] for name in imported - own} <= set(sys.stdlib_module_names) | {"__future__"}
