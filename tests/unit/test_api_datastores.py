"""Datastores over the REST API, in-process: list, show, and files put at a datastore path from an
uploaded snapshot (`cible datastore upload`); the refusals of bad names, paths, snapshots and tokens."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from api_support import api_client, assert_envelope, upload
from fastapi.testclient import TestClient

from cible.server.services import datastores as datastores_module
from cible.server.services.datastores import RESERVED, STAGING, DatastoreService
from cible.server.tokens import Tokens

UPLOAD = "/api/v1/datastores/workspaceblobstore/paths:upload"
URI = "azureml://datastores/workspaceblobstore/paths/"


@pytest.fixture
def api(tmp_path: Path) -> TestClient:
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path) as client:
        yield client


def root_of(api: TestClient) -> Path:
    return api.app.state.settings.paths.datastore()


def as_user(api: TestClient, name: str, role: str) -> dict[str, str]:
    """The headers of a new user's own token (made by the Owner's workspace token)."""
    assert api.post("/api/v1/users", json={"name": name, "role": role}).status_code == 200
    return {"Authorization": f"Bearer {api.post('/api/v1/tokens', json={'user': name}).json()['token']}"}


def put(api: TestClient, snapshot: str, dest: str, **body: object):
    return api.post(UPLOAD, json={"snapshot": snapshot, "dest": dest, **body})


# -- list and show ---------------------------------------------------------------------------------
def test_the_workspace_lists_and_shows_its_datastore(api: TestClient):
    listed = api.get("/api/v1/datastores").json()
    assert listed["count"] == 1 and listed["next_skip"] is None
    store = listed["value"][0]
    assert store == api.get("/api/v1/datastores/workspaceblobstore").json()
    assert (store["name"], store["type"], store["is_default"], store["uri"]) == (
        "workspaceblobstore", "local", True, URI)
    assert Path(store["root"]) == root_of(api)
    error = assert_envelope(api.get("/api/v1/datastores/workspaceartifactstore"), 404, "NotFound")
    assert "workspaceblobstore" in error["message"] and error["details"]["field"] == "name"


# -- uploads ---------------------------------------------------------------------------------------
def test_a_file_lands_at_dest_or_under_a_dest_ending_with_a_slash(api: TestClient):
    snapshot = upload(api, {"data.csv": b"a,b\n1,2\n"})
    named = put(api, f"{snapshot}/data.csv", "raw/renamed.csv")
    assert named.status_code == 200, named.text
    assert named.json() == {"datastore": "workspaceblobstore", "dest": "raw/renamed.csv",
                            "uri": f"{URI}raw/renamed.csv", "count": 1, "bytes": 8, "files": ["raw/renamed.csv"]}
    into = put(api, f"{snapshot}/data.csv", "raw/2024/").json()
    assert (into["dest"], into["uri"], into["files"]) == ("raw/2024/data.csv", f"{URI}raw/2024/data.csv",
                                                          ["raw/2024/data.csv"])
    root = root_of(api)
    assert (root / "raw" / "renamed.csv").read_bytes() == (root / "raw" / "2024" / "data.csv").read_bytes() == b"a,b\n1,2\n"
    assert not list((root / RESERVED / STAGING).iterdir())  # nothing staged is left behind


def test_a_folder_lands_under_dest_keeping_its_tree_and_modes(api: TestClient):
    digest = hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    api.put(f"/api/v1/blobs/{digest}", content=b"#!/bin/sh\n")
    files = {"run.sh": {"sha256": digest, "size": 10, "mode": 0o755}}
    snapshot = upload(api, {"a.txt": b"A", "sub/deeper/b.txt": b"BB"})
    done = put(api, snapshot, "set/v1").json()
    assert (done["dest"], done["uri"], done["count"], done["bytes"]) == ("set/v1/", f"{URI}set/v1/", 2, 3)
    assert done["files"] == ["set/v1/a.txt", "set/v1/sub/deeper/b.txt"]
    root = root_of(api)
    assert (root / "set/v1/sub/deeper/b.txt").read_bytes() == b"BB"
    part = put(api, f"{snapshot}/sub", "part/").json()  # a folder inside a snapshot: its files, its tree
    assert part["files"] == ["part/deeper/b.txt"]
    script = api.post("/api/v1/snapshots", json={"files": files}).json()["uri"]
    assert put(api, script, "bin").status_code == 200
    assert os.stat(root / "bin" / "run.sh").st_mode & 0o777 == 0o755
    assert os.stat(root / "set/v1/a.txt").st_mode & 0o777 == 0o644


def test_files_there_already_are_replaced_only_when_asked(api: TestClient):
    first, second = upload(api, {"x.txt": b"one"}), upload(api, {"x.txt": b"two"})
    assert put(api, f"{first}/x.txt", "d/x.txt").status_code == 200
    error = assert_envelope(put(api, f"{second}/x.txt", "d/x.txt"), 409, "Conflict")
    assert "'d/x.txt'" in error["message"] and "--overwrite" in error["message"]
    assert error["details"] == {"field": "dest", "existing": ["d/x.txt"]}
    assert (root_of(api) / "d/x.txt").read_bytes() == b"one"
    assert put(api, f"{second}/x.txt", "d/x.txt", overwrite=True).status_code == 200
    assert (root_of(api) / "d/x.txt").read_bytes() == b"two"
    # a folder where the file would go, a file where a folder would: refused even with overwrite
    folder = assert_envelope(put(api, f"{second}/x.txt", "d", overwrite=True), 409)
    assert "'d' is a folder" in folder["message"] and "end dest with '/'" in folder["message"]
    blocked = assert_envelope(put(api, f"{second}/x.txt", "d/x.txt/y.txt", overwrite=True), 409)
    assert "'d/x.txt' is a file" in blocked["message"]
    # a folder upload that meets one existing file writes none of its files
    tree = upload(api, {"x.txt": b"three", "new.txt": b"n"})
    assert_envelope(put(api, tree, "d"), 409)
    assert not (root_of(api) / "d/new.txt").exists()


# -- refusals --------------------------------------------------------------------------------------
def test_an_unknown_datastore_is_a_404_naming_the_known_ones(api: TestClient):
    snapshot = upload(api, {"x.txt": b"x"})
    response = api.post("/api/v1/datastores/nosuchstore/paths:upload", json={"snapshot": snapshot, "dest": "x"})
    error = assert_envelope(response, 404, "NotFound")
    assert "'nosuchstore'" in error["message"] and "workspaceblobstore" in error["message"]
    assert error["details"]["datastores"] == ["workspaceblobstore"]


@pytest.mark.parametrize("dest, problem", [
    ("../x", "'..'"), ("a/../../x", "'..'"), ("a/../b", "'..'"), ("/etc/x", "absolute"), ("", "empty"),
    ("/", "absolute"), ("a\0b", "NUL"), ("x" * 300, "bytes"), ("LocalUpload/blobs/x", "LocalUpload"),
    ("localupload/x", "LocalUpload"),
])
def test_a_destination_outside_the_datastore_or_in_cibles_own_folder_is_a_400(api: TestClient, dest: str,
                                                                              problem: str):
    snapshot = upload(api, {"x.txt": b"x"})
    for uri in (f"{snapshot}/x.txt", snapshot):
        error = assert_envelope(put(api, uri, dest), 400, "InvalidRequest")
        assert error["details"]["field"] == "dest" and problem in error["message"], error
    assert not list(root_of(api).rglob("x.txt"))


def test_a_link_leading_out_of_the_datastore_is_not_followed(api: TestClient, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root_of(api) / "escape").symlink_to(outside)
    (root_of(api) / "shortcut").symlink_to(root_of(api) / "LocalUpload")  # inside, but cible's own folder
    snapshot = upload(api, {"x.txt": b"x"})
    for dest in ("escape/x.txt", "escape/", "escape"):
        error = assert_envelope(put(api, f"{snapshot}/x.txt", dest, overwrite=True), 400, "InvalidRequest")
        assert error["details"]["field"] == "dest" and "symbolic link" in error["message"]
    assert list(outside.iterdir()) == []
    error = assert_envelope(put(api, f"{snapshot}/x.txt", "shortcut/blobs/x.txt"), 400, "InvalidRequest")
    assert error["details"]["field"] == "dest" and "LocalUpload" in error["message"]
    assert put(api, snapshot, "inside/").status_code == 200  # links elsewhere do not matter


def test_bad_snapshots_are_4xx_never_500(api: TestClient):
    snapshot = upload(api, {"x.txt": b"x"})
    plain = hashlib.sha256(b"x").hexdigest()  # a file's blob, not a manifest
    forged = json.dumps({"version": 1, "files": {"../evil": {"sha256": plain}}}).encode()
    forged_digest = hashlib.sha256(forged).hexdigest()
    api.put(f"/api/v1/blobs/{forged_digest}", content=forged)  # any JSON may be uploaded as a blob
    cases = {
        "./local/folder": (400, "not a cible://snapshots/"),
        "cible://snapshots/xyz": (400, "names no snapshot"),
        f"cible://snapshots/{'0' * 64}": (404, "was not uploaded"),
        f"cible://snapshots/{plain}": (400, "not a snapshot manifest"),
        f"cible://snapshots/{forged_digest}": (400, "'..'"),
        f"{snapshot}/nothing-here": (400, "holds no files at 'nothing-here'"),
        f"{snapshot}/../x": (400, "'..'"),
    }
    for uri, (status, needle) in cases.items():
        error = assert_envelope(put(api, uri, "d/"), status)
        assert error["details"]["field"] == "snapshot" and needle in error["message"], (uri, error)
    for body in ({}, {"snapshot": snapshot}, {"snapshot": 5, "dest": "x"}, {"snapshot": snapshot, "dest": ["x"]}):
        assert api.post(UPLOAD, json=body).status_code == 422
    assert not list(root_of(api).glob("d"))


def test_a_failed_upload_leaves_no_file_half_written_nor_any_of_its_files(api: TestClient, monkeypatch):
    snapshot = upload(api, {"a.txt": b"A" * 1000, "b.txt": b"B" * 1000})
    real_copy, copies = datastores_module.shutil.copyfile, []

    def copy_then_die(src, dst):
        copies.append(dst)
        if len(copies) == 2:
            Path(dst).write_bytes(b"B" * 10)  # half of it, then the disk fails
            raise OSError(28, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(datastores_module.shutil, "copyfile", copy_then_die)
    service = DatastoreService(api.app.state.settings.paths)
    with pytest.raises(OSError):
        service.upload("workspaceblobstore", snapshot, "crash/")
    root = root_of(api)
    assert not (root / "crash").exists()
    assert not list((root / RESERVED / STAGING).iterdir())


# -- who may write -----------------------------------------------------------------------------------
def test_node_and_run_tokens_cannot_write_a_datastore_and_a_reader_only_reads(api: TestClient):
    snapshot = upload(api, {"x.txt": b"x"})
    tokens = Tokens("t")
    body = {"snapshot": f"{snapshot}/x.txt", "dest": "tok/x.txt"}
    for token in (tokens.node("n1"), tokens.job("j1", "salt")):
        refused = api.post(UPLOAD, json=body, headers={"Authorization": f"Bearer {token}"})
        assert_envelope(refused, 403, "Forbidden")
    reader = as_user(api, "rita", "Reader")
    assert api.get("/api/v1/datastores", headers=reader).status_code == 200
    error = assert_envelope(api.post(UPLOAD, json=body, headers=reader), 403, "Forbidden")
    assert "assets/write" in error["message"]
    assert not (root_of(api) / "tok").exists()
    scientist = as_user(api, "sam", "data-scientist")
    assert api.post(UPLOAD, json=body, headers=scientist).status_code == 200
