"""The REST API in-process (no reconciler), on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

HELLO = {"command": "echo hello", "compute": "local"}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client



def test_every_api_request_needs_the_token(api: TestClient):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for path in ("/api/v1/health", "/api/v1/jobs", "/api/v1/openapi.json"):
            response = api.get(path, headers=headers | {"Authorization": headers.get("Authorization", "")})
            assert response.status_code == 401
            assert error_of(response)["code"] == "Unauthorized"
    assert api.get("/api/v1/health").json()["status"] == "ok"


def test_openapi_document_lists_the_job_routes(api: TestClient):
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert "/api/v1/jobs/{name}" in paths and "/api/v1/jobs/{name}:cancel" in paths


def test_put_creates_a_queued_job_with_its_history(api: TestClient):
    job = api.put("/api/v1/jobs/j1", json=HELLO).json()
    assert job["name"] == "j1" and job["status"] == "Queued" and job["compute"] == "local"
    assert [h["status"] for h in job["status_history"]] == ["NotStarted", "Queued"]
    assert api.get("/api/v1/jobs/j1").json()["command"] == "echo hello"


def test_a_job_without_compute_runs_on_serverless_nodes_made_for_it_and_says_so(tmp_path):
    # The installation default (the test session sets CIBLE_DEFAULT_COMPUTE=local for the other tests).
    with api_client(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, default_compute="serverless") as api:
        served_by_default(api)


def served_by_default(api: TestClient) -> None:
    job = api.put("/api/v1/jobs/j2", json={"command": "echo hi", "resources": {"instance_type": "Standard_DS1_v2"},
                                           "queue_settings": {"job_tier": "Spot"}}).json()
    assert job["compute"] == "serverless" and job["target"] == "serverless:j2"
    assert any("runs on serverless compute" in w for w in job["warnings"])
    assert job["serverless"] == {"size": "Standard_DS1_v2", "tier": "low_priority", "max_instances": 1, "live_nodes": 0}
    assert job["cost"]["estimate"]["per_hour"] > 0
    names = [c["name"] for c in api.get("/api/v1/computes").json()["value"]]
    assert "serverless:j2" not in names  # nothing to create or delete, nothing listed
    explicit = api.put("/api/v1/jobs/j3", json={"command": "echo hi", "compute": "azureml:serverless"}).json()
    assert explicit["target"] == "serverless:j3" and explicit["serverless"]["tier"] == "dedicated"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"comand": "echo"}, 422, "comand"),
        ({"command": "echo", "limits": {"timeout": "soon"}}, 422, "limits.timeout"),
        ({"command": "echo", "compute": "azureml:cpu-cluster"}, 404, "cpu-cluster"),
        ({"command": "echo ${{inputs.missing}}"}, 422, "missing"),
        ({"command": "echo", "code": "/tmp/somewhere"}, 400, "upload"),
        ({"command": "echo", "outputs": {"o": {"path": "azureml://datastores/nope/paths/x"}}}, 404, "nope"),
        ({"command": "echo", "name": "other"}, 400, "name"),
        ({"command": "echo", "environment": "file:/etc/passwd.yml"}, 400, "environment"),
    ],
)
def test_bad_jobs_are_4xx_with_what_and_where(api: TestClient, body: dict, status: int, needle: str):
    response = api.put("/api/v1/jobs/bad", json=body)
    assert response.status_code == status, response.text
    assert needle in error_of(response)["message"]
    assert api.get("/api/v1/jobs/bad").status_code == 404  # nothing half-written


def test_malformed_bodies_are_never_a_500(api: TestClient):
    for content in (b"{not json", b"[1, 2]", b'"text"'):
        response = api.put("/api/v1/jobs/x", content=content, headers={"Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
        error_of(response)


def test_unknown_job_is_404(api: TestClient):
    response = api.get("/api/v1/jobs/nope")
    assert response.status_code == 404 and "nope" in error_of(response)["message"]


def test_list_is_paginated_newest_first(api: TestClient):
    for i in range(5):
        api.put(f"/api/v1/jobs/p{i}", json=HELLO)
    first = api.get("/api/v1/jobs", params={"top": 2}).json()
    assert first["count"] == 5 and len(first["value"]) == 2 and first["next_skip"] == 2
    rest = api.get("/api/v1/jobs", params={"skip": 2, "top": 10}).json()
    assert rest["next_skip"] is None
    names = [j["name"] for j in first["value"] + rest["value"]]
    assert sorted(names) == [f"p{i}" for i in range(5)]


def test_submitted_jobs_are_immutable_but_tags_can_change(api: TestClient):
    api.put("/api/v1/jobs/m", json=HELLO)
    changed = api.put("/api/v1/jobs/m", json={**HELLO, "command": "echo other"})
    assert changed.status_code == 409 and "command" in error_of(changed)["message"]
    tagged = api.put("/api/v1/jobs/m", json={**HELLO, "tags": {"team": "a"}})
    assert tagged.status_code == 200 and tagged.json()["tags"] == {"team": "a"}


def test_cancel_and_delete_follow_the_transition_table(api: TestClient):
    api.put("/api/v1/jobs/c", json=HELLO)
    assert api.delete("/api/v1/jobs/c").status_code == 409  # live jobs are not deleted
    assert api.post("/api/v1/jobs/c:cancel").json()["status"] == "CancelRequested"
    assert api.post("/api/v1/jobs/nope:cancel").status_code == 404


def test_uploads_are_content_addressed_and_verified(api: TestClient):
    data = b"print('hi')\n"
    digest = hashlib.sha256(data).hexdigest()
    assert api.post("/api/v1/blobs:missing", json={"sha256": [digest]}).json()["missing"] == [digest]
    wrong = api.put(f"/api/v1/blobs/{digest}", content=b"other")
    assert wrong.status_code == 400 and "hashes to" in error_of(wrong)["message"]
    assert api.put("/api/v1/blobs/not-a-digest", content=data).status_code == 400
    assert api.put(f"/api/v1/blobs/{digest}", content=data).json()["created"] is True
    assert api.post("/api/v1/blobs:missing", json={"sha256": [digest]}).json()["missing"] == []
    files = {"main.py": {"sha256": digest, "size": len(data)}}
    snap = api.post("/api/v1/snapshots", json={"files": files}).json()
    assert snap == api.post("/api/v1/snapshots", json={"files": files}).json()  # same tree, same id
    job = api.put("/api/v1/jobs/code", json={**HELLO, "code": snap["uri"]})
    assert job.status_code == 200, job.text
    absent = {"x.py": {"sha256": "0" * 64}}
    assert api.post("/api/v1/snapshots", json={"files": absent}).status_code == 400
    escape = {"../x.py": {"sha256": digest}}
    assert api.post("/api/v1/snapshots", json={"files": escape}).status_code == 400


def test_local_compute_always_exists(api: TestClient):
    names = [c["name"] for c in api.get("/api/v1/computes").json()["value"]]
    assert names == ["local"]
    assert api.get("/api/v1/computes/local").json()["provisioning_state"] == "Succeeded"
    missing = api.get("/api/v1/computes/gpu")
    assert missing.status_code == 404 and "gpu" in error_of(missing)["message"]


def test_listing_by_an_unknown_status_says_which_exist(api: TestClient):
    response = api.get("/api/v1/jobs", params={"status": "Done"})
    assert response.status_code == 400
    assert "Completed" in error_of(response)["message"]


def test_a_listing_counts_each_serverless_jobs_live_nodes_in_one_query_for_the_page(tmp_path):
    from sqlalchemy import event, update

    from cible.server.store.rows import JobRow, NodeRow

    with api_client(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, default_compute="serverless") as api:
        body = {"command": "echo hi", "resources": {"instance_type": "Standard_DS1_v2"}}
        for i in range(12):
            api.put(f"/api/v1/jobs/s{i}", json=body)
        now = api.app.state.clock.now()
        with api.app.state.store.session() as session:  # s0: one running and one removed node; s1: one idle
            session.execute(update(JobRow).values(status="Running"))  # (a queued one's reason reads its pool)
            for node, target, state in (("a", "serverless:s0", "running"), ("b", "serverless:s0", "removed"),
                                        ("c", "serverless:s1", "idle")):
                session.add(NodeRow(node_id=node, compute=target, provider="local", state=state, info={},
                                    created_at=now, updated_at=now))
        statements = []
        event.listen(api.app.state.store.engine, "before_cursor_execute",
                     lambda *args: statements.append(args[2]))
        few = api.get("/api/v1/jobs", params={"top": 2})
        count_for_two = len(statements)
        statements.clear()
        many = api.get("/api/v1/jobs", params={"top": 12}).json()["value"]
        assert len(statements) == count_for_two  # the same queries for 12 serverless jobs as for 2
        live = {job["name"]: job["serverless"]["live_nodes"] for job in many}
        assert live["s0"] == 1 and live["s1"] == 1 and live["s5"] == 0
        assert few.status_code == 200
        assert api.get("/api/v1/jobs/s0").json()["serverless"]["live_nodes"] == 1  # show counts it too
