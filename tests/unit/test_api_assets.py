"""Versioned assets over the REST API, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations


import pytest
from api_support import upload
from fastapi.testclient import TestClient

from cible.server.app import create_app
from cible.server.settings import ServerSettings

TOKEN = "t"


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=migrated_db_url), TOKEN, reconcile=False)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False)
    yield client
    app.state.store.close()


def test_versions_are_numbered_immutable_and_latest_is_the_newest(api: TestClient):
    uri = upload(api, {"d.csv": b"a\n1\n"})
    first = api.post("/api/v1/data/iris/versions", json={"type": "uri_file", "path": f"{uri}/d.csv"}).json()
    second = api.post("/api/v1/data/iris/versions", json={"type": "uri_file", "path": f"{uri}/d.csv"}).json()
    assert (first["version"], second["version"]) == ("1", "2")
    assert first["path"].startswith("azureml://datastores/workspaceblobstore/paths/LocalUpload/")
    assert api.get("/api/v1/data/iris/versions/latest").json()["version"] == "2"
    same = api.put("/api/v1/data/iris/versions/1", json={"type": "uri_file", "path": f"{uri}/d.csv"})
    assert same.status_code == 200  # registering identical content again is harmless
    other = api.put("/api/v1/data/iris/versions/1", json={"type": "uri_folder", "path": uri})
    assert other.status_code == 409 and "immutable" in other.json()["error"]["message"]
    assert [a["version"] for a in api.get("/api/v1/data/iris/versions").json()["value"]] == ["2", "1"]
    missing = api.get("/api/v1/data/iris/versions/7")
    assert missing.status_code == 404 and "versions: 1, 2" in missing.json()["error"]["message"]
    typo = api.get("/api/v1/data/irsi/versions/1")  # a name no version has: the nearest names, if any
    assert typo.status_code == 404
    assert typo.json()["error"]["message"] == ("data asset 'irsi' does not exist in this workspace; did you mean "
                                               "'iris'? (`cible data list` lists them)")
    unlike = api.get("/api/v1/data/penguins/versions/latest").json()["error"]["message"]
    assert unlike == "data asset 'penguins' does not exist in this workspace (`cible data list` lists them)"
    curated = api.get("/api/v1/environments/AzureML-sklearn-1.5/versions/1")  # Azure's registry has it
    assert curated.status_code == 404
    assert curated.json()["error"]["message"] == ("environment 'AzureML-sklearn-1.5' is curated (Azure's registry, "
                                                  "not this workspace): jobs name it as "
                                                  "azureml:AzureML-sklearn-1.5@latest; `cible environment show -n "
                                                  "AzureML-sklearn-1.5 --registry-name azureml` shows it")


def test_models_keep_the_basename_and_mlflow_models_need_an_mlmodel(api: TestClient):
    uri = upload(api, {"model/model.pkl": b"x"})
    model = api.put("/api/v1/models/m/versions/3", json={"path": f"{uri}/model"}).json()
    assert model["path"].endswith("/model") and model["type"] == "custom_model"
    bad = api.post("/api/v1/models/mm/versions", json={"path": f"{uri}/model", "type": "mlflow_model"})
    assert bad.status_code == 400 and "MLmodel" in bad.json()["error"]["message"]
    good = upload(api, {"model/MLmodel": b"flavors: {}\n", "model/model.pkl": b"x"})
    ok = api.post("/api/v1/models/mm/versions", json={"path": f"{good}/model", "type": "mlflow_model"})
    assert ok.status_code == 200, ok.text


def test_environments_register_with_inline_conda_content(api: TestClient):
    env = {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04",
           "conda_file": {"dependencies": ["python=3.10", {"pip": ["six"]}]}}
    created = api.put("/api/v1/environments/my-env/versions/1", json=env)
    assert created.status_code == 200, created.text
    assert api.get("/api/v1/environments").json()["value"][0]["name"] == "my-env"
    broken = api.put("/api/v1/environments/bad/versions/1", json={"conda_file": {"dependencies": [5]}})
    assert broken.status_code == 422 and "dependencies[0]" in broken.json()["error"]["message"]


@pytest.mark.parametrize(
    ("url", "body", "status", "needle"),
    [
        ("/api/v1/data/x/versions", {"path": "/etc/hosts"}, 400, "upload"),
        ("/api/v1/data/x/versions", {"path": "azureml://datastores/workspaceblobstore/paths/nope"}, 404, "nope"),
        ("/api/v1/models/x/versions", {"path": "azureml://jobs/ghost/outputs/o"}, 404, "ghost"),
        ("/api/v1/data/x/versions", {"pth": "x"}, 422, "pth"),
        ("/api/v1/widgets", None, 422, "kind"),
    ],
)
def test_bad_assets_are_4xx(api: TestClient, url: str, body, status: int, needle: str):  # noqa: ANN001
    response = api.get(url) if body is None else api.post(url, json=body)
    assert response.status_code == status, response.text
    assert needle in response.text


def test_jobs_resolve_asset_inputs_at_submit(api: TestClient):
    uri = upload(api, {"d.csv": b"a\n"})
    api.post("/api/v1/data/iris/versions", json={"type": "uri_file", "path": f"{uri}/d.csv"})
    job = {"command": "cat ${{inputs.d}}", "inputs": {"d": {"type": "uri_file", "path": "azureml:iris@latest"}}}
    assert api.put("/api/v1/jobs/uses-asset", json=job).status_code == 200
    job["inputs"]["d"]["path"] = "azureml:iris:5"
    missing = api.put("/api/v1/jobs/uses-missing", json=job)
    assert missing.status_code == 404 and "inputs.d" in missing.json()["error"]["message"]


def test_mltable_data_needs_its_mltable_file(api: TestClient):
    plain = upload(api, {"t/x.csv": b"a\n"})
    refused = api.post("/api/v1/data/t/versions", json={"type": "mltable", "path": f"{plain}/t"})
    assert refused.status_code == 400 and "MLTable" in refused.json()["error"]["message"]
    table = upload(api, {"t/MLTable": b"paths: [{file: ./x.csv}]\n", "t/x.csv": b"a\n"})
    assert api.post("/api/v1/data/t/versions", json={"type": "mltable", "path": f"{table}/t"}).status_code == 200
