"""POST /jobs: many jobs in one request. All are checked first: one refused refuses the batch, naming
its index and field, and stores no job; the new ones are stored together; a job whose name is stored
already is answered as its PUT would be, so a batch sent again makes no job twice."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import api_client, assert_envelope
from fastapi.testclient import TestClient

from cible.server.services.job_batches import MAX_JOBS


@pytest.fixture
def api(migrated_db_url: str, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def job(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "command": "echo hi", "compute": "local", "experiment_name": "batch", **fields}


def names(api: TestClient) -> list[str]:
    return sorted(j["name"] for j in api.get("/api/v1/jobs", params={"top": 100}).json()["value"])


def test_the_jobs_of_a_batch_are_queued_and_answered_in_order(api: TestClient):
    response = api.post("/api/v1/jobs", json={"jobs": [job("b1"), job("b3"), job("b2", display_name="two")]})
    assert response.status_code == 200, response.text
    answered = response.json()["value"]
    assert [(j["name"], j["status"], j["target"], j["created"]) for j in answered] == [
        ("b1", "Queued", "local", True), ("b3", "Queued", "local", True), ("b2", "Queued", "local", True)]
    assert names(api) == ["b1", "b2", "b3"]
    shown = api.get("/api/v1/jobs/b2").json()
    assert shown["display_name"] == "two" and shown["status"] == "Queued"
    assert [h["status"] for h in shown["status_history"]] == ["NotStarted", "Queued"]


@pytest.mark.parametrize(("bad", "code", "field"), [
    (job("b2", compute="nowhere"), "NotFound", None),
    (job("b2", command=""), "InvalidSpec", "jobs[1].command"),
    (job("Not A Name!"), "InvalidRequest", "jobs[1].name"),
    (job("b1"), "InvalidRequest", "jobs[1].name"),  # twice in one batch
    ({"command": "echo hi", "compute": "local"}, "InvalidRequest", "jobs[1].name"),
])
def test_one_refused_job_refuses_the_batch_and_stores_none(api: TestClient, bad: dict, code: str, field: str | None):
    response = api.post("/api/v1/jobs", json={"jobs": [job("b1"), bad, job("b3")]})
    error = assert_envelope(response, None, code)
    assert error["message"].startswith("jobs[1]"), error["message"]
    details = error["details"][0] if isinstance(error["details"], list) else error["details"]  # a spec's: a list
    assert details["index"] == 1
    if field is not None:
        assert details["field"] == field
    assert names(api) == []


def test_a_batch_sent_again_answers_the_stored_jobs_and_makes_none_twice(api: TestClient):
    batch = {"jobs": [job("b1"), job("b2")]}
    assert api.post("/api/v1/jobs", json=batch).status_code == 200
    again = api.post("/api/v1/jobs", json={"jobs": [*batch["jobs"], job("b3")]})
    assert again.status_code == 200, again.text
    assert [(j["name"], j["created"]) for j in again.json()["value"]] == [("b1", False), ("b2", False), ("b3", True)]
    assert names(api) == ["b1", "b2", "b3"]
    changed = api.post("/api/v1/jobs", json={"jobs": [job("b1", command="echo other")]})
    assert_envelope(changed, 409, "Conflict")  # a stored job cannot change, as with PUT


@pytest.mark.parametrize("count", [0, MAX_JOBS + 1])
def test_a_batch_holds_1_to_1000_jobs(api: TestClient, count: int):
    error = assert_envelope(api.post("/api/v1/jobs", json={"jobs": [job(f"b{i}") for i in range(count)]}),
                            400, "InvalidRequest")
    assert error["details"]["field"] == "jobs"
    assert names(api) == []


def test_a_body_that_is_not_a_batch_is_422(api: TestClient):
    assert_envelope(api.post("/api/v1/jobs", json={"jobs": "b1"}), 422)
    assert_envelope(api.post("/api/v1/jobs", json=[job("b1")]), 422)
