"""Idle times are bounded where they enter: a cluster's idle_time_before_scale_down (seconds) up to
30 days, an instance's idle shutdown up to 3 days in either form. 10^29 s once stopped every
cluster's pass (a timedelta overflow); now the request is refused, naming the field."""

from __future__ import annotations

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.core.models.computes import MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}
INSTANCE = {"type": "computeinstance", "size": "Standard_DS1_v2"}


@pytest.fixture
def api(tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path) as client:
        yield client


@pytest.mark.parametrize("idle", [10**29, MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S + 1, -1])
def test_an_idle_time_out_of_range_is_refused_naming_the_field(api: TestClient, idle: int):
    refused = api.put("/api/v1/computes/c", json={**CLUSTER, "idle_time_before_scale_down": idle})
    assert refused.status_code == 422
    assert "idle_time_before_scale_down" in error_of(refused)["message"]
    assert api.get("/api/v1/computes/c").status_code == 404


def test_an_update_out_of_range_is_refused_and_the_longest_allowed_is_taken(api: TestClient):
    assert api.put("/api/v1/computes/c", json=CLUSTER).status_code == 200
    refused = api.patch("/api/v1/computes/c", json={"idle_time_before_scale_down": 10**29})
    assert refused.status_code == 422 and "idle_time_before_scale_down" in error_of(refused)["message"]
    longest = api.patch("/api/v1/computes/c", json={"idle_time_before_scale_down": MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S})
    assert longest.status_code == 200 and longest.json()["idle_time_before_scale_down"] == 30 * 86400


@pytest.mark.parametrize("field", [{"idle_time_before_shutdown": "P99999999999D"},
                                   {"idle_time_before_shutdown": "PT4321M"},
                                   {"idle_time_before_shutdown_minutes": 10**29}])
def test_an_instance_idle_shutdown_longer_than_three_days_is_refused(api: TestClient, field: dict):
    refused = api.put("/api/v1/computes/ci", json={**INSTANCE, **field})
    assert refused.status_code == 422
    assert next(iter(field)) in error_of(refused)["message"]
