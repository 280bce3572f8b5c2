"""Compute instances over the REST API (no reconciler): create, start, stop, restart, snooze, terminal,
their state from the power and a hand-made node, jobs queued on a stopped one, and bad input."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.core.models.records import NodeInfo
from cible.server.store.rows import ComputeRow, NodeRow

ALICE = {"X-Cible-User": "alice"}
BOB = {"X-Cible-User": "bob"}
# One vCPU and 3.5 GB: a size every test machine can hold (its node runs on this machine).
INSTANCE = {"type": "computeinstance", "size": "Standard_DS1_v2", "idle_time_before_shutdown": "PT30M"}
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}
ACTIONS = ("start", "stop", "restart", "snooze", "terminal")


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client



def create(api: TestClient, name: str = "ci", body: dict | None = None, headers: dict | None = None) -> dict:
    response = api.put(f"/api/v1/computes/{name}", json=body or INSTANCE, headers=headers or ALICE)
    assert response.status_code == 200, response.text
    return response.json()


def add_node(api: TestClient, compute: str = "ci", *, state: str = "idle", job: str | None = None) -> str:
    """The instance's node as the reconciler would have made it."""
    now = api.app.state.clock.now()
    node_id = f"{compute}-n1"
    with api.app.state.store.session() as session:
        session.add(NodeRow(node_id=node_id, compute=compute, provider="local", state=state, job_name=job,
                            info=NodeInfo(size="Standard_DS1_v2", family="standardDSv2Family", vcpus=1,
                                          low_priority=False, price_per_hour=0.057),
                            created_at=now, updated_at=now, idle_since=now if state == "idle" else None))
    return node_id


def act(api: TestClient, name: str, action: str, body: dict | None = None, headers: dict | None = None):  # noqa: ANN201
    if action == "snooze" and body is None:
        body = {"minutes": 30}
    return api.post(f"/api/v1/computes/{name}:{action}", json=body, headers=headers or ALICE)


def state_of(api: TestClient, name: str = "ci") -> str:
    return api.get(f"/api/v1/computes/{name}").json()["state"]


# -- create ---------------------------------------------------------------------------------------


def test_an_instance_is_created_for_the_calling_user_and_listed_with_its_state(api: TestClient):
    created = create(api)
    assert (created["type"], created["state"], created["provisioning_state"]) == (
        "computeinstance", "Creating", "Succeeded")
    assert created["owner"] == "alice" and created["created_by"] == "alice"
    assert created["idle_time_before_shutdown"] == "PT30M"
    assert created["current_node_count"] == 0 and created["events"] == []
    listed = {c["name"]: c for c in api.get("/api/v1/computes").json()["value"]}
    assert set(listed) == {"local", "ci"}
    assert listed["ci"]["state"] == "Creating" and listed["ci"]["owner"] == "alice"


def test_create_on_behalf_of_assigns_the_instance_to_that_user(api: TestClient):
    body = {**INSTANCE, "create_on_behalf_of": {"user_tenant_id": "tenant", "user_object_id": "carol"}}
    created = create(api, body=body)
    assert created["owner"] == "carol" and created["created_by"] == "alice"
    assert api.get("/api/v1/computes/ci").json()["owner"] == "carol"


def test_an_instance_created_without_a_user_header_has_no_owner(api: TestClient):
    response = api.put("/api/v1/computes/ci", json=INSTANCE)
    assert response.status_code == 200
    assert response.json()["owner"] is None and response.json()["created_by"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"idle_time_before_shutdown_minutes": 0}, "idle_time_before_shutdown_minutes"),
        ({"idle_time_before_shutdown_minutes": 5000}, "idle_time_before_shutdown_minutes"),
        ({"idle_time_before_shutdown_minutes": "soon"}, "idle_time_before_shutdown_minutes"),
        ({"idle_time_before_shutdown": "30 minutes"}, "idle_time_before_shutdown"),
    ],
)
def test_bad_idle_shutdown_settings_are_422_naming_the_field(api: TestClient, changes: dict, field: str):
    response = api.put("/api/v1/computes/ci", json={**INSTANCE, **changes}, headers=ALICE)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert field in [problem["field"] for problem in error["details"]] and field in error["message"]
    assert api.get("/api/v1/computes/ci").status_code == 404


def _schedule(trigger: dict) -> dict:
    return {**INSTANCE, "schedules": {"compute_start_stop": [{"action": "stop", "trigger": trigger}]}}


def test_a_schedule_in_an_unknown_time_zone_is_refused_naming_the_zone(api: TestClient):
    body = _schedule({"type": "cron", "expression": "0 18 * * *", "time_zone": "Mars/Olympus Mons"})
    response = api.put("/api/v1/computes/ci", json=body, headers=ALICE)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["details"] == {"field": "schedules"}
    assert "schedules.compute_start_stop[0].trigger.time_zone" in error["message"]
    assert "unknown time zone 'Mars/Olympus Mons'" in error["message"]
    assert api.get("/api/v1/computes/ci").status_code == 404


@pytest.mark.parametrize(("expression", "status"), [("0 18 * *", 422), ("99 18 * * *", 400)])
def test_a_bad_cron_expression_is_refused_with_its_field_path(api: TestClient, expression: str, status: int):
    response = api.put("/api/v1/computes/ci", json=_schedule({"type": "cron", "expression": expression}),
                       headers=ALICE)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert "schedules.compute_start_stop[0].trigger.expression" in error["message"]
    assert repr(expression) in error["message"]
    assert api.get("/api/v1/computes/ci").status_code == 404


def test_a_valid_schedule_shows_its_next_firing(api: TestClient):
    created = create(api, body=_schedule({"type": "cron", "expression": "0 18 * * *",
                                          "time_zone": "W. Europe Standard Time"}))
    # 18:00 in Berlin on 2026-01-01 (the frozen clock's day, winter: UTC+1) is 17:00 UTC.
    assert created["next_scheduled"] == {"action": "stop", "at": "2026-01-01T17:00:00+00:00"}


# -- power: start, stop, restart -------------------------------------------------------------------


def test_starting_an_instance_that_is_on_is_a_conflict(api: TestClient):
    create(api)
    response = act(api, "ci", "start")
    assert response.status_code == 409
    assert "already on (Creating)" in error_of(response)["message"]


def test_stop_then_start_changes_the_state_and_repeats_are_conflicts(api: TestClient):
    create(api)
    stopped = act(api, "ci", "stop")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"name": "ci", "power": "off", "requested": "stop"}
    shown = api.get("/api/v1/computes/ci").json()
    assert shown["state"] == "Stopped"
    assert "stop requested by alice" in shown["power_reason"]
    again = act(api, "ci", "stop")
    assert again.status_code == 409 and "already stopped" in error_of(again)["message"]

    started = act(api, "ci", "start")
    assert started.status_code == 200 and started.json()["power"] == "on"
    assert state_of(api) == "Creating"  # its node was never ready: Azure says Creating, not Starting


def test_an_instance_that_was_ready_before_says_starting_when_started_again(api: TestClient):
    create(api)
    add_node(api)
    assert state_of(api) == "Running"
    assert act(api, "ci", "stop").status_code == 200
    assert state_of(api) == "Stopping"  # the node is still there until the reconciler removes it
    with api.app.state.store.session() as session:
        node = session.get(NodeRow, "ci-n1")
        node.state = "removed"
        row = session.get(ComputeRow, "ci")
        row.observed = row.observed.model_copy(
            update={"instance": row.observed.instance.model_copy(update={"ever_ready": True})})
    assert state_of(api) == "Stopped"
    assert act(api, "ci", "start").status_code == 200
    assert state_of(api) == "Starting"


def test_restart_shows_restarting(api: TestClient):
    create(api)
    add_node(api)
    response = act(api, "ci", "restart", headers=BOB)
    assert response.status_code == 200 and response.json()["power"] == "restart"
    shown = api.get("/api/v1/computes/ci").json()
    assert shown["state"] == "Restarting" and "restart requested by bob" in shown["power_reason"]


def test_stop_and_restart_refuse_while_a_job_runs_on_the_node(api: TestClient):
    create(api)
    add_node(api, state="running", job="j1")
    assert state_of(api) == "JobRunning"
    for action in ("stop", "restart"):
        response = act(api, "ci", action)
        assert response.status_code == 409, response.text
        message = error_of(response)["message"]
        assert "job j1 is running on compute instance ci" in message and "cible job cancel -n j1" in message
    assert state_of(api) == "JobRunning"


# -- snooze and terminal ---------------------------------------------------------------------------


def test_snoozing_a_running_instance_postpones_its_shutdown_and_records_an_event(api: TestClient):
    create(api)
    add_node(api)
    now = api.app.state.clock.now()
    response = act(api, "ci", "snooze", {"minutes": 45})
    assert response.status_code == 200, response.text
    until = datetime.fromisoformat(response.json()["snoozed_until"])
    assert until >= now + timedelta(minutes=45)
    shown = api.get("/api/v1/computes/ci").json()
    assert datetime.fromisoformat(shown["snoozed_until"]) == until
    assert [e["kind"] for e in shown["events"]] == ["Snoozed"]
    assert "postponed by 45 min" in shown["events"][0]["message"]
    # Idle for 30 min would stop it at now+30; the snooze moves the stop to its own end.
    assert shown["idleness"]["idle"] is True
    assert datetime.fromisoformat(shown["idleness"]["stops_at"]) == until


def test_a_snooze_postpones_from_when_compute_show_says_it_would_stop(api: TestClient):
    create(api)
    add_node(api)
    stops_at = datetime.fromisoformat(api.get("/api/v1/computes/ci").json()["idleness"]["stops_at"])
    assert stops_at == api.app.state.clock.now() + timedelta(minutes=30)
    until = datetime.fromisoformat(act(api, "ci", "snooze", {"minutes": 45}).json()["snoozed_until"])
    assert until == stops_at + timedelta(minutes=45)


@pytest.mark.parametrize("body", [{"minutes": 0}, {"minutes": -5}, {"minutes": 5000}, {"minutes": "half an hour"},
                                  {}, {"minutes": None}])
def test_bad_snooze_durations_are_422(api: TestClient, body: dict):
    create(api)
    response = act(api, "ci", "snooze", body)
    assert response.status_code == 422, response.text
    assert "minutes" in [problem["field"] for problem in error_of(response)["details"]]
    assert api.get("/api/v1/computes/ci").json()["snoozed_until"] is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"'])
def test_non_finite_snooze_durations_are_422(api: TestClient, literal: str):
    """Python's JSON reader takes NaN and Infinity: the body model must still refuse them (not a 500)."""
    create(api)
    add_node(api)
    response = api.post("/api/v1/computes/ci:snooze", content=f'{{"minutes": {literal}}}',
                        headers={**ALICE, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "minutes" in [problem["field"] for problem in error_of(response)["details"]]
    assert api.get("/api/v1/computes/ci").json()["snoozed_until"] is None


def test_snoozing_a_stopped_instance_is_a_conflict(api: TestClient):
    create(api)
    act(api, "ci", "stop")
    response = act(api, "ci", "snooze")
    assert response.status_code == 409
    assert "not running" in error_of(response)["message"]


def test_a_terminal_needs_a_ready_node(api: TestClient):
    create(api)
    response = act(api, "ci", "terminal")
    assert response.status_code == 409
    message = error_of(response)["message"]
    assert "start it first" in message and "cible compute start ci" in message
    add_node(api, state="preparing")
    assert act(api, "ci", "terminal").status_code == 409


def test_a_terminal_on_a_ready_node_says_where_and_warns_a_user_who_is_not_the_owner(api: TestClient):
    create(api)
    node_id = add_node(api)
    mine = act(api, "ci", "terminal")
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert (body["node_id"], body["owner"], body["user"], body["note"]) == (node_id, "alice", "alice", None)
    assert body["root"].endswith(node_id) and body["home"]
    theirs = act(api, "ci", "terminal", headers=BOB).json()
    assert "assigned to alice" in theirs["note"]


# -- which computes the actions apply to -----------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_instance_actions_on_a_cluster_are_refused_on_its_type(api: TestClient, action: str):
    assert api.put("/api/v1/computes/cpu", json=CLUSTER).status_code == 200
    response = act(api, "cpu", action)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["details"] == {"field": "type"}
    assert error["message"] == ("compute 'cpu' is of type amlcompute; start, stop, restart, snooze and connect-ssh "
                                "are for compute instances (type computeinstance)")


def test_cluster_only_actions_on_an_instance_name_its_type(api: TestClient):
    create(api)
    update = api.patch("/api/v1/computes/ci", json={"max_instances": 3})
    assert update.status_code == 400
    assert error_of(update)["message"] == ("compute 'ci' is of type computeinstance; only amlcompute clusters "
                                           "can be updated")


@pytest.mark.parametrize("action", ACTIONS)
def test_instance_actions_on_an_unknown_compute_are_404(api: TestClient, action: str):
    response = act(api, "nope", action)
    assert response.status_code == 404
    assert "'nope' does not exist" in error_of(response)["message"]


def test_instance_actions_on_local_say_it_is_not_an_instance(api: TestClient):
    assert api.get("/api/v1/computes/local").status_code == 200
    response = act(api, "local", "stop")
    assert response.status_code == 400, response.text
    assert error_of(response)["details"] == {"field": "type"}


# -- jobs and deletion -----------------------------------------------------------------------------


def test_a_job_on_a_stopped_instance_queues_and_says_how_to_start_it(api: TestClient):
    create(api)
    act(api, "ci", "stop")
    response = api.put("/api/v1/jobs/j", json={"command": "echo hi", "compute": "azureml:ci"}, headers=ALICE)
    assert response.status_code == 200, response.text
    job = api.get("/api/v1/jobs/j").json()
    assert job["status"] == "Queued" and job["target"] == "ci" and job["created_by"] == "alice"
    assert "compute instance ci is Stopped" in job["queue_reason"]
    assert "cible compute start ci" in job["queue_reason"]
    too_many = api.put("/api/v1/jobs/k", json={"command": "echo", "compute": "ci", "resources": {"instance_count": 2}})
    assert too_many.status_code == 400
    assert error_of(too_many)["details"] == {"field": "resources.instance_count"}


def test_an_instance_without_a_live_node_is_deleted_at_once(api: TestClient):
    create(api)
    act(api, "ci", "stop")
    assert api.delete("/api/v1/computes/ci").status_code == 204
    assert api.get("/api/v1/computes/ci").status_code == 404
    assert [c["name"] for c in api.get("/api/v1/computes").json()["value"]] == ["local"]
    create(api)  # the name is free again


def test_an_instance_with_a_live_node_drains_and_refuses_actions_meanwhile(api: TestClient):
    create(api)
    add_node(api)
    draining = api.delete("/api/v1/computes/ci")
    assert draining.status_code == 202 and draining.json()["state"] == "Deleting"
    for action in ("start", "stop", "snooze"):
        response = act(api, "ci", action)
        assert response.status_code == 409 and "being deleted" in error_of(response)["message"]


# -- bad input never gives a 500 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/computes/ci:snooze", "thirty"),
        ("post", "/api/v1/computes/ci:snooze", [30]),
        ("post", "/api/v1/computes/ci:snooze", None),
        ("put", "/api/v1/computes/ci2", ["computeinstance"]),
        ("put", "/api/v1/computes/ci2", {"type": "computeinstance", "size": 42}),
        ("put", "/api/v1/computes/ci2", {"type": "computeinstance", "schedules": "nightly"}),
        ("put", "/api/v1/computes/ci2", {"type": "computeinstance", "schedules": {"compute_start_stop": [{}]}}),
        ("put", "/api/v1/computes/ci2", {"type": "computeinstance", "create_on_behalf_of": "carol"}),
        ("put", "/api/v1/quotas/total", {"vcpus": "lots"}),
        ("post", "/api/v1/quotas/total/requests", {"vcpus": {"n": 4}}),
        ("post", "/api/v1/quota-requests/not-a-number:deny", None),
    ],
)
def test_malformed_bodies_are_client_errors_never_500(api: TestClient, method: str, path: str, body):  # noqa: ANN001
    create(api)
    response = api.request(method.upper(), path, json=body, headers=ALICE)
    assert 400 <= response.status_code < 500, response.text
    assert error_of(response)["message"]
    assert api.get("/api/v1/computes/ci2").status_code == 404
