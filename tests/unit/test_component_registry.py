"""Registered components (`/api/v1/components`, client.components): immutable versions like every
asset, their code an uploaded snapshot, their environment and the components they name checked at
registration; `component_spec` is what pipelines naming `azureml:<name>:<version>` get."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from api_support import api_client, error_of, upload
from fastapi.testclient import TestClient

from cible.client.http import API, WorkspaceClient
from cible.core.errors import ConflictError
from cible.launch.staging import materialise_snapshot

SKLEARN = "azureml:AzureML-sklearn-1.5@latest"


@pytest.fixture
def api(migrated_db_url: str, tmp_path: Path):  # noqa: ANN201
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def command_component(code: str | None, **fields) -> dict:  # noqa: ANN003
    body = {"type": "command", "command": "python train.py --lr ${{inputs.lr}} --out ${{outputs.model}}",
            "environment": SKLEARN, "inputs": {"lr": {"type": "number", "default": 0.1}},
            "outputs": {"model": {"type": "uri_folder"}}, **fields}
    return body if code is None else {**body, "code": code}


def test_a_version_is_immutable_and_registering_it_again_is_harmless(api: TestClient):
    code = upload(api, {"train.py": b"print('hi')\n"})
    created = api.put("/api/v1/components/train/versions/1", json=command_component(code))
    assert created.status_code == 200, created.text
    assert created.json()["code"] == code and created.json()["version"] == "1"
    # YAML writes `version: 1`; the same content with the version as a number is the same version.
    again = api.put("/api/v1/components/train/versions/1", json={**command_component(code), "version": 1})
    assert again.status_code == 200, again.text
    other = api.put("/api/v1/components/train/versions/1", json=command_component(code, command="python other.py"))
    assert other.status_code == 409
    message = error_of(other)["message"]
    assert "component 'train' version 1" in message and "immutable" in message
    # Versions are text: `01` is another version than `1`.
    assert api.put("/api/v1/components/train/versions/01", json=command_component(code)).status_code == 200
    assert [c["version"] for c in api.get("/api/v1/components/train/versions").json()["value"]] == ["01", "1"]
    assert api.get("/api/v1/components/train/versions/latest").json()["version"] == "01"
    nxt = api.post("/api/v1/components/train/versions", json=command_component(code))
    assert nxt.json()["version"] == "2"  # the next number after the numeric ones
    listed = api.get("/api/v1/components").json()["value"]
    assert [(c["name"], c["version"], c["type"]) for c in listed] == [("train", "2", "command")]


@pytest.mark.parametrize(("body", "status", "needle"), [
    (command_component("/home/me/src"), 400, "code: '/home/me/src' is a local path; upload it first"),
    (command_component("cible://snapshots/" + "a" * 64), 404, "code: snapshot " + "a" * 64 + " was not uploaded"),
    (command_component(None, environment="azureml:ghost-env:3"), 404, "environment: environment 'ghost-env'"),
    (command_component(None, environment={"conda_file": {"dependencies": [5]}}), 422, "environment"),
])
def test_what_a_job_would_need_is_checked_at_registration(api: TestClient, body: dict, status: int, needle: str):
    response = api.put("/api/v1/components/c/versions/1", json=body)
    assert response.status_code == status, response.text
    assert needle in error_of(response)["message"]
    assert api.get("/api/v1/components/c/versions/1").status_code == 404  # nothing registered


def test_a_registered_environment_and_inline_conda_are_accepted(api: TestClient):
    env = {"image": "python:3.10", "conda_file": {"dependencies": ["python=3.10", {"pip": ["six"]}]}}
    assert api.put("/api/v1/environments/my-env/versions/1", json=env).status_code == 200
    for version, environment in (("1", "azureml:my-env:1"), ("2", "azureml:my-env@latest"), ("3", env)):
        response = api.put(f"/api/v1/components/c/versions/{version}", json=command_component(None, environment=environment))
        assert response.status_code == 200, response.text


def test_a_pipeline_components_steps_are_checked_as_components(api: TestClient):
    code = upload(api, {"train.py": b"print('hi')\n"})
    assert api.put("/api/v1/components/train/versions/1", json=command_component(code)).status_code == 200

    def pipeline(**jobs) -> dict:  # noqa: ANN003
        return {"type": "pipeline", "inputs": {"lr": {"type": "number", "default": 0.5}},
                "jobs": {"registered": {"component": "azureml:train:1", "inputs": {"lr": "${{parent.inputs.lr}}"}},
                         **jobs}}

    ok = api.put("/api/v1/components/pipe/versions/1",
                 json=pipeline(inlined={"component": command_component(code)}))
    assert ok.status_code == 200, ok.text
    for jobs, status, needle in (
        ({"ghost": {"component": "azureml:ghost@latest"}}, 404, "jobs.ghost.component: component 'ghost'"),
        ({"inlined": {"component": command_component("/local/src")}}, 400, "jobs.inlined.component.code: "),
    ):
        refused = api.put("/api/v1/components/pipe/versions/2", json=pipeline(**jobs))
        assert refused.status_code == status, refused.text
        assert needle in error_of(refused)["message"]


def test_component_spec_is_the_registered_spec_for_pipelines(api: TestClient):
    from cible.core.specs.azureml.loader import load_spec_dict

    code = upload(api, {"train.py": b"print('hi')\n"})
    api.put("/api/v1/components/train/versions/3", json=command_component(code, display_name="Train"))
    spec = api.app.state.assets.component_spec("train", "latest")
    assert spec["name"] == "train" and spec["version"] == "3" and spec["code"] == code
    assert "is_archived" not in spec and "creation_context" not in spec
    assert api.app.state.assets.component_spec("train", "3") == spec
    assert api.app.state.assets.get("components", "train", "latest")["display_name"] == "Train"
    assert load_spec_dict(spec, "component").entity.name == "train"  # it loads as it was registered


def sdk_client(api: TestClient) -> WorkspaceClient:
    client = WorkspaceClient("http://testserver", "t")
    client._http.close()
    client._http = TestClient(api.app, base_url=f"http://testserver{API}", headers=dict(api.headers))
    return client


def test_the_sdk_registers_a_yaml_with_its_code_and_additional_includes(api: TestClient, tmp_path: Path):
    from cible.sdk.components import ComponentOperations

    project = tmp_path / "project"
    for rel, text in {"components/train/src/train.py": "print('train')\n", "common/utils.py": "X = 1\n"}.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    spec = project / "components" / "train" / "train.yml"
    spec.write_text(textwrap.dedent(f"""\
        $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
        name: train_model
        type: command
        version: 1
        code: ./src
        environment: {SKLEARN}
        command: python train.py
        additional_includes:
          - ../../common
        """))
    components = ComponentOperations(sdk_client(api))
    created = components.create_or_update(str(spec))
    assert (created.name, created.version) == ("train_model", "1")
    staged = materialise_snapshot(api.app.state.assets.paths.blob_root, created.code.removeprefix("cible://snapshots/"),
                                  tmp_path / "staged")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "common/utils.py", "train.py"]
    assert "additional_includes" not in created
    assert components.create_or_update(spec).code == created.code  # the same again: harmless
    assert components.create_or_update(spec, version="01").version == "01"  # text, as given
    assert components.get("train_model", label="latest").version == "01"
    assert components.get("train_model", "1").code == created.code
    assert [c.version for c in components.list("train_model")] == ["01", "1"]
    assert [c.name for c in components.list()] == ["train_model"]
    (project / "common" / "utils.py").write_text("X = 2\n")
    with pytest.raises(ConflictError, match="immutable"):
        components.create_or_update(spec)  # version 1 again, with other code
    components.archive("train_model", "01")
    assert components.get("train_model").version == "1"
