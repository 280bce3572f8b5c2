"""`GET /jobs?status=`: Azure's status names in any case (`cible job list --status running`)."""

from __future__ import annotations

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.core.lifecycle.jobs import JobStatus


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        assert client.put("/api/v1/jobs/j1", json={"command": "echo hi", "compute": "local"}).status_code == 200
        yield client


@pytest.mark.parametrize("status", ["Queued", "queued", "QUEUED", "qUeUeD"])
def test_the_status_filter_takes_any_case(api: TestClient, status: str):
    listed = api.get("/api/v1/jobs", params={"status": status})
    assert listed.status_code == 200, listed.text
    assert [j["name"] for j in listed.json()["value"]] == ["j1"]


@pytest.mark.parametrize("status", ["running", "RUNNING", "Running", "cancelrequested"])
def test_other_statuses_in_any_case_filter_the_job_out(api: TestClient, status: str):
    listed = api.get("/api/v1/jobs", params={"status": status})
    assert listed.status_code == 200, listed.text
    assert listed.json()["value"] == []


def test_an_unknown_status_is_a_400_listing_the_valid_ones(api: TestClient):
    refused = api.get("/api/v1/jobs", params={"status": "runing"})
    assert refused.status_code == 400
    error = error_of(refused)
    assert error["details"] == {"field": "status"}
    assert error["message"].startswith("status: 'runing' is not a job status; use one of NotStarted, Queued,")
    assert all(s.value in error["message"] for s in JobStatus)
