"""/api/v1/sizes on a tiny app with cible's error handlers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cible.server.errors import install_error_handlers
from cible.server.routers.sizes import router


class _Frozen:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.state.clock = _Frozen(datetime(2026, 11, 28, tzinfo=timezone.utc))
    install_error_handlers(app)
    app.include_router(router)
    return TestClient(app, raise_server_exceptions=False)


def test_list_sizes(client: TestClient):
    body = client.get("/api/v1/sizes").json()
    assert body["count"] == len(body["value"]) > 0
    names = {s["name"] for s in body["value"]}
    assert "Standard_DS3_v2" in names and "Standard_NC6" not in names
    row = next(s for s in body["value"] if s["name"] == "Standard_DS3_v2")
    assert {"name", "family", "vCPUs", "gpus", "memoryGB", "osVhdSizeMB", "lowPriorityCapable",
            "supportedComputeTypes", "gpu_model", "gpu_architecture", "min_cuda", "category", "isolated",
            "retired_on", "price_per_hour"} <= set(row)


def test_list_filters(client: TestClient):
    gpu = client.get("/api/v1/sizes", params={"gpu": "true"}).json()["value"]
    assert gpu and all(s["gpus"] > 0 for s in gpu)
    instance = client.get("/api/v1/sizes", params={"type": "computeinstance"}).json()["value"]
    assert all("ComputeInstance" in s["supportedComputeTypes"] for s in instance)
    assert not any(s["name"].startswith("Standard_FX") for s in instance)
    retired = client.get("/api/v1/sizes", params={"include_retired": "true", "gpu": "true"}).json()["value"]
    assert "Standard_NC6" in {s["name"] for s in retired}


def test_list_with_a_bad_type_is_a_clean_error(client: TestClient):
    response = client.get("/api/v1/sizes", params={"type": "kubernetes"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "InvalidSpec"


def test_show_size(client: TestClient):
    response = client.get("/api/v1/sizes/standard_nc24rs_v3")
    assert response.status_code == 200
    assert response.json()["name"] == "Standard_NC24rs_v3"
    assert response.json()["isolated"] is True


def test_unknown_size_is_404_with_suggestions(client: TestClient):
    response = client.get("/api/v1/sizes/Standard_DS3v2")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "NotFound"
    assert "did you mean Standard_DS3_v2" in error["message"]
    assert error["details"]["suggestions"][0] == "Standard_DS3_v2"
