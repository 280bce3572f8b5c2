"""Azure's own commands on a small machine: the `local` provider shares vCPUs beyond the host's
(warned of once), while memory and GPUs must still fit unless overcommitted; quotas count the
size's vCPUs. The host is pinned to 2 vCPUs here, as the machines these tests run on."""

from __future__ import annotations

import logging

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.backends.local import provider as local_provider
from cible.node.limits import Shape

SMALL_HOST = Shape(vcpus=2, memory_gb=23.5)
SHARED = ("Standard_DS3_v2 has 4 vCPUs and this machine 2: each node shares the machine's 2 CPUs "
          "(its CPU limit is 2, not 4); quotas still count 4 vCPUs a node")
# `cible compute create -n cpu-cluster --type amlcompute --min-instances 0 --max-instances 8`: no size.
AZURE_CLUSTER = {"type": "amlcompute", "min_instances": 0, "max_instances": 8}


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Shape:
    monkeypatch.setattr(local_provider, "host_capacity", lambda: SMALL_HOST)
    return SMALL_HOST


@pytest.fixture
def api(migrated_db_url, tmp_path, host) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "shares the machine's" in r.getMessage()]


def test_azures_default_size_is_accepted_with_one_warning(api: TestClient, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    created = api.put("/api/v1/computes/cpu-cluster", json=AZURE_CLUSTER)
    assert created.status_code == 200, created.text
    assert created.json()["size"] == "Standard_DS3_v2"  # Azure's default size
    assert created.json()["warnings"] == [SHARED]
    assert _logged(caplog) == [f"compute cpu-cluster: {SHARED}"]
    # `show` says it to whoever asks; the server log said it once, at create.
    assert api.get("/api/v1/computes/cpu-cluster").json()["warnings"] == [SHARED]
    assert len(_logged(caplog)) == 1
    # An answer's warnings sent back in a body are ignored, as its other read-only fields are.
    assert api.put("/api/v1/computes/again", json={**AZURE_CLUSTER, "warnings": [SHARED]}).status_code == 200


def test_a_compute_instance_defaults_to_the_same_size(api: TestClient):
    created = api.put("/api/v1/computes/ci", json={"type": "computeinstance"})
    assert created.status_code == 200, created.text
    assert created.json()["size"] == "Standard_DS3_v2" and SHARED in created.json()["warnings"]


def test_a_size_within_the_hosts_vcpus_has_no_warning(api: TestClient):
    created = api.put("/api/v1/computes/c", json={**AZURE_CLUSTER, "size": "Standard_DS2_v2"}).json()
    assert "warnings" not in created and "warnings" not in api.get("/api/v1/computes/c").json()


@pytest.mark.parametrize(
    ("size", "needle"),
    [
        ("Standard_DS5_v2", "needs 16 vCPUs and 56 GB"),  # memory beyond the host's: still refused
        ("Standard_NC4as_T4_v3", "pick a size without GPUs"),  # GPUs are never shared
    ],
)
def test_memory_and_gpus_must_still_fit_unless_overcommitted(api: TestClient, host: Shape, size: str, needle: str,
                                                             monkeypatch: pytest.MonkeyPatch):
    if size == "Standard_NC4as_T4_v3":  # its 28 GB fit this host: only the GPU is missing
        monkeypatch.setattr(local_provider, "host_capacity", lambda: Shape(2, 64.0))
    refused = api.put("/api/v1/computes/c", json={**AZURE_CLUSTER, "size": size})
    assert refused.status_code == 400, refused.text
    error = error_of(refused)
    assert needle in error["message"] and "overcommit" in error["message"], error
    accepted = api.put("/api/v1/computes/c", json={**AZURE_CLUSTER, "size": size, "cible": {"overcommit": True}})
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize(
    ("host_gpus", "size", "note"),
    [
        (0, "Standard_NC4as_T4_v3", "Standard_NC4as_T4_v3 has 1 GPU and this machine none: its nodes get no GPU "
                                    "here (overcommitted), so their jobs run on CPUs"),
        (1, "Standard_NC64as_T4_v3", "Standard_NC64as_T4_v3 has 4 GPUs and this machine 1: each node gets at most "
                                     "the machine's 1 (overcommitted: shared with other nodes when none is free)"),
    ],
)
def test_an_overcommitted_gpu_size_says_what_gpus_its_nodes_get_here(api: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                                    host_gpus: int, size: str, note: str):
    monkeypatch.setattr(local_provider, "host_capacity", lambda: Shape(64, 512.0, gpus=host_gpus))
    created = api.put("/api/v1/computes/gpu", json={**AZURE_CLUSTER, "size": size, "cible": {"overcommit": True}})
    assert created.status_code == 200, created.text
    assert [w for w in created.json()["warnings"] if note in w], created.json()["warnings"]
    assert [w for w in api.get("/api/v1/computes/gpu").json()["warnings"] if note in w]
    # A size within the host's GPUs is not warned of.
    fits = api.put("/api/v1/computes/fits", json={**AZURE_CLUSTER, "size": "Standard_DS2_v2"}).json()
    assert "warnings" not in fits


def test_quotas_count_the_sizes_own_vcpus_not_the_hosts(api: TestClient):
    api.put("/api/v1/quotas/standardDSv2Family", json={"vcpus": 3})
    refused = api.put("/api/v1/computes/c", json={**AZURE_CLUSTER, "min_instances": 1})
    assert refused.status_code == 400, refused.text
    assert "needs 4 vCPUs" in error_of(refused)["message"]  # 4 a node, though capped at 2 on this host


def test_a_serverless_job_defaults_to_azures_size_with_the_warning(api: TestClient):
    job = api.put("/api/v1/jobs/j", json={"command": "echo", "compute": "serverless"})
    assert job.status_code == 200, job.text
    assert job.json()["serverless"]["size"] == "Standard_DS3_v2"
    assert SHARED in job.json()["warnings"]


def test_a_serverless_default_follows_memory_on_a_smaller_host(api: TestClient, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(local_provider, "host_capacity", lambda: Shape(2, 8.0))  # DS3_v2's 14 GB do not fit
    job = api.put("/api/v1/jobs/j", json={"command": "echo", "compute": "serverless"}).json()
    assert job["serverless"]["size"] == "Standard_DS2_v2"
    assert not any("shares the machine's" in w for w in job["warnings"])

