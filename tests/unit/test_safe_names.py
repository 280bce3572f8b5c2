"""Names follow Azure's rules (cible.core.naming) and names or user paths become file paths only
under their folder (cible.core.safepaths): `..`, absolute paths, NUL bytes, over-long names,
look-alike characters and symbolic links."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cible.core import naming
from cible.core.errors import InvalidRequestError, InvalidSpecError
from cible.core.models import COMPUTE_TYPES
from cible.core.safepaths import inside, normalise, under
from cible.core.specs.azureml.loader import load_spec
from cible.core.specs.azureml.refs import parse_datastore_uri, parse_job_output_uri
from cible.launch.staging import materialise_snapshot
from cible.runfiles import blob_path
from cible.server.clusters.runs import artifact_path
from cible.workspace import WorkspacePaths

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Characters that look like `.` or `/` but are neither: U+2024 ONE DOT LEADER, U+FF0E FULLWIDTH FULL STOP,
# U+FF0F FULLWIDTH SOLIDUS, U+2215 DIVISION SLASH.
LOOK_ALIKES = ["\u2024\u2024", "\u2024\u2024\uff0f\u2024\u2024\uff0fetc", "..\u2215..\u2215etc", "\uff0e\uff0e"]
ESCAPES = ["..", "../x", "a/../../x", "x/..", "/etc/passwd", "/", "a\0b", "\0", "x" * 300, "ok/" + "y" * 256, "",
           ".", "./."]


# -- the path helper ---------------------------------------------------------------------------


@pytest.mark.parametrize("part", ESCAPES)
def test_under_refuses_what_could_leave_the_folder_and_says_where(tmp_path: Path, part: str):
    with pytest.raises(InvalidRequestError) as refused:
        under(tmp_path, part, field="name")
    assert refused.value.details == {"field": "name"}
    assert refused.value.message.startswith("name: ")


@pytest.mark.parametrize("name", LOOK_ALIKES)
def test_look_alikes_are_plain_names_that_stay_under_the_folder(tmp_path: Path, name: str):
    path = under(tmp_path, name)
    assert path.parent == tmp_path and path.name == name
    path.write_text("x")  # a file of that name, in the folder, and nowhere else
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_under_joins_names_and_relative_paths(tmp_path: Path):
    assert under(tmp_path, "job1") == tmp_path / "job1"
    assert under(tmp_path, "a/./b//c/", "d") == tmp_path / "a" / "b" / "c" / "d"
    assert under(tmp_path, "\u2024\u2024", "x") == tmp_path / "\u2024\u2024" / "x"


def test_a_symbolic_link_out_of_the_folder_is_refused_and_one_inside_is_not(tmp_path: Path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "out").symlink_to(outside)
    (root / "in").symlink_to(root / "real")
    for rel in ("out", "out/secret", "out/not-there-yet"):
        with pytest.raises(InvalidRequestError, match="symbolic link"):
            under(root, rel)
    assert under(root, "in/x") == root / "in" / "x"


def test_a_parent_reached_through_a_link_is_still_its_own_folder(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert under(tmp_path / "alias", "x") == tmp_path / "alias" / "x"


@pytest.mark.parametrize(("rel", "normalised"), [("", ""), (".", ""), ("a/./b/../c", "a/c"), ("a/..", ""),
                                                 ("x/", "x/"), ("/etc/passwd", "etc/passwd"), ("//x", "x")])
def test_user_paths_are_normalised_inside_their_root(rel: str, normalised: str):
    assert normalise(rel) == normalised


@pytest.mark.parametrize("rel", ["..", "../x", "a/../../x", "/../etc", "a\0b", "x/" + "y" * 300])
def test_user_paths_that_leave_their_root_are_refused(tmp_path: Path, rel: str):
    with pytest.raises(InvalidRequestError) as refused:
        inside(tmp_path, rel, field="outputs.o.path")
    assert refused.value.details == {"field": "outputs.o.path"}


def test_an_empty_user_path_is_the_root_itself(tmp_path: Path):
    assert inside(tmp_path, "") == tmp_path and inside(tmp_path, "a/../b") == tmp_path / "b"


def test_datastore_and_job_output_uris_are_normalised_and_kept_inside():
    ds = "azureml://datastores/workspaceblobstore/paths/"
    assert parse_datastore_uri(ds + "a/./b/../c.csv") == ("workspaceblobstore", "a/c.csv")
    with pytest.raises(InvalidRequestError) as refused:
        parse_datastore_uri(ds + "../../../../etc", field="outputs.model.path")
    assert refused.value.details == {"field": "outputs.model.path"}
    assert "outputs.model.path" in refused.value.message and "inside" in refused.value.message
    assert parse_job_output_uri("azureml://jobs/j/outputs/o/paths/a/../b") == ("j", "o", "b")
    with pytest.raises(InvalidRequestError):
        parse_job_output_uri("azureml://jobs/j/outputs/o/paths/../../x")


# -- where a workspace keeps its things ------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "", "a\0", "x" * 300, "../../etc"])
def test_workspace_folders_never_come_from_a_bad_name(tmp_path: Path, name: str):
    paths = WorkspacePaths(tmp_path / "ws")
    for folder in (paths.run_dir, paths.instance_home, paths.datastore):
        with pytest.raises(InvalidRequestError):
            folder(name)


def test_removing_the_home_of_a_bad_name_removes_nothing(tmp_path: Path):
    paths = WorkspacePaths(tmp_path / "ws")
    paths.ensure()
    (paths.home / "token").write_text("t")
    for name in ("..", "../..", "\0", ""):
        paths.remove_instance_home(name)
    assert (paths.home / "token").read_text() == "t" and paths.runs.is_dir()
    paths.instance_home("ci").mkdir(parents=True)
    paths.remove_instance_home("ci")
    assert not (paths.home / "instances" / "ci").exists() and (paths.home / "instances").is_dir()


def test_a_shipped_artifact_never_follows_a_link_out_of_the_run(tmp_path: Path):
    paths = WorkspacePaths(tmp_path / "ws")
    outputs = paths.run_dir("job1") / "artifacts" / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "link").symlink_to(tmp_path)
    assert artifact_path(paths, "job1", "outputs/link/x") is None
    assert artifact_path(paths, "job1", "outputs/model.bin") == outputs / "model.bin"


def test_a_snapshot_whose_manifest_leads_out_is_not_staged(tmp_path: Path):
    blobs, dest = tmp_path / "blobs", tmp_path / "job" / "wd"
    data = b"evil"
    digest = hashlib.sha256(data).hexdigest()
    blob_path(blobs, digest).parent.mkdir(parents=True)
    blob_path(blobs, digest).write_bytes(data)
    manifest = json.dumps({"version": 1, "files": {"../../planted": {"sha256": digest}}}).encode()
    snapshot = hashlib.sha256(manifest).hexdigest()
    blob_path(blobs, snapshot).parent.mkdir(parents=True, exist_ok=True)
    blob_path(blobs, snapshot).write_bytes(manifest)
    with pytest.raises(InvalidRequestError):
        materialise_snapshot(blobs, snapshot, dest)
    assert not (tmp_path / "planted").exists()


# -- the name rules ------------------------------------------------------------------------------------


BAD_NAMES = ["..", ".", "", "a\0b", "x" * 300, "a/b", "a\\b", " a", "-a", "_a", *LOOK_ALIKES, "caf\u00e9"]


@pytest.mark.parametrize("rule", [naming.JOB, naming.ASSET, naming.EXPERIMENT, naming.COMPUTE, naming.ENDPOINT,
                                  naming.DEPLOYMENT, naming.ASSET_VERSION])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_with_the_rule_and_the_fix(rule: naming.NameRule, name: str):
    with pytest.raises(InvalidRequestError) as refused:
        rule.check(name)
    message = refused.value.message
    assert refused.value.details == {"field": "name"} and message.startswith("name: ")
    assert rule.what in message and "rename it" in message and len(message) < 400


@pytest.mark.parametrize(("rule", "name"), [
    (naming.JOB, "khaki_boot_9xq8zvv8k1"), (naming.JOB, "e2e-hello-world-1a2b3c4d"), (naming.JOB, "j" * 255),
    (naming.EXPERIMENT, "Default"), (naming.EXPERIMENT, "cible-examples"), (naming.EXPERIMENT, "a"),
    (naming.ASSET, "iris-classifier"), (naming.ASSET, "my_env"), (naming.ASSET_VERSION, "1"),
    (naming.ASSET_VERSION, "2.0.1"), (naming.COMPUTE, "cpu-cluster"), (naming.COMPUTE, "c"),
    (naming.COMPUTE, "spot2"), (naming.COMPUTE, "c" * 24), (naming.ENDPOINT, "iris-endpoint"),
    (naming.DEPLOYMENT, "blue"),
])
def test_names_azure_takes_are_taken(rule: naming.NameRule, name: str):
    assert rule.check(name) == name


@pytest.mark.parametrize(("rule", "name", "why"), [
    (naming.JOB, "j" * 256, "256 characters"), (naming.COMPUTE, "c" * 25, "25 characters"),
    (naming.COMPUTE, "cpu-cluster-1", "ends in '-' and digits"), (naming.COMPUTE, "1cpu", "does not follow"),
    (naming.ENDPOINT, "ab", "2 characters"), (naming.ENDPOINT, "end-", "does not follow"),
    (naming.ASSET_VERSION, "latest", "reserved"), (naming.ASSET_VERSION, "1" * 65, "65 characters"),
])
def test_each_rule_says_why_a_name_breaks_it(rule: naming.NameRule, name: str, why: str):
    with pytest.raises(InvalidRequestError, match=why):
        rule.check(name)


def test_spec_files_are_held_to_the_same_rules(tmp_path: Path):
    for text, kind, field in (("name: ..\ncommand: echo\n", "job", "name"),
                              ("command: echo\nexperiment_name: a/b\n", "job", "experiment_name"),
                              ("name: cpu-cluster-1\ntype: amlcompute\n", "compute", "name"),
                              ("name: ../d\npath: https://x/y\n", "data", "name"),
                              ("name: d\nversion: latest\npath: https://x/y\n", "data", "version")):
        spec = tmp_path / "spec.yml"
        spec.write_text(text)
        with pytest.raises(InvalidSpecError) as refused:
            load_spec(spec, kind)
        assert f": {field}: " in refused.value.message and "rename it" in refused.value.message


def test_every_example_keeps_valid_names():
    specs = sorted(EXAMPLES.glob("*/*.yml"))
    assert specs
    for spec in specs:
        data = yaml.safe_load(spec.read_text())
        if "dependencies" in data:
            continue  # a conda file an environment names, not a spec
        kind = ("environment" if spec.parent.name == "environments" else
                "compute" if data.get("type") in COMPUTE_TYPES else "job")
        load_spec(spec, kind)  # raises on a name the rules refuse


@pytest.mark.parametrize(("folder", "name"), [("my project", "my_project"), ("v1.2", "v1_2"), ("", "Default"),
                                              (".hidden", "hidden"), ("...", "Default"), ("ok-name", "ok-name")])
def test_the_default_experiment_from_a_folder_is_a_valid_name(folder: str, name: str):
    assert naming.experiment_from_folder(folder) == name
    naming.EXPERIMENT.check(name)


def test_the_path_helper_is_stdlib_only_for_the_launcher():
    code = ("import sys; import cible.core.safepaths; bad = {'pydantic', 'yaml', 'sqlalchemy'} & set(sys.modules); "
            "print(sorted(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
