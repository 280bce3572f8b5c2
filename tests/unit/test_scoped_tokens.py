"""Scoped tokens: what a job's run token and a node's token may reach, and MLflow's run policy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cible.server.app import create_app
from cible.server.settings import ServerSettings
from cible.server.tokens import Scope, Tokens
from cible.server.tracking_policy import JOB_TAG, decide
from cible.testing import FrozenClock

TOKEN = "workspace-token"
RUN_A = "a" * 32
RUN_B = "b" * 32


# -- tokens -------------------------------------------------------------------------------------
def test_scoped_tokens_carry_their_scope_and_cannot_be_forged():
    tokens = Tokens(TOKEN)
    assert tokens.scope_of(TOKEN.encode()) == Scope("workspace")
    assert tokens.scope_of(tokens.job("khaki_boot_1").encode()) == Scope("job", "khaki_boot_1")
    assert tokens.scope_of(tokens.node("node-1").encode()) == Scope("node", "node-1")
    job = tokens.job("a")
    kind, name, mac = job.split(".")
    forged_name = tokens.job("b").split(".")[1]
    for bad in (f"{kind}.{forged_name}.{mac}", f"cible-node.{name}.{mac}", job + "x", "", "a.b.c", "cible-job..",
                "\xff".encode("latin-1").decode("latin-1")):
        assert tokens.scope_of(bad.encode("latin-1")) is None, bad
    assert Tokens("another workspace").scope_of(job.encode()) is None  # a new workspace token revokes them all
    assert tokens.job("x") == Tokens(TOKEN).job("x")  # derived again after a restart: nothing stored


def test_job_and_node_tokens_do_not_contain_the_workspace_token():
    tokens = Tokens(TOKEN)
    assert TOKEN not in tokens.job("j") and TOKEN not in tokens.node("n")


# -- the API under each token ----------------------------------------------------------------------
@pytest.fixture
def app_client(tmp_path: Path):
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                    tracking=False), TOKEN, FrozenClock(), reconcile=False)
    try:
        yield TestClient(app, raise_server_exceptions=False), Tokens(TOKEN)
    finally:
        app.state.store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_job_token_cannot_use_the_workspace_api(app_client):
    client, tokens = app_client
    job = auth(tokens.job("j1"))
    for method, path in (("GET", "/api/v1/jobs"), ("GET", "/api/v1/jobs/j1"), ("PUT", "/api/v1/computes/c1"),
                         ("GET", "/api/v1/computes"), ("POST", "/api/v1/agent/nodes/n1/heartbeat")):
        response = client.request(method, path, headers=job, json={})
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "Forbidden" and "run token of job 'j1'" in error["message"]
    assert client.get("/api/v1/jobs", headers=auth(TOKEN)).status_code == 200


def test_a_node_token_reaches_its_own_node_routes_only(app_client):
    client, tokens = app_client
    node = auth(tokens.node("n1"))
    for path in ("/api/v1/jobs", "/api/v1/agent/nodes/n2/heartbeat", "/api/v1/agent/nodes/n1",
                 "/api/v1/agent/nodes/n1x/heartbeat", "/mlflow/api/2.0/mlflow/experiments/search"):
        response = client.post(path, headers=node, json={})
        assert response.status_code == 403, (path, response.text)
        assert "token of node 'n1'" in response.json()["error"]["message"]
    # past the token check: the node is unknown to this workspace, which is the agent service's answer
    response = client.post("/api/v1/agent/nodes/n1/heartbeat", headers=node, json={})
    assert response.status_code == 404, response.text


def test_unknown_tokens_are_401(app_client):
    client, tokens = app_client
    for headers in ({}, auth("nope"), auth(Tokens("other").job("j1")), {"Authorization": TOKEN}):
        assert client.get("/api/v1/jobs", headers=headers).status_code == 401


# -- MLflow: a job writes into its own runs only ---------------------------------------------------
OWNERS = {RUN_A: "job-a", RUN_B: "job-b"}
MODELS = {"m-1": "job-a", "m-2": "job-b"}


def decide_for(job: str, method: str, path: str, body: dict | None = None):
    async def run_owner(run_id: str) -> str | None:
        return OWNERS.get(run_id)

    async def model_owner(model_id: str) -> str | None:
        return MODELS.get(model_id)

    raw = json.dumps(body).encode() if body is not None else None
    return asyncio.run(decide(job, method, path, raw, run_owner, model_owner))


API = "/api/2.0/mlflow"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", f"{API}/runs/get", None),
    ("GET", f"{API}/experiments/get-by-name", None),
    ("POST", f"{API}/runs/search", {"experiment_ids": ["0"]}),
    ("POST", f"{API}/experiments/create", {"name": "e"}),
    ("POST", f"{API}/runs/log-batch", {"run_id": RUN_A, "metrics": []}),
    ("POST", f"{API}/runs/log-metric", {"run_uuid": RUN_A, "key": "k", "value": 1}),
    ("POST", f"{API}/runs/update", {"run_id": RUN_A, "status": "FINISHED"}),
    ("POST", f"{API}/model-versions/create", {"name": "m", "source": "x", "run_id": RUN_A}),
    ("POST", f"{API}/logged-models", {"experiment_id": "0", "source_run_id": RUN_A}),
    ("PATCH", f"{API}/logged-models/m-1", {"status": "READY"}),
    ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/0/{RUN_A}/artifacts/model.pkl", None),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts/MLmodel", None),
    ("POST", "/ajax-api/2.0/mlflow/runs/log-batch", {"run_id": RUN_A}),
])
def test_a_job_token_may_read_anything_and_write_its_own_runs(method, path, body):
    assert decide_for("job-a", method, path, body).refusal is None


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", f"{API}/runs/log-batch", {"run_id": RUN_B, "metrics": []}),
    ("POST", f"{API}/runs/delete", {"run_id": RUN_B}),
    ("POST", f"{API}/runs/log-metric", {"run_uuid": "c" * 32, "key": "k", "value": 1}),  # a run of no job
    ("POST", f"{API}/experiments/delete", {"experiment_id": "0"}),
    ("POST", f"{API}/registered-models/rename", {"name": "m", "new_name": "n"}),
    ("POST", f"{API}/logged-models", {"experiment_id": "0"}),
    ("PATCH", f"{API}/logged-models/m-2", {"status": "READY"}),
    ("POST", f"{API}/runs/log-batch", None),
    ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/0/{RUN_B}/artifacts/model.pkl", None),
    ("DELETE", f"/api/2.0/mlflow-artifacts/artifacts/0/{RUN_B}/artifacts/model.pkl", None),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/models/m-2/artifacts/MLmodel", None),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/somewhere-else.txt", None),
    ("POST", "/graphql", {"query": "mutation"}),
])
def test_a_job_token_cannot_write_another_jobs_runs(method, path, body):
    decision = decide_for("job-a", method, path, body)
    assert decision.refusal is not None and "job 'job-a'" in decision.refusal


def test_a_run_a_job_creates_is_tagged_as_its_own_whatever_it_says():
    body = {"experiment_id": "0", "tags": [{"key": JOB_TAG, "value": "job-b"}, {"key": "other", "value": "1"}]}
    decision = decide_for("job-a", "POST", f"{API}/runs/create", body)
    assert decision.refusal is None
    tags = json.loads(decision.body)["tags"]
    assert {"key": JOB_TAG, "value": "job-a"} in tags and {"key": "other", "value": "1"} in tags
    assert [t for t in tags if t["key"] == JOB_TAG] == [{"key": JOB_TAG, "value": "job-a"}]
