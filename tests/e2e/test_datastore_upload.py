"""`cible datastore upload` against a real server: files put at a datastore path, then read by a job as
`azureml://datastores/workspaceblobstore/paths/<dest>`; and what the CLI says when the upload is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_support import Workspace, write_yaml

pytestmark = pytest.mark.e2e

URI = "azureml://datastores/workspaceblobstore/paths/"
READ_BOTH = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
    command: >-
      cat ${{inputs.greeting}} &&
      cat ${{inputs.tree}}/sub/deep.txt
    inputs:
      greeting:
        type: uri_file
        path: azureml://datastores/workspaceblobstore/paths/spark-input/greeting.txt
      tree:
        type: uri_folder
        path: azureml://datastores/workspaceblobstore/paths/spark-input/tree/
    compute: local
"""


def assert_cli_error(proc, *needles: str) -> str:
    where = f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 1 and proc.stderr.lstrip().startswith("error:"), where
    assert "Traceback" not in proc.stderr, where
    for needle in needles:
        assert needle in proc.stderr, f"stderr lacks {needle!r}{where}"
    return proc.stderr


def test_uploaded_files_are_read_by_a_job_from_their_datastore_path(workspace: Workspace, tmp_path: Path):
    greeting = tmp_path / "greeting.txt"
    greeting.write_text("hello from the datastore\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "top.txt").write_text("top\n")
    (tree / "sub" / "deep.txt").write_text("deep in the tree\n")

    file_done = workspace.json("datastore", "upload", "--name", "workspaceblobstore", "--src", greeting,
                               "--dest", "spark-input/")
    assert (file_done["uri"], file_done["count"], file_done["bytes"]) == (
        f"{URI}spark-input/greeting.txt", 1, len("hello from the datastore\n"))
    folder_done = workspace.json("datastore", "upload", "-n", "workspaceblobstore", "-s", tree, "-d", "spark-input/tree")
    assert folder_done["uri"] == f"{URI}spark-input/tree/" and folder_done["count"] == 2
    assert folder_done["files"] == ["spark-input/tree/sub/deep.txt", "spark-input/tree/top.txt"]
    said = workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", greeting, "-d", "copy.txt").stdout
    assert f"uploaded 1 file(s), 25 bytes, to {URI}copy.txt" in said

    stores = workspace.json("datastore", "list")
    assert [s["name"] for s in stores] == ["workspaceblobstore"]
    shown = workspace.json("datastore", "show", "-n", "workspaceblobstore")
    assert Path(shown["root"]).joinpath("spark-input", "tree", "top.txt").read_text() == "top\n"

    job_file = write_yaml(tmp_path, "job.yml", READ_BOTH)
    job = json.loads(workspace.cible("job", "create", "-f", job_file, "--stream", "-o", "json").stdout)
    log = workspace.run_log(job["name"])
    assert job["status"] == "Completed", log
    assert "hello from the datastore" in log and "deep in the tree" in log, log


def test_a_second_upload_replaces_files_only_with_overwrite(workspace: Workspace, tmp_path: Path):
    src = tmp_path / "v.txt"
    src.write_text("one")
    workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", src, "-d", "again/v.txt")
    src.write_text("two")
    refused = workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", src, "-d", "again/v.txt",
                              check=False)
    assert_cli_error(refused, "again/v.txt", "--overwrite")
    workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", src, "-d", "again/v.txt", "--overwrite")
    root = Path(workspace.json("datastore", "show", "-n", "workspaceblobstore")["root"])
    assert (root / "again" / "v.txt").read_text() == "two"


def test_bad_uploads_say_what_is_wrong(workspace: Workspace, tmp_path: Path):
    src = tmp_path / "x.txt"
    src.write_text("x")
    unknown = workspace.cible("datastore", "upload", "-n", "nosuchstore", "-s", src, "-d", "x.txt", check=False)
    assert_cli_error(unknown, "'nosuchstore'", "workspaceblobstore")
    outside = workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", src, "-d", "../x",
                              check=False)
    assert_cli_error(outside, "dest", "'..'")
    absolute = workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", src, "-d", "/tmp/x",
                               check=False)
    assert_cli_error(absolute, "dest", "absolute")
    missing = workspace.cible("datastore", "upload", "-n", "workspaceblobstore", "-s", tmp_path / "nope",
                              "-d", "x/", check=False)
    assert_cli_error(missing, "src", "does not exist")
    unknown_show = workspace.cible("datastore", "show", "-n", "workspaceartifactstore", check=False)
    assert_cli_error(unknown_show, "workspaceartifactstore", "workspaceblobstore")
