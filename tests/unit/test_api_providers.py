"""Node providers over the REST API: which ones the server knows and why one is unusable
(not installed, not configured), a compute's provider stored at create (its YAML's, else the
workspace default), refused when unknown or unusable, and shown with the compute."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.backends.ray import CONFIGURE_HINT, INSTALL_HINT

# One vCPU and 3.5 GB: a size every test machine can hold.
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
INSTANCE = {"type": "computeinstance", "size": "Standard_DS1_v2"}


@pytest.fixture
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Settings as on a server started with no provider variables."""
    for name in ("CIBLE_RAY_ADDRESS", "CIBLE_RAY_TOKEN", "CIBLE_RAY_AUTOSCALING", "CIBLE_DEFAULT_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def client(migrated_db_url, tmp_path, no_provider_env) -> Iterator[TestClient]:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as api:
        yield api


@contextmanager
def ray_not_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):  # noqa: ANN001, ANN202
        return None if name == "ray" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    try:
        yield
    finally:
        monkeypatch.setattr(importlib.util, "find_spec", real)


def providers(api: TestClient) -> dict[str, dict]:
    response = api.get("/api/v1/computes:providers")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["value"])
    return {p["name"]: p for p in body["value"]}


# -- the provider list --------------------------------------------------------------------------


def test_local_is_usable_and_ray_says_it_is_not_configured(client: TestClient):
    listed = providers(client)
    assert sorted(listed) == ["kubernetes", "local", "ray", "slurm", "ssh"]
    assert listed["kubernetes"]["available"] is True and "--type kubernetes" in listed["kubernetes"]["hint"]
    assert listed["local"]["available"] is True and listed["local"]["error"] is None
    assert listed["ssh"]["available"] is True and "cible compute attach" in listed["ssh"]["hint"]
    assert listed["slurm"]["available"] is True and "provider: slurm" in listed["slurm"]["hint"]
    assert listed["ray"] == {"name": "ray", "available": False, "reachable": False, "error": CONFIGURE_HINT}
    assert client.get("/api/v1/computes:providers").json()["default"] == "local"


def test_ray_not_installed_says_how_to_install_it(migrated_db_url, tmp_path, no_provider_env):  # noqa: ANN001
    no_provider_env.setenv("CIBLE_RAY_ADDRESS", "10.0.0.1:6379")  # configured, but not installed: install first
    with ray_not_installed(no_provider_env), api_client(migrated_db_url, tmp_path) as api:
        ray = providers(api)["ray"]
        assert ray["available"] is False and ray["error"] == INSTALL_HINT
        assert "pip install 'cible[ray]'" in ray["error"]
        refused = api.put("/api/v1/computes/rc", json={**CLUSTER, "cible": {"provider": "ray"}})
        assert refused.status_code == 400, refused.text
        assert "pip install 'cible[ray]'" in error_of(refused)["message"]


def test_the_default_provider_is_listed(migrated_db_url, tmp_path, no_provider_env):  # noqa: ANN001
    no_provider_env.setenv("CIBLE_DEFAULT_PROVIDER", "ray")
    with api_client(migrated_db_url, tmp_path) as api:
        assert api.get("/api/v1/computes:providers").json()["default"] == "ray"


def test_a_configured_ray_is_usable_before_it_is_reached(migrated_db_url, tmp_path, no_provider_env):  # noqa: ANN001
    # The app is not started (no lifespan): the provider never connects, and says so.
    no_provider_env.setenv("CIBLE_RAY_ADDRESS", "127.0.0.1:1")
    with api_client(migrated_db_url, tmp_path) as api:
        ray = providers(api)["ray"]
        assert (ray["available"], ray["reachable"], ray["address"]) == (True, False, "127.0.0.1:1")
        assert ray["error"] == "not connected yet"
        # Whether its Ray can hold the size is unknown yet: the cluster is made, its nodes will wait.
        created = api.put("/api/v1/computes/rc", json={**CLUSTER, "cible": {"provider": "ray"}})
        assert created.status_code == 200, created.text
        shown = api.get("/api/v1/computes/rc").json()
        assert shown["cible"]["provider"] == "ray"
        assert shown["provider_status"]["name"] == "ray" and shown["provider_status"]["reachable"] is False


# -- a compute's provider at create ------------------------------------------------------------------


@pytest.mark.parametrize("body", [CLUSTER, INSTANCE], ids=["amlcompute", "computeinstance"])
def test_a_compute_on_an_unconfigured_ray_is_refused_and_not_stored(client: TestClient, body: dict):
    refused = client.put("/api/v1/computes/rc", json={**body, "cible": {"provider": "ray"}})
    assert refused.status_code == 400, refused.text
    error = error_of(refused)
    assert error["details"] == {"field": "cible.provider"}
    assert error["message"].startswith("cible.provider: the ray node provider is unavailable")
    assert CONFIGURE_HINT in error["message"]
    assert client.get("/api/v1/computes/rc").status_code == 404
    assert [c["name"] for c in client.get("/api/v1/computes").json()["value"]] == ["local"]


def test_a_compute_that_names_no_provider_gets_local_stored(client: TestClient):
    created = client.put("/api/v1/computes/cpu", json=CLUSTER)
    assert created.status_code == 200, created.text
    assert created.json()["cible"]["provider"] == "local"
    assert client.get("/api/v1/computes/cpu").json()["cible"]["provider"] == "local"
    listed = {c["name"]: c for c in client.get("/api/v1/computes").json()["value"]}
    assert listed["cpu"]["cible"]["provider"] == "local"


def test_a_compute_that_names_local_keeps_its_other_settings(client: TestClient):
    created = client.put("/api/v1/computes/cpu", json={**CLUSTER, "cible": {"provider": "local",
                                                                             "on_node_failure": "fail"}})
    assert created.status_code == 200, created.text
    assert created.json()["cible"]["provider"] == "local" and created.json()["cible"]["on_node_failure"] == "fail"


@pytest.mark.parametrize("body", [CLUSTER, INSTANCE, {**CLUSTER, "cible": {"overcommit": True}}],
                         ids=["amlcompute", "computeinstance", "cible-without-provider"])
def test_an_unusable_default_provider_refuses_computes_that_name_none(  # noqa: ANN001
        migrated_db_url, tmp_path, no_provider_env, body: dict):
    no_provider_env.setenv("CIBLE_DEFAULT_PROVIDER", "ray")
    with api_client(migrated_db_url, tmp_path) as api:
        refused = api.put("/api/v1/computes/c", json=body)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert error["details"] == {"field": "cible.provider"}
        assert "the ray node provider is unavailable" in error["message"] and CONFIGURE_HINT in error["message"]
        assert api.get("/api/v1/computes/c").status_code == 404
        # Naming the usable provider still works under that default.
        created = api.put("/api/v1/computes/c", json={**body, "cible": {**body.get("cible", {}), "provider": "local"}})
        assert created.status_code == 200, created.text
        assert created.json()["cible"]["provider"] == "local"


def test_an_unknown_default_provider_refuses_computes_naming_the_providers(  # noqa: ANN001
        migrated_db_url, tmp_path, no_provider_env):
    no_provider_env.setenv("CIBLE_DEFAULT_PROVIDER", "nomad")
    with api_client(migrated_db_url, tmp_path) as api:
        refused = api.put("/api/v1/computes/c", json=CLUSTER)
        assert refused.status_code == 400, refused.text
        error = error_of(refused)
        assert error["details"] == {"field": "cible.provider"}
        assert "'nomad' is not a node provider" in error["message"] and "local, ray" in error["message"]
        assert api.get("/api/v1/computes/c").status_code == 404


def test_a_cluster_cannot_draw_nodes_from_kubernetes_and_is_told_how_to_use_it(client: TestClient):
    refused = client.put("/api/v1/computes/c", json={**CLUSTER, "cible": {"provider": "kubernetes"}})
    assert refused.status_code == 400, refused.text
    error = error_of(refused)
    assert error["details"] == {"field": "cible.provider"} and "cible compute attach --type kubernetes" in error["message"]


def test_an_unknown_provider_in_the_yaml_is_a_spec_error_naming_the_field(client: TestClient):
    refused = client.put("/api/v1/computes/c", json={**CLUSTER, "cible": {"provider": "nomad"}})
    # Checked by the spec's schema, as every other field of the YAML: 422 InvalidSpec, never a 500.
    assert refused.status_code == 422, refused.text
    error = error_of(refused)
    assert error["code"] == "InvalidSpec"
    assert "cible.provider" in error["message"] and "'nomad' is not one of local, ray" in error["message"]
    assert [d["field"] for d in error["details"]] == ["cible.provider"]
    assert client.get("/api/v1/computes/c").status_code == 404


@pytest.mark.parametrize("settings, says", [
    ({"provider": "slurm"}, "cible.slurm: is missing"),
    ({"provider": "slurm", "slurm": "nowhere"}, "'nowhere' does not exist"),
    ({"provider": "slurm", "slurm": "local"}, "'local' does not exist"),
    ({"provider": "local", "slurm": "hpc"}, "only for cible.provider: slurm"),
])
def test_a_cluster_on_slurm_must_name_a_slurm_compute(client: TestClient, settings: dict, says: str):
    refused = client.put("/api/v1/computes/c", json={**CLUSTER, "cible": settings})
    assert refused.status_code == 400, refused.text
    assert says in error_of(refused)["message"] and error_of(refused)["details"]["field"] == "cible.slurm"
    assert client.get("/api/v1/computes/c").status_code == 404


# -- shown with the compute -----------------------------------------------------------------------


def test_a_cluster_shows_its_provider_status(client: TestClient):
    client.put("/api/v1/computes/cpu", json=CLUSTER)
    status = client.get("/api/v1/computes/cpu").json()["provider_status"]
    assert status["name"] == "local" and status["available"] is True and status["reachable"] is True
    assert status["error"] is None


def test_an_instance_shows_its_provider_status(client: TestClient):
    assert client.put("/api/v1/computes/ci", json=INSTANCE).status_code == 200
    assert client.get("/api/v1/computes/ci").json()["provider_status"]["name"] == "local"


def test_provider_status_in_a_body_is_read_only(client: TestClient):
    # What `show` adds is ignored in a body: it neither picks the provider nor is refused.
    created = client.put("/api/v1/computes/cpu", json={**CLUSTER, "provider_status": {"name": "ray"}})
    assert created.status_code == 200, created.text
    assert created.json()["cible"]["provider"] == "local"
    assert client.get("/api/v1/computes/cpu").json()["provider_status"]["name"] == "local"


def test_the_builtin_local_compute_has_no_provider_status(client: TestClient):
    assert "provider_status" not in client.get("/api/v1/computes/local").json()
