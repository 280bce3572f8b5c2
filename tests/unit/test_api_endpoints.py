"""/api/v1/online-endpoints in-process: what the API stores and refuses (the replicas themselves are
the integration tests'). Bad input is a 4xx naming its field, never a 500."""

from __future__ import annotations

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.server.reconcilers.demand import GatewayDemand
from cible.server.reconcilers.routes import RoutePublisher
from cible.server.tokens import Tokens
from cible.testing import FrozenClock

DEPLOYMENT = {"instance_type": "Standard_DS1_v2", "code_configuration": {"code": "cible://snapshots/x",
                                                                        "scoring_script": "score.py"},
              "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"}}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        assert client.put("/api/v1/online-endpoints/my-ep", json={"spec": {"auth_mode": "key"}}).status_code == 200
        yield client


def test_an_endpoint_is_created_once_and_its_keys_are_derived_not_stored(api: TestClient) -> None:
    again = api.put("/api/v1/online-endpoints/my-ep", json={"spec": {}})
    assert again.status_code == 409 and "already exists" in again.json()["error"]["message"]
    keys = api.post("/api/v1/online-endpoints/my-ep/credentials").json()
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert api.post("/api/v1/online-endpoints/my-ep/regenerate-keys", json={"key_type": "primary"}).status_code == 204
    after = api.post("/api/v1/online-endpoints/my-ep/credentials").json()
    assert after["primaryKey"] != keys["primaryKey"] and after["secondaryKey"] == keys["secondaryKey"]


@pytest.mark.parametrize(("body", "field"), [
    ({"traffic": {"blue": "²"}}, "traffic.blue"),  # a digit to str.isdigit, not to int()
    ({"traffic": {"blue": 101}}, "traffic.blue"),
    ({"traffic": ["blue"]}, "traffic"),
    ({"traffic": {"nope": 100}}, "traffic"),
    ({"mirror_traffic": {"nope": 10}}, "mirror_traffic"),
])
def test_bad_traffic_is_refused_naming_its_field(api: TestClient, body: dict, field: str) -> None:
    answer = api.patch("/api/v1/online-endpoints/my-ep", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["details"]["field"].startswith(field.split(".")[0]), answer.text


@pytest.mark.parametrize("body", [{"set": 5}, {"set": [5]}, {"set": "instance_count=2"}])
def test_a_deployment_update_with_bad_assignments_is_a_400(api: TestClient, body: dict) -> None:
    answer = api.patch("/api/v1/online-endpoints/my-ep/deployments/blue", json=body)
    assert answer.status_code in (400, 404), answer.text


def test_traffic_at_create_a_missing_scoring_script_and_an_unknown_endpoint_are_refused(api: TestClient) -> None:
    answer = api.put("/api/v1/online-endpoints/other", json={"spec": {"traffic": {"blue": 100}}})
    assert answer.status_code == 400 and "cannot be set when it is created" in answer.json()["error"]["message"]
    no_code = api.put("/api/v1/online-endpoints/my-ep/deployments/blue",
                      json={"spec": {k: v for k, v in DEPLOYMENT.items() if k != "code_configuration"}})
    assert no_code.status_code == 422 and "code_configuration" in no_code.json()["error"]["message"]
    assert api.put("/api/v1/online-endpoints/nope/deployments/blue", json={"spec": DEPLOYMENT}).status_code == 404


def test_the_gateways_credential_check_refuses_what_is_not_a_credential() -> None:
    tokens = Tokens("workspace-token")
    publisher = RoutePublisher(tokens, publish=lambda table: None)
    publisher._credentials = {"ep": ("key", (tokens.endpoint_key("ep", "primary", "a"),
                                            tokens.endpoint_key("ep", "secondary", "b")), "c"),
                              "tok": ("aml_token", ("", ""), "c")}
    assert publisher.check_credential("ep", "key", tokens.endpoint_key("ep", "primary", "a"))
    for bad in ("", "\xe9", "not-a-key", tokens.endpoint_key("ep", "primary", "old")):
        assert not publisher.check_credential("ep", "key", bad)
    good = tokens.endpoint_token("tok", "c", 4_000_000_000)
    assert publisher.check_credential("tok", "aml_token", good)
    for bad in ("\xb2.x", "1.\xe9", good[:-1] + "A", tokens.endpoint_token("tok", "c", 1)):  # tampered, expired
        assert not publisher.check_credential("tok", "aml_token", bad)


class _Gateway:
    def __init__(self, mean: float, queued: int) -> None:
        self.mean, self.queued = mean, queued

    def in_flight(self, endpoint: str, deployment: str, window_s: float) -> float:
        return self.mean

    def stats(self, endpoint: str) -> dict:
        return {"blue": {"queued": self.queued}}


def test_requests_queued_at_the_gateway_count_as_demand() -> None:
    clock, woken = FrozenClock(), []
    demand = GatewayDemand(clock, wake=lambda: woken.append(1))
    demand.gateway = _Gateway(mean=1.0, queued=3)  # every slot busy, three more waiting: short of replicas
    assert demand("ep", "blue")["in_flight"] == 4.0
    demand.gateway = _Gateway(mean=0.0, queued=0)
    assert demand("ep", "blue") == {"in_flight": 0.0, "waiting": False, "last_request_at": None}
    demand.on_demand("ep", "blue")  # a request waits for a first replica
    assert woken and demand("ep", "blue")["waiting"]
    clock.advance(10)
    assert not demand("ep", "blue")["waiting"]


def test_a_deployment_whose_record_cannot_be_read_leaves_the_other_routes_published(api: TestClient) -> None:
    from datetime import datetime, timezone

    from sqlalchemy import text

    from cible.core.models.endpoint_records import DeploymentStatus
    from cible.server.store.rows import OnlineDeploymentRow

    store = api.app.state.store
    assert api.put("/api/v1/online-endpoints/other-ep", json={"spec": {}}).status_code == 200
    now = datetime.now(timezone.utc)
    with store.session() as session:
        for endpoint in ("my-ep", "other-ep"):
            session.add(OnlineDeploymentRow(endpoint=endpoint, local=False, name="blue", spec=DEPLOYMENT, generation=1,
                                            provisioning_state="Succeeded", observed=DeploymentStatus(),
                                            created_at=now, updated_at=now))
    with store.session() as session:  # a record written by a newer cible, say
        session.execute(text("UPDATE online_deployments SET status = '{\"schema_version\": 99, \"x\": 1}' "
                             "WHERE endpoint = 'my-ep'"))
    tables = []
    publisher = RoutePublisher(Tokens("workspace-token"), publish=tables.append)
    with store.session() as session:
        publisher(session)
    (table,) = tables
    assert set(table.endpoints) == {"my-ep", "other-ep"}
    assert set(table.endpoints["other-ep"].deployments) == {"blue"}
    assert table.endpoints["my-ep"].deployments == {}  # its unreadable deployment alone is left out
