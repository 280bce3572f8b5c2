"""Online endpoints end to end through the SDK, against a real server process: replicas are real
scoring-server processes on nodes of the local provider (serverless, one per replica), requests go
through the real gateway on loopback.

One workspace and server for the module; the endpoint `iris` and its deployments are shared by
the tests in order (as a user would build them up), each test asserting its own step.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_support import served_workspace, wait_until

from cible import MLClient
from cible.core.errors import CibleError

DEPLOY_TIMEOUT_S = 180
SCORE_PY = textwrap.dedent(
    """
    import json, os, joblib
    import numpy as np

    model = None

    def init():
        global model
        model = joblib.load(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.joblib"))
        print("init done: model loaded")

    def run(raw_data):
        data = np.asarray(json.loads(raw_data)["data"])
        return {"predictions": model.predict(data).tolist(), "who": os.environ.get("WHO", "?")}
    """
)
BROKEN_PY = textwrap.dedent(
    """
    def init():
        raise RuntimeError("the model file is missing (on purpose)")

    def run(raw_data):
        return raw_data
    """
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with served_workspace(tmp_path_factory.mktemp("ws")) as home:
        yield home


@pytest.fixture(scope="module")
def ml(home: Path) -> Any:
    client = MLClient(home=home)
    yield client
    client.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("project")
    x, y = load_iris(return_X_y=True)
    (root / "model").mkdir()
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), root / "model" / "model.joblib")
    (root / "src").mkdir()
    (root / "src" / "score.py").write_text(SCORE_PY)
    (root / "broken").mkdir()
    (root / "broken" / "score.py").write_text(BROKEN_PY)
    (root / "request.json").write_text(json.dumps({"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}))
    return root


def deployment(project: Path, name: str, code: str = "src", **extra: Any) -> dict[str, Any]:
    spec = {"name": name, "endpoint_name": "iris", "model": {"path": str(project / "model")},
            "code_configuration": {"code": str(project / code), "scoring_script": "score.py"},
            # An Azure ML base image: run on this machine's Python (which has scikit-learn), nothing to build.
            "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"},
            "instance_type": "Standard_DS1_v2", "instance_count": 1,
            "environment_variables": {"WHO": name},
            "readiness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 30},
            "liveness_probe": {"initial_delay": 1, "period": 1}}
    return {**spec, **extra}


def score(ml: MLClient, body: bytes, headers: dict[str, str] | None = None, key: str | None = "primary") -> httpx.Response:
    endpoint = ml.online_endpoints.get("iris")
    auth = {}
    if key:
        keys = ml.online_endpoints.get_keys("iris")
        auth = {"Authorization": f"Bearer {keys['primaryKey' if key == 'primary' else 'secondaryKey']}"}
    return httpx.post(endpoint["scoring_uri"], content=body, timeout=30,
                      headers={"Content-Type": "application/json", **auth, **(headers or {})})


def test_an_endpoint_with_a_blue_deployment_answers_the_models_predictions(ml: MLClient, project: Path):
    ml.online_endpoints.begin_create_or_update({"name": "iris", "auth_mode": "key"}).result()
    ml.online_deployments.begin_create_or_update(deployment(project, "blue"), all_traffic=True).result(
        timeout=DEPLOY_TIMEOUT_S)
    endpoint = ml.online_endpoints.get("iris")
    assert endpoint["traffic"] == {"blue": 100}
    assert endpoint["scoring_uri"].startswith("http://127.0.0.1:")
    answer = score(ml, (project / "request.json").read_bytes())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": [0, 2], "who": "blue"}
    assert answer.headers["azureml-model-deployment"] == "blue"


def test_no_key_or_a_wrong_key_is_refused_and_a_regenerated_key_replaces_the_old(ml: MLClient, project: Path):
    body = (project / "request.json").read_bytes()
    assert score(ml, body, key=None).status_code == 401
    assert score(ml, body, headers={"Authorization": "Bearer not-a-key"}, key=None).status_code == 401
    old = ml.online_endpoints.get_keys("iris")["primaryKey"]
    ml.online_endpoints.begin_regenerate_keys("iris", key_type="primary").result()
    new = ml.online_endpoints.get_keys("iris")["primaryKey"]
    assert new != old
    refused = wait_until(lambda: score(ml, body, headers={"Authorization": f"Bearer {old}"}, key=None)
                         .status_code == 401, timeout=10)
    assert refused
    assert score(ml, body).status_code == 200


def test_a_green_deployment_shares_traffic_and_the_header_pins_one(ml: MLClient, project: Path):
    ml.online_deployments.begin_create_or_update(deployment(project, "green")).result(timeout=DEPLOY_TIMEOUT_S)
    body = (project / "request.json").read_bytes()
    pinned = score(ml, body, headers={"azureml-model-deployment": "green"})
    assert pinned.status_code == 200 and pinned.json()["who"] == "green"
    ml.online_endpoints.begin_update("iris", traffic={"blue": 50, "green": 50}).result()
    wait_until(lambda: ml.online_endpoints.get("iris")["traffic"] == {"blue": 50, "green": 50}, timeout=10)
    seen = {score(ml, body).json()["who"] for _ in range(40)}
    assert seen == {"blue", "green"}
    assert score(ml, body, headers={"azureml-model-deployment": "nope"}).status_code == 404


def test_endpoint_show_has_per_deployment_metrics(ml: MLClient):
    metrics = ml.online_endpoints.get("iris")["metrics"]
    assert metrics["blue"]["requests_per_s"] > 0
    assert metrics["blue"]["p50_ms"] > 0


def test_a_broken_init_fails_the_deployment_with_its_traceback_in_the_logs(ml: MLClient, project: Path):
    with pytest.raises(CibleError) as failed:
        ml.online_deployments.begin_create_or_update(deployment(project, "broken", code="broken")).result(
            timeout=DEPLOY_TIMEOUT_S)
    assert "init()" in str(failed.value)
    logs = ml.online_deployments.get_logs("broken", "iris", lines=200)
    assert "the model file is missing (on purpose)" in logs
    assert "Traceback" in logs


def test_a_local_endpoint_serves_the_folder_in_place_without_auth_and_reloads_an_edited_script(
        ml: MLClient, project: Path, tmp_path: Path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(SCORE_PY)
    ml.online_endpoints.begin_create_or_update({"name": "iris"}, local=True).result()
    spec = deployment(project, "dev")
    spec["code_configuration"]["code"] = str(code)
    ml.online_deployments.begin_create_or_update(spec, local=True).result(timeout=DEPLOY_TIMEOUT_S)
    endpoint = ml.online_endpoints.get("iris", local=True)
    assert endpoint["traffic"] == {"dev": 100}
    body = (project / "request.json").read_bytes()

    def who() -> str:
        answer = httpx.post(endpoint["scoring_uri"], content=body, timeout=30)  # no credentials: local
        return answer.json()["who"] if answer.status_code == 200 else f"status {answer.status_code}"

    assert who() == "dev"
    (code / "score.py").write_text(SCORE_PY.replace('os.environ.get("WHO", "?")', '"edited"'))
    assert wait_until(lambda: who() == "edited", timeout=30)
    ml.online_endpoints.begin_delete("iris", local=True).result()
    assert "iris" not in [e["name"] for e in ml.online_endpoints.list(local=True)]


def test_deleting_the_endpoint_stops_its_replicas(ml: MLClient, home: Path):
    replicas = [r["name"] for d in ml.online_deployments.list("iris") for r in d["replicas"]]
    assert replicas
    ml.online_endpoints.begin_delete("iris").result()
    assert "iris" not in [e["name"] for e in ml.online_endpoints.list()]
    for name in replicas:
        assert wait_until(lambda n=name: ml.jobs.get(n)["status"] in ("Canceled", "Failed", "Completed"),
                          timeout=60)
    assert os.path.isdir(home)
