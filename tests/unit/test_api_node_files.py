"""The routes through which a node that does not share the workspace folder fetches its job's code,
inputs and resume folder and sends its outputs (services/node_files.py), in-process."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_files_support import CODE, DATA, SNAPSHOT_INPUT, World, assert_envelope, node_files_world, sha

from cible.runfiles import blob_path
from cible.server.guard import RequestGuard
from cible.server.services import file_hashes, node_files
from cible.server.settings import ServerSettings
from cible.server.store.rows import JobRow


@pytest.fixture
def world(migrated_db_url, tmp_path) -> Iterator[World]:  # noqa: ANN001
    with node_files_world(migrated_db_url, tmp_path) as made:
        yield made


def data_root(world: World) -> Path:
    return world.paths.datastore() / "data"


def output_root(world: World, name: str) -> Path:
    return world.paths.datastore() / "azureml" / "j1" / name


# -- who may ask -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["inputs/data/manifest", "resume/manifest", "outputs/model/staged"])
def test_another_nodes_token_is_refused(world: World, rel: str):
    response = world.api.get(world.url(rel), params={"attempt": 1}, headers=world.as_node("n2"))
    error = assert_envelope(response, 403, "Forbidden")
    assert "n2" in error["message"]


@pytest.mark.parametrize("rel", ["inputs/data/manifest", "resume/manifest", "outputs/model/staged"])
def test_a_job_not_placed_on_the_node_is_refused(world: World, rel: str):
    error = assert_envelope(world.get(rel, job="j2"), 409, "Conflict")  # j2 runs on n2
    assert "n1" in error["message"] and "j2" in error["message"]
    assert error["details"] == {"placed": False}  # what tells the agent to drop the run
    assert_envelope(world.get(rel, attempt=2), 409, "Conflict")  # an attempt that is not the current one
    assert_envelope(world.get(rel, job="nope"), 404, "NotFound")
    assert_envelope(world.get(rel, attempt=None), 422, "InvalidRequest")  # the attempt is required


def test_uploads_of_a_job_not_placed_on_the_node_are_refused_and_nothing_is_written(world: World):
    assert_envelope(world.put("outputs/model/files/a.txt", b"x", job="j2"), 409, "Conflict")
    assert_envelope(world.put("resume/files/a.txt", b"x", attempt=3), 409, "Conflict")
    assert_envelope(world.post("outputs/model/commit", {"files": {}}, job="j2"), 409, "Conflict")
    assert not (world.paths.run_dir("j2") / ".incoming").exists()
    assert not (world.paths.run_dir("j1") / ".incoming").exists()


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled"])
def test_a_job_that_ended_takes_no_more_files_from_its_nodes(world: World, status: str):
    """A node token may not change a finished job's outputs, resume folder or artifacts (its nodes send
    everything before their final report); what it fetches is still served."""
    assert world.put("outputs/model/files/a.txt", b"a").status_code == 200  # staged while it ran
    with world.api.app.state.store.session() as session:
        session.get(JobRow, "j1").status = status
    for response in (world.put("outputs/model/files/a.txt", b"b", offset=1), world.put("resume/files/c.txt", b"c"),
                     world.post("outputs/model/commit", {"files": {"a.txt": sha(b"a")}}),
                     world.post("resume/commit", {"files": {}}),
                     world.api.put("/api/v1/agent/nodes/n1/runs/j1/files/outputs/model/a.txt",
                                   params={"attempt": 1, "offset": 0}, content=b"x", headers=world.as_node("n1"))):
        error = assert_envelope(response, 409, "Conflict")
        assert f"has ended ({status})" in error["message"] and "drop it" in error["message"]
    assert world.post("resume/commit", {"files": {}}).json()["error"]["details"] == {"placed": False}
    assert not output_root(world, "model").exists() and not (world.paths.run_dir("j1") / "checkpoint").exists()
    assert not (world.paths.run_dir("j1") / "artifacts" / "outputs" / "model").exists()
    assert world.get("inputs/data/manifest").status_code == 200 and world.get("resume/manifest").status_code == 200


# -- blobs -------------------------------------------------------------------------------------------


def test_the_jobs_blobs_are_served_and_no_other(world: World):
    manifest = world.get(f"blobs/{world.code}")
    assert manifest.status_code == 200, manifest.text
    assert manifest.content == blob_path(world.paths.blob_root, world.code).read_bytes()
    for data in [*CODE.values(), *SNAPSHOT_INPUT.values()]:
        response = world.get(f"blobs/{sha(data)}")
        assert response.status_code == 200 and response.content == data
        assert response.headers["x-content-sha256"] == sha(data)
    # A blob uploaded to the workspace but named by no manifest of the job.
    world.api.put(f"/api/v1/blobs/{sha(b'secret')}", content=b"secret")
    error = assert_envelope(world.get(f"blobs/{sha(b'secret')}"), 404, "NotFound")
    assert "not part of job 'j1'" in error["message"]
    assert_envelope(world.get("blobs/not-a-digest"), 400, "InvalidRequest")


def test_a_blob_is_served_by_range(world: World):
    data = CODE["train.py"]
    response = world.get(f"blobs/{sha(data)}", headers={"Range": "bytes=6-"})
    assert response.status_code == 206
    assert response.content == data[6:]
    assert response.headers["content-range"] == f"bytes 6-{len(data) - 1}/{len(data)}"


# -- inputs ------------------------------------------------------------------------------------------


def test_a_folder_input_lists_its_regular_files_with_their_sha256(world: World):
    root = data_root(world)
    os.symlink("/etc/passwd", root / "link-out")  # a link: left out, even one that stays inside
    os.symlink(root / "a.txt", root / "link-in")
    os.mkfifo(root / "fifo")  # never listed (reading it would block)
    response = world.get("inputs/data/manifest")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "folder"
    assert body["files"] == [{"path": rel, "size": len(data), "sha256": sha(data)}
                             for rel, data in sorted(DATA.items())]


def test_a_file_input_is_a_manifest_of_one_file(world: World):
    body = world.get("inputs/one/manifest").json()
    assert body == {"kind": "file", "files": [{"path": "single.csv", "size": 8, "sha256": sha(b"x,y\n1,2\n")}]}
    response = world.get("inputs/one/files/single.csv")
    assert response.content == b"x,y\n1,2\n" and response.headers["x-content-sha256"] == sha(b"x,y\n1,2\n")
    assert_envelope(world.get("inputs/one/files/other.csv"), 404, "NotFound")


def test_inputs_that_are_no_workspace_path_have_no_manifest(world: World):
    for name in ("snap", "lr"):  # a snapshot (fetched as blobs), a literal
        error = assert_envelope(world.get(f"inputs/{name}/manifest"), 404, "NotFound")
        assert "no workspace path" in error["message"]
    error = assert_envelope(world.get("inputs/nope/manifest"), 404, "NotFound")
    assert "its inputs: data, one, snap, direct, lr" in error["message"]


def test_a_missing_input_says_so(world: World):
    (world.paths.datastore() / "single.csv").unlink()
    error = assert_envelope(world.get("inputs/one/manifest"), 404, "NotFound")
    assert "single.csv does not exist" in error["message"]


def test_an_input_file_comes_with_its_sha256_and_by_range(world: World):
    data = DATA["sub/b.bin"]
    response = world.get("inputs/data/files/sub/b.bin")
    assert response.content == data and response.headers["x-content-sha256"] == sha(data)
    ranged = world.get("inputs/data/files/sub/b.bin", headers={"Range": f"bytes=1000-{len(data) - 1}"})
    assert ranged.status_code == 206 and ranged.content == data[1000:]
    assert ranged.headers["x-content-sha256"] == sha(data)  # the whole file's


def test_an_input_file_never_leads_out_of_the_input(world: World):
    root = data_root(world)
    os.symlink("/etc", root / "etc-link")
    os.mkfifo(root / "fifo")
    assert_envelope(world.get("inputs/data/files/etc-link/passwd"), 400, "InvalidRequest")
    assert_envelope(world.get("inputs/data/files/%2E%2E/single.csv"), 400, "InvalidRequest")
    assert_envelope(world.get("inputs/data/files/sub"), 404, "NotFound")  # a folder
    assert_envelope(world.get("inputs/data/files/fifo"), 404, "NotFound")


def test_a_stored_plan_whose_input_lies_outside_the_workspace_serves_nothing(world: World):
    from cible.server.store.rows import JobRow

    with world.api.app.state.store.session() as session:
        row = session.get(JobRow, "j1")
        plan = row.run.plan
        data = {**plan["inputs"]["data"], "source": {"local_path": "/etc"}}
        plan = {**plan, "inputs": {**plan["inputs"], "data": data}}
        row.run = row.run.model_copy(update={"plan": plan})
    error = assert_envelope(world.get("inputs/data/manifest"), 404, "NotFound")
    assert "not in the workspace's datastores" in error["message"]
    assert_envelope(world.get("inputs/data/files/passwd"), 404, "NotFound")


def test_a_files_sha256_is_hashed_once_while_it_is_unchanged(world: World, monkeypatch):
    root = data_root(world)
    old = time.time() - 60  # not just written: its digest may be kept (see file_hashes.RACY_S)
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    hashed: list[Path] = []
    real = file_hashes.sha256_of
    monkeypatch.setattr(file_hashes, "sha256_of", lambda path: hashed.append(path) or real(path))
    assert world.get("inputs/data/manifest").status_code == 200
    assert len(hashed) == 2
    assert world.get("inputs/data/manifest").status_code == 200
    assert world.get("inputs/data/files/a.txt").status_code == 200
    assert len(hashed) == 2  # kept by path, size and mtime
    (root / "a.txt").write_bytes(b"changed")
    body = world.get("inputs/data/manifest").json()
    assert len(hashed) == 3 and body["files"][0]["sha256"] == sha(b"changed")


# -- the resume folder -------------------------------------------------------------------------------


def test_the_resume_folder_round_trips_and_a_commit_is_its_whole_content(world: World):
    assert world.get("resume/manifest").json() == {"kind": "folder", "files": []}  # nothing saved yet
    first, second = b"step 1 " * 1000, b"opt"
    assert world.put("resume/files/ckpt/model.pt", first[:4000]).json()["staged"] == 4000
    answer = world.put("resume/files/ckpt/model.pt", first[4000:], offset=4000).json()
    assert answer == {"path": "ckpt/model.pt", "offset": 4000, "size": len(first) - 4000, "staged": len(first)}
    assert world.put("resume/files/opt.bin", second).status_code == 200
    assert world.get("resume/staged").json() == {"files": [{"path": "ckpt/model.pt", "size": len(first)},
                                                           {"path": "opt.bin", "size": 3}]}
    committed = world.post("resume/commit", {"files": {"ckpt/model.pt": sha(first), "opt.bin": sha(second)}})
    assert committed.json() == {"files": 2, "sent": 2, "unchanged": 0, "removed": 0}, committed.text
    folder = world.paths.run_dir("j1") / "checkpoint"
    assert (folder / "ckpt" / "model.pt").read_bytes() == first and (folder / "opt.bin").read_bytes() == second
    assert world.get("resume/staged").json() == {"files": []}
    listed = world.get("resume/manifest").json()["files"]
    assert [(f["path"], f["sha256"]) for f in listed] == [("ckpt/model.pt", sha(first)), ("opt.bin", sha(second))]
    assert world.get("resume/files/opt.bin").content == second

    # The next save: model.pt unchanged (not sent again), opt.bin gone, a new file.
    assert world.put("resume/files/step.txt", b"2").status_code == 200
    committed = world.post("resume/commit", {"files": {"ckpt/model.pt": sha(first), "step.txt": sha(b"2")}})
    assert committed.json() == {"files": 2, "sent": 1, "unchanged": 1, "removed": 1}, committed.text
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == \
        ["ckpt/model.pt", "step.txt"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".checkpoint.")]  # no temp folder left


def test_a_commit_with_a_wrong_sha256_moves_nothing(world: World):
    assert world.put("resume/files/a.txt", b"a").status_code == 200
    assert world.post("resume/commit", {"files": {"a.txt": sha(b"a")}}).status_code == 200
    assert world.put("resume/files/b.txt", b"b").status_code == 200
    response = world.post("resume/commit", {"files": {"b.txt": sha(b"B"), "c.txt": sha(b"c")}})
    error = assert_envelope(response, 400, "InvalidRequest")
    assert "nothing was committed" in error["message"] and "b.txt" in error["message"]
    assert error["details"]["mismatched"] == ["b.txt"] and error["details"]["missing"] == ["c.txt"]
    folder = world.paths.run_dir("j1") / "checkpoint"
    assert [p.name for p in folder.iterdir()] == ["a.txt"]  # as it was


# -- outputs -----------------------------------------------------------------------------------------


def test_an_output_is_sent_in_chunks_and_committed_to_its_datastore_path(world: World):
    dest = output_root(world, "model")
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("written by another node")
    (dest / "weights.bin").write_text("old")
    data = os.urandom(3000)
    for offset in range(0, len(data), 1000):
        chunk = data[offset:offset + 1000]
        assert world.put("outputs/model/files/weights.bin", chunk, offset=offset).status_code == 200
    assert world.put("outputs/model/files/sub/x.txt", b"x").status_code == 200
    response = world.post("outputs/model/commit", {"files": {"weights.bin": sha(data), "sub/x.txt": sha(b"x")}})
    assert response.json() == {"files": 2, "sent": 2, "unchanged": 0, "removed": 0}, response.text
    assert (dest / "weights.bin").read_bytes() == data and (dest / "sub" / "x.txt").read_bytes() == b"x"
    assert (dest / "keep.txt").read_text() == "written by another node"  # only the files named are replaced
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_a_staged_file_sent_in_order_is_not_read_again_at_its_commit(world: World, monkeypatch):
    """Its sha256 is carried along as its chunks arrive: a big output's commit does not hash it all
    again (nor time out doing so). A chunk sent again over bytes already there, or a file changed
    behind the server's back, is read whole."""
    hashed: list[str] = []
    real = node_files.sha256_of
    monkeypatch.setattr(node_files, "sha256_of", lambda path: hashed.append(Path(path).name) or real(path))
    data, resent, other = os.urandom(3000), os.urandom(2000), os.urandom(500)
    for offset in range(0, 3000, 1000):
        assert world.put("outputs/model/files/in_order.bin", data[offset:offset + 1000], offset=offset).status_code == 200
    assert world.put("outputs/model/files/resent.bin", resent[:1500]).status_code == 200
    assert world.put("outputs/model/files/resent.bin", resent[1000:], offset=1000).status_code == 200  # overlaps
    assert world.put("outputs/model/files/changed.bin", other).status_code == 200
    changed = world.paths.run_dir("j1") / ".incoming" / "n1.1" / "outputs" / "model" / "changed.bin"
    changed.write_bytes(b"not what was sent")
    named = {"in_order.bin": sha(data), "resent.bin": sha(resent), "changed.bin": sha(other)}
    error = assert_envelope(world.post("outputs/model/commit", {"files": named}), 400, "InvalidRequest")
    assert error["details"]["mismatched"] == ["changed.bin"]  # read again, and found changed
    assert sorted(hashed) == ["changed.bin", "resent.bin"]
    assert world.put("outputs/model/files/changed.bin", other).status_code == 200  # started over: carried again
    hashed.clear()
    assert world.post("outputs/model/commit", {"files": named}).status_code == 200
    assert hashed == ["resent.bin"]
    dest = output_root(world, "model")
    assert [(dest / name).read_bytes() for name in named] == [data, resent, other]


def test_an_output_that_did_not_exist_appears_whole(world: World):
    dest = output_root(world, "up")
    assert world.put("outputs/up/files/result.json", b"{}").status_code == 200
    assert world.post("outputs/up/commit", {"files": {"result.json": sha(b"{}")}}).status_code == 200
    assert [p.name for p in dest.iterdir()] == ["result.json"]


def test_the_default_artifacts_output_goes_to_the_jobs_artifacts(world: World):
    assert world.put("outputs/artifacts/files/notes.txt", b"hi").status_code == 200
    assert world.post("outputs/artifacts/commit", {"files": {"notes.txt": sha(b"hi")}}).status_code == 200
    assert (world.paths.run_dir("j1") / "artifacts" / "notes.txt").read_bytes() == b"hi"


def test_an_output_commit_with_a_wrong_sha256_moves_nothing(world: World):
    dest = output_root(world, "model")
    assert world.put("outputs/model/files/a.txt", b"a").status_code == 200
    assert world.put("outputs/model/files/b.txt", b"b").status_code == 200
    response = world.post("outputs/model/commit", {"files": {"a.txt": sha(b"a"), "b.txt": sha(b"not b")}})
    error = assert_envelope(response, 400, "InvalidRequest")
    assert error["details"]["mismatched"] == ["b.txt"]
    assert not dest.exists()
    # What was sent stays staged: the node sends the wrong file again and commits.
    assert world.get("outputs/model/staged").json()["files"] == [{"path": "a.txt", "size": 1},
                                                                 {"path": "b.txt", "size": 1}]
    assert world.put("outputs/model/files/b.txt", b"not b").status_code == 200
    committed = world.post("outputs/model/commit", {"files": {"a.txt": sha(b"a"), "b.txt": sha(b"not b")}})
    assert committed.status_code == 200, committed.text
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt", "b.txt"]


def test_an_output_the_job_does_not_have_is_refused(world: World):
    error = assert_envelope(world.put("outputs/nope/files/a.txt", b"a"), 404, "NotFound")
    assert "no output 'nope'" in error["message"] and "model, up, artifacts" in error["message"]
    assert_envelope(world.post("outputs/nope/commit", {"files": {}}), 404, "NotFound")


@pytest.mark.parametrize("rel", ["%2E%2E/escape.txt", "a/%2E%2E/%2E%2E/b.txt", "a//b.txt", "%2E/a.txt", "a%5Cb.txt"])
def test_a_path_that_is_not_plain_is_refused(world: World, rel: str):
    assert_envelope(world.put(f"outputs/model/files/{rel}", b"x"), 400, "InvalidRequest")
    assert not (world.paths.run_dir("j1") / "escape.txt").exists()


def test_a_link_in_the_output_that_leads_out_is_refused_at_commit(world: World, tmp_path: Path):
    dest = output_root(world, "model")
    dest.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dest / "sub")  # planted by a job on a shared node
    assert world.put("outputs/model/files/sub/x.txt", b"x").status_code == 200
    error = assert_envelope(world.post("outputs/model/commit", {"files": {"sub/x.txt": sha(b"x")}}), 400)
    assert "in the way" in error["message"]
    assert list(outside.iterdir()) == []


def test_a_chunk_past_the_end_says_what_the_server_has(world: World):
    assert world.put("outputs/model/files/a.bin", b"12345").status_code == 200
    error = assert_envelope(world.put("outputs/model/files/a.bin", b"x", offset=9), 409, "Conflict")
    assert error["details"]["staged"] == 5 and "past the end" in error["message"]


def test_the_upload_routes_have_the_agents_chunk_cap(migrated_db_url, tmp_path):
    with node_files_world(migrated_db_url, tmp_path, max_agent_chunk_bytes=1024) as world:
        assert world.put("outputs/model/files/a.bin", b"x" * 1024).status_code == 200
        assert_envelope(world.put("outputs/model/files/a.bin", b"x" * 1025), 413)
        assert_envelope(world.put("resume/files/a.bin", b"x" * 1025), 413)
    guard = RequestGuard(None, ServerSettings(home=tmp_path / "g"))
    base = "/api/v1/agent/nodes/n1/runs/j1"
    for method, path in (("PUT", f"{base}/resume/files/a/b"), ("PUT", f"{base}/outputs/model/files/a"),
                         ("POST", f"{base}/resume/commit"), ("POST", f"{base}/outputs/model/commit")):
        assert guard.limit_of({"method": method, "path": path})[1] == "CIBLE_MAX_AGENT_CHUNK_BYTES"
    assert guard.limit_of({"method": "POST", "path": f"{base}/report"})[1] == "CIBLE_MAX_REQUEST_BYTES"


# -- which nodes move their files over HTTP ------------------------------------------------------------


def test_a_node_whose_provider_does_not_share_the_workspace_gets_plans_marked_transfer_http(world: World, monkeypatch):
    from datetime import datetime, timezone

    from cible.server.store.rows import NodeRow

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with world.api.app.state.store.session() as session:
        session.add(NodeRow(node_id="n1", compute="cpu-cluster", provider="elsewhere", state="running", job_name="j1",
                            address="127.0.0.1", info={}, created_at=now, updated_at=now))
    agents = world.api.app.state.agents
    assert agents.shares_workspace("local")  # its nodes run on this machine
    assert agents.shares_workspace("elsewhere")  # no such provider: as before (its nodes cannot start anyway)

    def plan_of_n1() -> dict:
        response = world.api.post("/api/v1/agent/nodes/n1/heartbeat", json={"runs": []}, headers=world.as_node("n1"))
        [run] = response.json()["runs"]
        return run["plan"]

    assert "transfer" not in plan_of_n1()
    monkeypatch.setattr(agents, "shares_workspace", lambda provider: provider != "elsewhere")
    plan = plan_of_n1()
    assert plan["transfer"] == "http"
    assert plan["resume_dir"] == str(world.paths.run_dir("j1") / "checkpoint")  # the server's: the agent localizes


def test_the_local_and_ray_providers_share_the_workspace_unless_told_not_to(tmp_path: Path):
    from cible.backends.base.contract import SHARES_WORKSPACE, ProviderContext, supports
    from cible.backends.local import make_provider
    from cible.testing.conformance import capability_mismatches

    context = ProviderContext(nodes_root=tmp_path / "nodes", home=tmp_path, url=None, node_token=lambda n: n)
    shared = make_provider(context)
    assert supports(shared, SHARES_WORKSPACE) and capability_mismatches(shared) == []
    for off in (False, "false", "0"):
        apart = make_provider(ProviderContext(**{**vars(context), "options": {"shared_workspace": off}}))
        assert not supports(apart, SHARES_WORKSPACE) and capability_mismatches(apart) == []
    assert supports(make_provider(context), SHARES_WORKSPACE)  # a class attribute was not changed
