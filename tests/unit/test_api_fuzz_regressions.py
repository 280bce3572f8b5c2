"""Requests the OpenAPI fuzz run (tests/integration/test_api_fuzz.py) once answered with a 500,
each replayed exactly: bad input is a 4xx naming its field."""

from __future__ import annotations

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


@pytest.mark.parametrize("spec_type", [
    [{}, [-9223372036854775809, -9223372036854775809, "cible://snapshots/../x"]],  # as the fuzz run sent it
    {"amlcompute": True},
])
def test_a_compute_whose_type_is_not_a_string_is_refused_naming_type(api: TestClient, spec_type):
    body = {"type": spec_type, "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
            "idle_time_before_scale_down": 120}
    response = api.put("/api/v1/computes/cpu-cluster", json=body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "InvalidSpec" and "must be a string" in error["message"]
    assert "type" in str(error["details"])
    assert api.get("/api/v1/computes/cpu-cluster").status_code == 404


def test_a_job_whose_type_is_a_mapping_is_refused_naming_type(api: TestClient):
    response = api.put("/api/v1/jobs/j1", json={"type": {"command": 1}, "command": "echo hi", "compute": "local"})
    assert response.status_code == 422, response.text
    assert "must be a string" in error_of(response)["message"]
