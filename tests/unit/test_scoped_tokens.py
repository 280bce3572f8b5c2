"""Scoped tokens: what a job's run token and a node's token may reach (MLflow's run policy: test_tracking_policy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cible.server.app import create_app
from cible.server.errors import envelope_body
from cible.server.settings import ServerSettings
from cible.server.tokens import Scope, Tokens
from cible.testing import FrozenClock

TOKEN = "workspace-token"


# -- tokens -------------------------------------------------------------------------------------
def test_scoped_tokens_carry_their_scope_and_cannot_be_forged():
    tokens = Tokens(TOKEN)
    assert tokens.scope_of(TOKEN.encode()) == Scope("workspace")
    assert tokens.scope_of(tokens.job("khaki_boot_1", "s1").encode()) == Scope("job", "khaki_boot_1", "s1")
    assert tokens.scope_of(tokens.node("node-1").encode()) == Scope("node", "node-1")
    job = tokens.job("a", "salt")
    kind, name, salt, mac = job.split(".")
    forged_name = tokens.job("b", "salt").split(".")[1]
    for bad in (f"{kind}.{forged_name}.{salt}.{mac}", f"{kind}.{name}.other.{mac}", f"cible-node.{name}.{mac}",
                f"cible-node.{name}.{salt}.{mac}", f"{kind}.{name}.{mac}", job + "x", "", "a.b.c", "cible-job..",
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


def test_the_token_checks_refusals_are_the_envelope_routes_answer_byte_for_byte(app_client):
    client, tokens = app_client
    refusals = [client.get("/api/v1/jobs"), client.get("/api/v1/jobs", headers=auth(tokens.job("j1"))),
                client.get("/api/v1/jobs/nope", headers=auth(TOKEN))]  # 401 and 403 (middleware), 404 (route)
    assert [r.status_code for r in refusals] == [401, 403, 404]
    for response in refusals:
        error = response.json()["error"]
        assert response.content == envelope_body(error["code"], error["message"], error["details"])
        assert response.headers["content-type"] == "application/json"
    assert refusals[0].headers["www-authenticate"] == "Bearer"
