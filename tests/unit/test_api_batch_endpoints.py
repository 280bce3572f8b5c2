"""/api/v1/batch-endpoints in-process: what the API stores and refuses, and the job an invocation makes
(its runner is tested on its own). Bad input is a 4xx naming its field, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import api_client, error_of, upload
from fastapi.testclient import TestClient

from cible.server.store.rows import JobRow

ROOT = "/api/v1/batch-endpoints"
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 4}
ENV = {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"}
DATASTORE_INPUT = "azureml://datastores/workspaceblobstore/paths/heart/"


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        assert client.put("/api/v1/computes/batch-cluster", json=CLUSTER).status_code == 200
        assert client.put(f"{ROOT}/heart-batch", json={"spec": {"description": "heart"}}).status_code == 200
        yield client


@pytest.fixture
def custom(api: TestClient) -> dict[str, Any]:
    """A scoring-script deployment of an uploaded model, as the SDK sends it."""
    code = upload(api, {"batch/score.py": b"def init():\n    pass\n\ndef run(mini_batch):\n    return mini_batch\n"})
    model = upload(api, {"heart-model/model.pkl": b"pickle"})
    return {"model": {"path": f"{model}/heart-model"}, "code_configuration": {"code": code,
                                                                              "scoring_script": "batch/score.py"},
            "environment": ENV, "compute": "azureml:batch-cluster", "resources": {"instance_count": 2},
            "settings": {"max_concurrency_per_instance": 3, "mini_batch_size": 5,
                         "retry_settings": {"max_retries": 2, "timeout": 60}, "error_threshold": 4,
                         "environment_variables": {"LABEL": "x"}}}


def _deploy(api: TestClient, spec: dict[str, Any], name: str = "blue", **extra: Any) -> Any:
    return api.put(f"{ROOT}/heart-batch/deployments/{name}", json={"spec": spec, **extra})


def _said(error: dict[str, Any]) -> str:
    """An error's message and the field(s) it names (a spec's problems are a list, each with its field)."""
    details = error["details"]
    fields = [p.get("field") or "" for p in details] if isinstance(details, list) else [details.get("field") or ""]
    return " ".join(fields) + " " + error["message"]


def _job_row(api: TestClient, name: str) -> JobRow:
    with api.app.state.store.session() as session:
        row = session.get(JobRow, name)
        session.expunge(row)
        return row


# ---- endpoints and deployments ----------------------------------------------------------------


def test_an_endpoint_is_created_once_shown_listed_updated_and_deleted(api: TestClient) -> None:
    shown = api.get(f"{ROOT}/heart-batch").json()
    assert shown["provisioning_state"] == "Succeeded" and shown["auth_mode"] == "aad_token"
    assert shown["defaults"] == {"deployment_name": None} and shown["deployments"] == []
    assert shown["scoring_uri"].endswith(f"{ROOT}/heart-batch:invoke")
    again = api.put(f"{ROOT}/heart-batch", json={"spec": {}})
    assert again.status_code == 409 and error_of(again)["details"]["field"] == "name"
    updated = api.patch(f"{ROOT}/heart-batch", json={"set": ["description=scored in batches"]})
    assert updated.status_code == 200 and updated.json()["description"] == "scored in batches"
    assert [e["name"] for e in api.get(ROOT).json()["value"]] == ["heart-batch"]
    assert api.delete(f"{ROOT}/heart-batch").json()["deleted"] is True
    assert api.get(f"{ROOT}/heart-batch").status_code == 404


@pytest.mark.parametrize(("body", "field"), [
    ({"spec": {"auth_mode": "key"}}, "auth_mode"),
    ({"spec": {"defaults": {"deployment_name": "nope"}}}, "defaults.deployment_name"),
    ({"spec": {"name": "other-name"}}, "name"),
    ({"spec": "x"}, "spec"),
])
def test_a_bad_endpoint_is_refused_naming_its_field(api: TestClient, body: dict, field: str) -> None:
    answer = api.put(f"{ROOT}/new-batch", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    error = error_of(answer)
    assert field in _said(error), error


def test_a_deployment_is_stored_with_azures_defaults_and_is_not_the_default_by_itself(
        api: TestClient, custom: dict) -> None:
    created = _deploy(api, custom)
    assert created.status_code == 200, created.text
    deployment = created.json()
    assert deployment["provisioning_state"] == "Succeeded" and deployment["type"] == "model"
    assert deployment["settings"]["output_action"] == "append_row" and deployment["is_default"] is False
    assert api.get(f"{ROOT}/heart-batch").json()["defaults"]["deployment_name"] is None  # as Azure
    assert _deploy(api, custom).status_code == 409
    assert [d["name"] for d in api.get(f"{ROOT}/heart-batch/deployments").json()["value"]] == ["blue"]
    # --set-default; then an update with --set keeps it the default
    green = _deploy(api, custom, "green", set_default=True)
    assert green.status_code == 200 and green.json()["is_default"] is True
    assert api.get(f"{ROOT}/heart-batch").json()["defaults"]["deployment_name"] == "green"
    changed = api.patch(f"{ROOT}/heart-batch/deployments/green", json={"set": ["settings.mini_batch_size=20"]})
    assert changed.status_code == 200 and changed.json()["settings"]["mini_batch_size"] == 20
    assert changed.json()["settings"]["max_concurrency_per_instance"] == 3
    # a legacy deployment's root setting, as Azure's older examples update it
    legacy = api.patch(f"{ROOT}/heart-batch/deployments/green", json={"set": ["mini_batch_size=30"]})
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["settings"]["mini_batch_size"] == 30
    # an endpoint spec that does not mention a default keeps it
    assert api.put(f"{ROOT}/heart-batch?update=true", json={"spec": {"description": "d"}}).json()[
        "defaults"]["deployment_name"] == "green"


def test_the_default_deployment_is_deleted_only_once_another_is_the_default(api: TestClient, custom: dict) -> None:
    assert _deploy(api, custom, "blue", set_default=True).status_code == 200
    assert _deploy(api, custom, "green").status_code == 200
    refused = api.delete(f"{ROOT}/heart-batch/deployments/blue")
    assert refused.status_code == 409 and "defaults.deployment_name=OTHER" in error_of(refused)["message"]
    assert api.patch(f"{ROOT}/heart-batch", json={"set": ["defaults.deployment_name=green"]}).status_code == 200
    assert api.delete(f"{ROOT}/heart-batch/deployments/blue").status_code == 200
    assert api.get(f"{ROOT}/heart-batch/deployments/blue").status_code == 404
    # deleting the endpoint deletes its deployments
    assert api.delete(f"{ROOT}/heart-batch").json()["deployments"] == ["green"]
    assert api.put(f"{ROOT}/heart-batch", json={"spec": {}}).status_code == 200
    assert api.get(f"{ROOT}/heart-batch/deployments").json()["value"] == []


@pytest.mark.parametrize(("change", "field"), [
    ({"compute": "azureml:no-such-cluster"}, "compute"),
    ({"code_configuration": None}, "code_configuration"),  # not an MLflow model: needs a script
    ({"settings": {"mini_batch_size": 0}}, "settings.mini_batch_size"),
    ({"resources": {"instance_count": 9}}, "resources.instance_count"),  # more nodes than the cluster has
    ({"code_configuration": {"code": "cible://snapshots/" + "0" * 64, "scoring_script": "s.py"}},
     "code_configuration.code"),
    ({"model": "azureml:no-such-model:1"}, "model"),
])
def test_a_deployment_that_could_never_run_is_refused_naming_its_field(
        api: TestClient, custom: dict, change: dict, field: str) -> None:
    spec = {k: v for k, v in {**custom, **change}.items() if v is not None}
    answer = _deploy(api, spec)
    assert 400 <= answer.status_code < 500, answer.text
    error = error_of(answer)
    assert field in _said(error), error
    assert api.get(f"{ROOT}/heart-batch/deployments").json()["value"] == []


def test_a_deployment_of_an_endpoint_that_does_not_exist_is_a_404(api: TestClient, custom: dict) -> None:
    answer = api.put(f"{ROOT}/nope-batch/deployments/blue", json={"spec": custom})
    assert answer.status_code == 404 and "nope-batch" in error_of(answer)["message"]


# ---- invoke -----------------------------------------------------------------------------------


def test_invoke_without_a_deployment_or_a_default_says_how_to_name_one(api: TestClient, custom: dict) -> None:
    assert _deploy(api, custom).status_code == 200
    answer = api.post(f"{ROOT}/heart-batch:invoke", json={"input": DATASTORE_INPUT})
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["details"]["field"] == "deployment_name"
    assert "--deployment-name" in error["message"] and "--set defaults.deployment_name=D" in error["message"]


def test_invoke_makes_a_batch_job_with_the_contracts_plan(api: TestClient, custom: dict) -> None:
    assert _deploy(api, custom, set_default=True).status_code == 200
    answer = api.post(f"{ROOT}/heart-batch:invoke", json={"input": DATASTORE_INPUT})
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["type"] == "batch" and job["status"] == "Queued"
    assert job["display_name"] == "heart-batch/blue" and job["experiment_name"] == "heart-batch"
    assert job["compute"] == "azureml:batch-cluster" and job["resources"]["instance_count"] == 2
    assert job["command"] == ("python -m cible.serving.batch --input ${{inputs.input_data}} --output "
                              "${{outputs.score}} --model-path ${{inputs.model}} --model-name heart-model "
                              "--entry-script score.py --app-root batch")
    assert job["inputs"]["input_data"] == {"type": "uri_folder", "path": DATASTORE_INPUT}
    assert job["inputs"]["model"] == {"type": "custom_model", "path": custom["model"]["path"], "mode": "ro_mount"}
    assert job["outputs"] == {"score": {"type": "uri_folder"}}
    assert job["code"] == custom["code_configuration"]["code"] and job["environment_variables"] == {"LABEL": "x"}
    row = _job_row(api, job["name"])
    assert row.job_type == "batch" and row.batch_of == "heart-batch/blue"
    assert row.run.plan["batch"] == {
        "endpoint": "heart-batch", "deployment": "blue", "mini_batch_size": 5, "max_concurrency_per_instance": 3,
        "output_action": "append_row", "output_file_name": "predictions.csv", "max_retries": 2, "timeout": 60,
        "error_threshold": 4, "logging_level": "info", "input": "input_data", "output": "score", "mlflow": False}
    # listed as the endpoint's and the deployment's, and among jobs
    assert [j["name"] for j in api.get(f"{ROOT}/heart-batch/jobs").json()["value"]] == [job["name"]]
    assert [j["name"] for j in api.get(f"{ROOT}/heart-batch/deployments/blue/jobs").json()["value"]] == [job["name"]]
    assert job["name"] in [j["name"] for j in api.get("/api/v1/jobs").json()["value"]]


def test_invoke_overrides_apply_to_its_job_only(api: TestClient, custom: dict) -> None:
    assert _deploy(api, custom).status_code == 200
    answer = api.post(f"{ROOT}/heart-batch:invoke", json={
        "input": DATASTORE_INPUT + "one.csv", "input_type": "uri_file", "deployment_name": "blue",
        "mini_batch_size": 2, "instance_count": 1, "set": ["output_file_name=scores.csv"], "job_name": "heart-run-1",
        "experiment_name": "heart-scoring", "output_path": "azureml://datastores/workspaceblobstore/paths/out/"})
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["name"] == "heart-run-1" and job["experiment_name"] == "heart-scoring"
    assert job["inputs"]["input_data"]["type"] == "uri_file" and job["resources"]["instance_count"] == 1
    assert job["outputs"]["score"]["path"] == "azureml://datastores/workspaceblobstore/paths/out/"
    block = _job_row(api, "heart-run-1").run.plan["batch"]
    assert (block["mini_batch_size"], block["output_file_name"]) == (2, "scores.csv")
    assert api.get(f"{ROOT}/heart-batch/deployments/blue").json()["settings"]["mini_batch_size"] == 5
    again = api.post(f"{ROOT}/heart-batch:invoke", json={"input": DATASTORE_INPUT, "deployment_name": "blue",
                                                         "job_name": "heart-run-1"})
    assert again.status_code == 409 and error_of(again)["details"]["field"] == "job_name"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "input"),
    ({"input": "./local/folder"}, "input"),  # the client uploads it first
    ({"input": DATASTORE_INPUT, "input_type": "mltable"}, "input_type"),
    ({"input": "azureml:no-such-data@latest"}, "input"),
    ({"input": DATASTORE_INPUT, "mini_batch_size": 0}, "mini_batch_size"),
    ({"input": DATASTORE_INPUT, "instance_count": 0}, "instance_count"),
    ({"input": DATASTORE_INPUT, "set": ["nope=1"]}, "set"),
    ({"input": DATASTORE_INPUT, "set": ["output_file_name=a/b.csv"]}, "output_file_name"),
    ({"input": DATASTORE_INPUT, "output_path": "https://example.com/out"}, "output_path"),
    ({"input": "azureml://datastores/no-such-store/paths/x"}, "input"),
    ({"input": DATASTORE_INPUT, "deployment_name": "nope"}, "nope"),
])
def test_a_bad_invocation_is_refused_naming_its_field(api: TestClient, custom: dict, body: dict, field: str) -> None:
    assert _deploy(api, custom, set_default=True).status_code == 200
    answer = api.post(f"{ROOT}/heart-batch:invoke", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    error = error_of(answer)
    assert field in _said(error), error


def test_a_registered_data_asset_says_its_input_type(api: TestClient, custom: dict) -> None:
    uri = upload(api, {"heart.csv": b"age,chol\n63,233\n"})
    assert api.put("/api/v1/data/heart-file/versions/1", json={"type": "uri_file", "path": f"{uri}/heart.csv"}
                   ).status_code in (200, 201)
    assert _deploy(api, custom, set_default=True).status_code == 200
    answer = api.post(f"{ROOT}/heart-batch:invoke", json={"input": "azureml:heart-file@latest"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["inputs"]["input_data"] == {"type": "uri_file", "path": "azureml:heart-file@latest"}


def test_an_mlflow_model_without_a_script_is_scored_in_its_own_environment(api: TestClient) -> None:
    model = upload(api, {"heart-mlflow/MLmodel": b"flavors:\n  python_function: {}\n",
                         "heart-mlflow/conda.yaml": b"dependencies:\n- python=3.10\n- pip:\n  - mlflow\n"})
    spec = {"model": {"path": f"{model}/heart-mlflow", "type": "mlflow_model"}, "compute": "batch-cluster"}
    assert _deploy(api, spec, set_default=True).status_code == 200
    job = api.post(f"{ROOT}/heart-batch:invoke", json={"input": DATASTORE_INPUT}).json()
    assert job["command"].endswith("--model-name heart-mlflow --mlflow-model") and "code" not in job
    assert job["inputs"]["model"]["type"] == "mlflow_model"
    assert job["environment"]["conda_file"]["dependencies"][0] == "python=3.10"  # the model's conda.yaml
    assert _job_row(api, job["name"]).run.plan["batch"]["mlflow"] is True


def test_a_pipeline_deployment_is_stored_but_its_invocation_is_refused_for_now(api: TestClient) -> None:
    spec = {"type": "pipeline", "component": "azureml:hello_batch@latest", "settings": {"default_compute": "batch-cluster"}}
    stored = _deploy(api, spec, set_default=True)
    assert stored.status_code == 200 and stored.json()["component"] == "azureml:hello_batch@latest"
    answer = api.post(f"{ROOT}/heart-batch:invoke", json={"input": DATASTORE_INPUT})
    assert answer.status_code == 400
    assert "pipeline deployment" in error_of(answer)["message"] and "not support" in error_of(answer)["message"]
