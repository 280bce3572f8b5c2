"""sdk/job_bodies.py: what a submission or a component registration sends, against the in-process
app: every local path a command, sweep or pipeline spec holds uploaded (each tree once), code with
its additional_includes laid out as Azure builds it, conda files inlined, references kept."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.client.http import API, WorkspaceClient
from cible.core.errors import InvalidSpecError
from cible.launch.staging import materialise_snapshot
from cible.sdk.job_bodies import component_body, submission_body, upload_local_paths

SNAPSHOT = "cible://snapshots/"


class CountingClient(WorkspaceClient):
    """The SDK's HTTP client on the in-process app, counting the snapshots it records."""

    def __init__(self, api: TestClient) -> None:
        super().__init__("http://testserver", "t")
        self._http.close()
        self._http = TestClient(api.app, base_url=f"http://testserver{API}", headers=dict(api.headers))
        self.snapshots = 0

    def json(self, method: str, path: str, **kwargs):  # noqa: ANN003, ANN201
        self.snapshots += (method, path) == ("POST", "/snapshots")
        return super().json(method, path, **kwargs)


@pytest.fixture
def api(tmp_path: Path):  # noqa: ANN201
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path) as client:
        yield client


@pytest.fixture
def client(api: TestClient) -> CountingClient:
    return CountingClient(api)


def tree(api: TestClient, uri: str, dest: Path) -> dict[str, str]:
    """The files of an uploaded snapshot (relative path -> text), read back from the workspace."""
    assert uri.startswith(SNAPSHOT), uri
    snapshot, _, sub = uri[len(SNAPSHOT):].partition("/")
    root = materialise_snapshot(api.app.state.assets.paths.blob_root, snapshot, dest / snapshot[:8], sub)
    if root.is_file():
        return {root.name: root.read_text()}
    return {p.relative_to(root).as_posix(): p.read_bytes().decode("latin-1")
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A pipeline's folder: two code folders, a shared library, a data folder, a conda file."""
    root = tmp_path / "project"
    for rel, text in {
        "train/train.py": "print('train')\n", "train/.amlignore": "*.tmp\n", "train/scratch.tmp": "x",
        "score/score.py": "print('score')\n",
        "common/utils.py": "def util(): ...\n", "common/sub/more.py": "MORE = 1\n",
        "LICENSE.txt": "MIT\n",
        "data/rows.csv": "a\n1\n", "data.csv": "b\n2\n",
        "conda.yml": "name: c\ndependencies:\n  - python=3.10\n  - pip:\n    - six\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def component(project: Path, folder: str, **fields) -> dict:  # noqa: ANN003
    """An inlined command component, as the loader leaves `component: ./x.yml` (absolute paths)."""
    return {"type": "command", "name": f"c_{folder}", "version": "1", "code": str(project / folder),
            "command": "python x.py", "environment": {"image": "python:3.10", "conda_file": str(project / "conda.yml")},
            **fields}


def test_a_pipeline_uploads_every_local_path_it_holds_and_keeps_references(api, client, project, tmp_path):
    shared = component(project, "train", additional_includes=[str(project / "common"), str(project / "LICENSE.txt")])
    body = {
        "type": "pipeline", "name": "p1",
        "inputs": {"raw": {"type": "uri_folder", "path": str(project / "data")}, "n": 3},
        "jobs": {
            "inline": {"type": "command", "code": str(project / "score"), "command": "python score.py",
                       "environment": {"conda_file": str(project / "conda.yml")},
                       "inputs": {"f": {"type": "uri_file", "path": str(project / "data.csv")},
                                  "bound": "${{parent.inputs.raw}}", "s": {"type": "string", "path": "./not-a-file"}}},
            "train": {"component": shared, "inputs": {"d": "${{parent.inputs.raw}}"}},
            "registered": {"component": "azureml:scorer@latest", "inputs": {"m": "${{parent.jobs.train.outputs.m}}"}},
            "nested": {"type": "pipeline", "component": {"type": "pipeline", "name": "inner", "jobs": {
                "again": {"component": {**shared}},
                "sweep": {"type": "sweep", "trial": component(project, "score"),
                          "inputs": {"d": {"type": "uri_folder", "path": str(project / "data")}}},
            }}},
        },
    }
    sent = upload_local_paths(client, body)
    jobs = sent["jobs"]
    assert tree(api, sent["inputs"]["raw"]["path"], tmp_path / "t") == {"rows.csv": "a\n1\n"}
    assert sent["inputs"]["n"] == 3
    inline = jobs["inline"]
    assert tree(api, inline["code"], tmp_path / "t") == {"score.py": "print('score')\n"}
    assert inline["environment"]["conda_file"]["dependencies"][0] == "python=3.10"  # the content, not the path
    assert tree(api, inline["inputs"]["f"]["path"], tmp_path / "t") == {"data.csv": "b\n2\n"}
    assert inline["inputs"]["bound"] == "${{parent.inputs.raw}}"
    assert inline["inputs"]["s"] == {"type": "string", "path": "./not-a-file"}  # a literal input is never a file
    train = jobs["train"]["component"]
    # Azure's layout: the code folder's files (its .amlignore kept), each include at the top by basename.
    assert tree(api, train["code"], tmp_path / "t") == {
        ".amlignore": "*.tmp\n", "train.py": "print('train')\n", "common/utils.py": "def util(): ...\n",
        "common/sub/more.py": "MORE = 1\n", "LICENSE.txt": "MIT\n"}
    assert "additional_includes" not in train  # they are in the snapshot now
    assert isinstance(train["environment"]["conda_file"], dict)
    assert jobs["registered"]["component"] == "azureml:scorer@latest"
    inner = jobs["nested"]["component"]["jobs"]
    assert inner["again"]["component"]["code"] == train["code"]
    assert tree(api, inner["sweep"]["trial"]["code"], tmp_path / "t") == {"score.py": "print('score')\n"}
    assert inner["sweep"]["inputs"]["d"]["path"] == sent["inputs"]["raw"]["path"]
    # Each tree once: raw data, score code, data.csv, train code with its includes.
    assert client.snapshots == 4


def test_a_sweep_uploads_its_trials_code_and_its_shared_inputs(api, client, project, tmp_path):
    sweep = {"type": "sweep", "name": "s1", "compute": "local",
             "trial": {"command": "python train.py --lr ${{search_space.lr}}", "code": str(project / "train"),
                       "environment": {"image": "python:3.10", "conda_file": str(project / "conda.yml")}},
             "inputs": {"data": {"type": "uri_folder", "path": str(project / "data")}},
             "search_space": {"lr": {"type": "choice", "values": [0.1, 0.01]}},
             "objective": {"goal": "maximize", "primary_metric": "acc"}}
    sent = submission_body(client, _Dumped(sweep), None)
    assert tree(api, sent["trial"]["code"], tmp_path / "t") == {".amlignore": "*.tmp\n", "train.py": "print('train')\n"}
    assert sent["trial"]["environment"]["conda_file"]["name"] == "c"
    assert tree(api, sent["inputs"]["data"]["path"], tmp_path / "t") == {"rows.csv": "a\n1\n"}
    assert sent["name"] == "s1" and sent["experiment_name"]
    assert sent["search_space"] == sweep["search_space"]


def test_a_command_job_is_sent_as_before(api, client, project, tmp_path):
    from cible.core.specs.azureml.loader import load_spec_dict

    job = load_spec_dict({"command": "python train.py ${{inputs.d}}", "code": "train", "$schema": "x",
                          "inputs": {"d": {"type": "uri_file", "path": "data.csv"}},
                          "environment": {"conda_file": "conda.yml"}}, "job", base_dir=project).entity
    sent = submission_body(client, job, "given-name")
    assert sent["name"] == "given-name" and "schema_" not in sent and "$schema" not in sent
    assert tree(api, sent["code"], tmp_path / "t") == {".amlignore": "*.tmp\n", "train.py": "print('train')\n"}
    assert sent["inputs"]["d"]["path"].startswith(SNAPSHOT) and sent["inputs"]["d"]["path"].endswith("/data.csv")
    assert sent["environment"]["conda_file"]["dependencies"][1] == {"pip": ["six"]}


def test_a_component_with_includes_and_no_code_is_its_includes(api, client, project, tmp_path):
    body = component_body(client, {"name": "c", "type": "command", "command": "python utils.py",
                                   "additional_includes": [str(project / "common")]})
    assert tree(api, body["code"], tmp_path / "t") == {"common/utils.py": "def util(): ...\n",
                                                       "common/sub/more.py": "MORE = 1\n"}


def test_a_folder_named_as_a_zip_include_is_zipped_the_same_bytes_each_time(api, client, project, tmp_path):
    first = component_body(client, component(project, "train", additional_includes=[str(project / "common.zip")]))
    again = component_body(client, component(project, "train", additional_includes=[str(project / "common.zip")]))
    assert first["code"] == again["code"]  # content-addressed: a zip made twice is one snapshot
    materialise_snapshot(api.app.state.assets.paths.blob_root, first["code"][len(SNAPSHOT):], tmp_path / "z")
    with zipfile.ZipFile(tmp_path / "z" / "common.zip") as archive:
        assert sorted(archive.namelist()) == ["common/sub/more.py", "common/utils.py"]


@pytest.mark.parametrize(("fields", "needle"), [
    ({"additional_includes": ["{project}/train/train.py"]}, "additional_includes[0]: "),
    ({"additional_includes": ["{project}/missing"]}, "additional_includes[0]: '"),
    ({"additional_includes": [{"type": "artifact", "feed": "f"}]}, "artifact"),
    ({"environment": {"conda_file": "{project}/nope.yml"}}, "jobs.a.component.environment.conda_file: "),
    ({"code": "cible://snapshots/" + "0" * 64, "additional_includes": ["{project}/common"]}, "local path"),
])
def test_what_cannot_be_uploaded_is_refused_naming_its_field(client, project, fields, needle):  # noqa: ANN001
    fields = {k: ([i.format(project=project) if isinstance(i, str) else i for i in v] if isinstance(v, list) else
                  {kk: vv.format(project=project) for kk, vv in v.items()} if isinstance(v, dict) else v)
              for k, v in fields.items()}
    body = {"type": "pipeline", "jobs": {"a": {"component": component(project, "train", **fields)}}}
    with pytest.raises(InvalidSpecError) as caught:
        upload_local_paths(client, body)
    assert needle in caught.value.message
    assert caught.value.message.startswith("jobs.a.component.")


class _Dumped:
    """A loaded model as the SDK receives one: anything with model_dump."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def model_dump(self, **_: object) -> dict:
        import copy

        return copy.deepcopy(self.data)


def test_a_pipeline_yaml_is_sent_with_its_component_files_inlined_and_uploaded(api, client, project, tmp_path,
                                                                              monkeypatch):
    from cible.core.specs.azureml.loader import load_spec

    (project / "components").mkdir()
    (project / "components" / "train.yml").write_text(
        "name: train\ntype: command\ncode: ../train\ncommand: python train.py ${{inputs.d}}\n"
        "environment: {image: 'python:3.10', conda_file: ../conda.yml}\ninputs: {d: {type: uri_folder}}\n"
        "additional_includes: [../common]\n")
    pipeline = {"type": "pipeline", "settings": {"default_compute": "azureml:serverless"},
                "inputs": {"raw": {"type": "uri_folder", "path": "./data"}},
                "jobs": {"a": {"component": "./components/train.yml", "inputs": {"d": "${{parent.inputs.raw}}"}},
                         "b": {"component": "file:components/train.yml", "inputs": {"d": "${{parent.inputs.raw}}"}}}}
    (project / "pipe.yml").write_text(__import__("json").dumps(pipeline))
    from_file = submission_body(client, load_spec(project / "pipe.yml", "job").entity, "p-file")
    monkeypatch.chdir(project)  # a dict given to the SDK: its paths are the working folder's
    from_dict = submission_body(client, pipeline, "p-dict")
    for sent in (from_file, from_dict):
        a, b = sent["jobs"]["a"]["component"], sent["jobs"]["b"]["component"]
        assert a["code"] == b["code"] and "additional_includes" not in a
        assert set(tree(api, a["code"], tmp_path / "t")) == {".amlignore", "train.py", "common/utils.py",
                                                             "common/sub/more.py"}
        assert isinstance(a["environment"]["conda_file"], dict)
        assert tree(api, sent["inputs"]["raw"]["path"], tmp_path / "t") == {"rows.csv": "a\n1\n"}
    assert from_file["jobs"] == from_dict["jobs"]
    assert client.snapshots == 4  # per submission, each tree once: the code with its includes, the data
