"""Computes over the REST API: clusters checked against the size catalog, updated live, deleted."""

from __future__ import annotations

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

# One vCPU and 3.5 GB: a size every test machine can hold (nodes run on this machine).
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def test_a_cluster_is_created_listed_updated_and_deleted(api: TestClient):
    created = api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    assert created.status_code == 200, created.text
    assert created.json()["provisioning_state"] == "Succeeded" and created.json()["current_node_count"] == 0
    assert [c["name"] for c in api.get("/api/v1/computes").json()["value"]] == ["local", "cpu-cluster"]
    updated = api.patch("/api/v1/computes/cpu-cluster", json={"max_instances": 4, "idle_time_before_scale_down": 30})
    assert (updated.json()["max_instances"], updated.json()["idle_time_before_scale_down"]) == (4, 30)
    assert api.get("/api/v1/computes/cpu-cluster/nodes").json()["value"] == []
    assert api.delete("/api/v1/computes/cpu-cluster").status_code == 204
    assert api.get("/api/v1/computes/cpu-cluster").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({**CLUSTER, "size": "Standard_NC6"}, 422, "retired on 2023-08-31"),
        ({**CLUSTER, "size": "Standard_DS3v2"}, 422, "did you mean Standard_DS3_v2"),
        ({"type": "computeinstance", "size": "Standard_FX4mds"}, 422, "not supported for computeinstance"),
        ({**CLUSTER, "min_instances": 3}, 422, "must not exceed"),
        ({**CLUSTER, "sise": "x"}, 422, "sise"),
        ({"type": "computeinstance", "size": "Standard_D32ds_v4"}, 400, "this machine"),
        ({**CLUSTER, "size": "Standard_E64s_v3"}, 400, "the host has"),
    ],
)
def test_bad_computes_are_refused_with_the_reason(api: TestClient, body: dict, status: int, needle: str):
    response = api.put("/api/v1/computes/c", json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert api.get("/api/v1/computes/c").status_code == 404


def test_updates_are_checked_and_limited_to_scale_settings(api: TestClient):
    api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    assert api.patch("/api/v1/computes/cpu-cluster", json={"min_instances": 5}).status_code == 422
    refused = api.patch("/api/v1/computes/cpu-cluster", json={"size": "Standard_D4_v2"})
    assert refused.status_code == 400 and "cannot be updated" in refused.json()["error"]["message"]
    assert api.put("/api/v1/computes/cpu-cluster", json=CLUSTER).status_code == 409


def test_local_cannot_be_replaced_or_deleted(api: TestClient):
    assert api.put("/api/v1/computes/local", json=CLUSTER).status_code == 409
    assert api.delete("/api/v1/computes/local").status_code == 409
    update = api.patch("/api/v1/computes/local", json={"max_instances": 3})
    assert update.status_code == 400 and "no scale settings" in update.json()["error"]["message"]


def test_a_size_the_host_cannot_hold_is_accepted_with_overcommit(api: TestClient):
    body = {**CLUSTER, "size": "Standard_E64s_v3", "cible": {"overcommit": True}}
    created = api.put("/api/v1/computes/big", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["cible"]["overcommit"] is True


def test_jobs_on_a_cluster_queue_and_those_that_could_never_fit_are_refused(api: TestClient):
    api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    queued = api.put("/api/v1/jobs/j", json={"command": "echo", "compute": "azureml:cpu-cluster"})
    assert queued.status_code == 200 and queued.json()["status"] == "Queued", queued.text
    too_big = api.put("/api/v1/jobs/k", json={"command": "echo", "compute": "azureml:cpu-cluster",
                                              "resources": {"instance_count": 3}})
    assert too_big.status_code == 400 and "max_instances 2" in too_big.json()["error"]["message"]
    assert too_big.json()["error"]["details"]["field"] == "resources.instance_count"
    # Azure runs a CUDA image on any size: not refused, only warned of.
    cuda = {"image": "mcr.microsoft.com/azureml/curated/acpt-pytorch-2.2-cuda12.1:latest"}
    gpu = api.put("/api/v1/jobs/g", json={"command": "echo", "compute": "azureml:cpu-cluster", "environment": cuda})
    assert gpu.status_code == 200 and gpu.json()["status"] == "Queued", gpu.text
    assert any("is a CUDA environment (CUDA 12.1)" in w and "Standard_DS1_v2 has no GPU" in w
               for w in gpu.json()["warnings"]), gpu.json()["warnings"]
    assert not any("GPU" in w for w in queued.json()["warnings"])


def test_an_unknown_compute_is_refused_with_the_nearest_name_and_the_listed_computes(api: TestClient):
    api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    serverless = api.put("/api/v1/jobs/s", json={"command": "echo", "compute": "serverless",
                                                  "resources": {"instance_type": "Standard_DS1_v2"}})
    assert serverless.status_code == 200, serverless.text  # its nodes' pool is a compute no listing shows
    typo = api.put("/api/v1/jobs/t", json={"command": "echo", "compute": "azureml:cpu-clustr"})
    assert typo.status_code == 404, typo.text
    message = typo.json()["error"]["message"]
    assert "did you mean 'cpu-cluster'?" in message and "(computes: local, cpu-cluster);" in message, message
    unlike = api.put("/api/v1/jobs/u", json={"command": "echo", "compute": "azureml:gpu-big"}).json()["error"]
    assert unlike["message"].startswith("compute 'gpu-big' does not exist in this workspace (computes: local, "
                                        "cpu-cluster); "), unlike


def test_deleting_a_cluster_with_nodes_drains_it(api: TestClient):
    api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    from cible.server.store.rows import NodeRow

    now = api.app.state.clock.now()
    with api.app.state.store.session() as session:
        session.add(NodeRow(node_id="n1", compute="cpu-cluster", provider="local", state="idle", info={},
                            created_at=now, updated_at=now))
    draining = api.delete("/api/v1/computes/cpu-cluster")
    assert draining.status_code == 202 and draining.json()["provisioning_state"] == "Deleting"
    refused = api.put("/api/v1/jobs/j", json={"command": "echo", "compute": "azureml:cpu-cluster"})
    assert refused.status_code == 400 and "being deleted" in refused.json()["error"]["message"]
    assert api.patch("/api/v1/computes/cpu-cluster", json={"max_instances": 3}).status_code == 409
