"""Quotas, quota requests and cost over the REST API: Azure's list-usage rows, computes and serverless
jobs refused when they could never fit, and exact node costs from a hand-made node history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient

from cible.core import catalog
from cible.core.models.records import NodeInfo
from cible.core.planning.costs import LOW_PRIORITY_FACTOR
from cible.server.store.rows import JobRow, NodeRow, NodeStateRow

ALICE = {"X-Cible-User": "alice"}
BOB = {"X-Cible-User": "bob"}
FAMILY = "standardDSv2Family"  # Standard_DS1_v2 (1 vCPU), DS2_v2 (2), DS3_v2 (4)
# One vCPU and 3.5 GB: a size every test machine can hold (nodes run on this machine).
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}
SERVERLESS_JOB = {"command": "echo", "resources": {"instance_count": 3, "instance_type": "Standard_DS1_v2"}}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    # The installation default compute (the test session sets CIBLE_DEFAULT_COMPUTE=local): serverless.
    with api_client(migrated_db_url, tmp_path, default_compute="serverless") as client:
        yield client



def usage_rows(api: TestClient) -> dict[str, dict]:
    response = api.get("/api/v1/computes:usage")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["value"])
    return {row["name"]["value"]: row for row in body["value"]}


# -- list-usage and setting quotas -------------------------------------------------------------


def test_usage_lists_azure_rows_for_every_catalog_family_unlimited_by_default(api: TestClient):
    body = api.get("/api/v1/computes:usage").json()
    rows = body["value"]
    names = [row["name"]["value"] for row in rows]
    # Azure's order: the dedicated total first, the low-priority total last, a row per family between.
    assert names[0] == "Total Cluster Dedicated Regional vCPUs"
    assert names[-1] == "Total Cluster LowPriority Regional vCPUs"
    families = {size.family for size in catalog.all_sizes()}
    assert families <= set(names) and len(rows) == len(families) + 2
    for row in rows:
        assert row["unit"] == "Count" and row["currentValue"] == 0 and row["limit"] == -1
        assert {"value", "localizedValue"} <= set(row["name"])
    assert usage_rows(api)[FAMILY]["name"]["localizedValue"] == "Standard DSv2 Family Cluster Dedicated vCPUs"


def test_a_family_quota_shows_as_its_usage_row_limit_and_null_removes_it(api: TestClient):
    put = api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 8})
    assert put.status_code == 200, put.text
    assert put.json()["quotas"] == {FAMILY: 8}
    rows = usage_rows(api)
    assert rows[FAMILY]["limit"] == 8
    assert rows["Total Cluster Dedicated Regional vCPUs"]["limit"] == -1  # only the family was capped
    assert api.get("/api/v1/quotas").json()["quotas"] == {FAMILY: 8}

    removed = api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": None})
    assert removed.status_code == 200 and removed.json()["quotas"] == {}
    assert usage_rows(api)[FAMILY]["limit"] == -1
    # Removing a quota that is not set is not an error.
    assert api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": None}).status_code == 200


def test_quota_scopes_are_case_insensitive_and_stored_under_their_canonical_name(api: TestClient):
    assert api.put("/api/v1/quotas/STANDARDdsv2FAMILY", json={"vcpus": 4}).status_code == 200
    assert api.put("/api/v1/quotas/TOTAL", json={"vcpus": 10}).status_code == 200
    assert api.put("/api/v1/quotas/Low_Priority", json={"vcpus": 6}).status_code == 200
    assert api.get("/api/v1/quotas").json()["quotas"] == {FAMILY: 4, "total": 10, "low_priority": 6}
    rows = usage_rows(api)
    assert rows[FAMILY]["limit"] == 4
    assert rows["Total Cluster Dedicated Regional vCPUs"]["limit"] == 10
    assert rows["Total Cluster LowPriority Regional vCPUs"]["limit"] == 6


def test_an_unknown_quota_scope_is_refused_naming_the_field_with_a_suggestion(api: TestClient):
    response = api.put("/api/v1/quotas/standardDSv2Fam", json={"vcpus": 8})
    assert response.status_code == 400
    error = error_of(response)
    assert error["details"] == {"field": "scope"}
    assert "'standardDSv2Fam' is not a quota" in error["message"]
    assert f"did you mean {FAMILY}" in error["message"]
    assert api.get("/api/v1/quotas").json()["quotas"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"vcpus": -1}, "vcpus"),
        ({"vcpus": "eight"}, "vcpus"),
        ({"vcpus": 2.5}, "vcpus"),
        ({}, "vcpus"),
        ({"vcpus": [8]}, "vcpus"),
    ],
)
def test_malformed_quota_values_are_422_naming_the_field(api: TestClient, body: dict, field: str):
    response = api.put(f"/api/v1/quotas/{FAMILY}", json=body)
    assert response.status_code == 422, response.text
    assert field in [problem["field"] for problem in error_of(response)["details"]]
    assert api.get("/api/v1/quotas").json()["quotas"] == {}


def test_usage_counts_the_vcpus_of_live_nodes_only(api: TestClient):
    api.put("/api/v1/computes/cpu", json=CLUSTER)
    now = api.app.state.clock.now()
    info = NodeInfo(size="Standard_DS3_v2", family=FAMILY, vcpus=4, low_priority=False, price_per_hour=0.229)
    with api.app.state.store.session() as session:
        for node_id, state, low in (("n1", "idle", False), ("n2", "running", True), ("n3", "removed", False)):
            session.add(NodeRow(node_id=node_id, compute="cpu", provider="local", state=state,
                                info=info.model_copy(update={"low_priority": low}), created_at=now, updated_at=now))
    rows = usage_rows(api)
    assert rows[FAMILY]["currentValue"] == 4  # the low-priority node counts only against low_priority
    assert rows["Total Cluster Dedicated Regional vCPUs"]["currentValue"] == 4
    assert rows["Total Cluster LowPriority Regional vCPUs"]["currentValue"] == 4
    assert rows["standardDDSv4Family"]["currentValue"] == 0


# -- quota increase requests ---------------------------------------------------------------------


def test_a_quota_request_is_pending_then_approved_sets_the_quota(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 4})
    asked = api.post(f"/api/v1/quotas/{FAMILY.lower()}/requests", json={"vcpus": 16, "reason": "training run"},
                     headers=ALICE)
    assert asked.status_code == 200, asked.text
    request = asked.json()
    assert (request["scope"], request["status"], request["requested_by"]) == (FAMILY, "Pending", "alice")
    assert (request["current_vcpus"], request["requested_vcpus"], request["reason"]) == (4, 16, "training run")
    assert request["decided_at"] is None and request["decided_by"] is None

    approved = api.post(f"/api/v1/quota-requests/{request['id']}:approve", headers=BOB)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("Approved", "bob")
    assert approved.json()["decided_at"] is not None
    shown = api.get("/api/v1/quotas").json()
    assert shown["quotas"] == {FAMILY: 16}
    assert [r["status"] for r in shown["value"]] == ["Approved"]
    assert usage_rows(api)[FAMILY]["limit"] == 16

    again = api.post(f"/api/v1/quota-requests/{request['id']}:approve", headers=BOB)
    assert again.status_code == 409 and "already approved" in error_of(again)["message"]
    assert api.post(f"/api/v1/quota-requests/{request['id']}:deny").status_code == 409


def test_a_denied_request_leaves_the_quota_unchanged_and_both_are_listed(api: TestClient):
    first = api.post("/api/v1/quotas/total/requests", json={"vcpus": 32}, headers=ALICE).json()
    second = api.post("/api/v1/quotas/low_priority/requests", json={"vcpus": 8, "reason": "spot"},
                      headers=ALICE).json()
    assert first["current_vcpus"] is None  # no quota yet: no limit, but a request still records one
    denied = api.post(f"/api/v1/quota-requests/{first['id']}:deny", headers=BOB)
    assert denied.status_code == 200, denied.text
    assert (denied.json()["status"], denied.json()["decided_by"]) == ("Denied", "bob")
    assert api.post(f"/api/v1/quota-requests/{first['id']}:approve").status_code == 409
    shown = api.get("/api/v1/quotas").json()
    assert shown["quotas"] == {}
    assert [(r["id"], r["scope"], r["status"]) for r in shown["value"]] == [
        (first["id"], "total", "Denied"), (second["id"], "low_priority", "Pending")]


def test_asking_for_no_more_than_the_current_quota_is_refused(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 8})
    for vcpus in (8, 4):
        response = api.post(f"/api/v1/quotas/{FAMILY}/requests", json={"vcpus": vcpus}, headers=ALICE)
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["details"] == {"field": "vcpus"} and "already 8" in error["message"]
    assert api.get("/api/v1/quotas").json()["value"] == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/quotas/total/requests", {"vcpus": 0}, 422),
        ("/api/v1/quotas/total/requests", {"vcpus": "lots"}, 422),
        ("/api/v1/quotas/total/requests", {"reason": "no vcpus"}, 422),
        ("/api/v1/quotas/nofamily/requests", {"vcpus": 4}, 400),
        ("/api/v1/quota-requests/abc:approve", None, 422),
        ("/api/v1/quota-requests/999:approve", None, 404),
        ("/api/v1/quota-requests/999:deny", None, 404),
    ],
)
def test_bad_quota_requests_and_decisions_are_refused_without_a_500(api: TestClient, path: str, body, status: int):  # noqa: ANN001
    response = api.post(path, json=body, headers=ALICE)
    assert response.status_code == status, response.text
    error_of(response)
    if status == 404:
        assert "999" in error_of(response)["message"]


# -- computes that could never fit ---------------------------------------------------------------


def test_a_cluster_whose_minimum_exceeds_a_family_quota_is_refused_on_min_instances(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 2})
    response = api.put("/api/v1/computes/c", json={**CLUSTER, "min_instances": 3, "max_instances": 3})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["details"] == {"field": "min_instances"}
    assert f"{FAMILY} dedicated vCPU quota of 2" in error["message"] and "needs 3 vCPUs" in error["message"]
    assert api.get("/api/v1/computes/c").status_code == 404
    # A minimum that fits, or none, is fine: the rest of max_instances waits for quota at run time.
    assert api.put("/api/v1/computes/c", json={**CLUSTER, "min_instances": 2, "max_instances": 5}).status_code == 200


def test_the_total_dedicated_quota_also_refuses_a_cluster(api: TestClient):
    api.put("/api/v1/quotas/total", json={"vcpus": 1})
    response = api.put("/api/v1/computes/c", json={**CLUSTER, "min_instances": 2})
    assert response.status_code == 400
    assert "total dedicated vCPU quota of 1" in error_of(response)["message"]


def test_an_instance_beyond_the_family_quota_is_refused_on_size(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 2})
    # overcommit: the host's own size check must not be what refuses it.
    body = {"type": "computeinstance", "size": "Standard_DS3_v2", "cible": {"overcommit": True}}
    response = api.put("/api/v1/computes/ci", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["details"] == {"field": "size"}
    assert "compute instance ci needs 4 vCPUs" in error["message"] and "quota of 2" in error["message"]
    small = api.put("/api/v1/computes/ci", json={"type": "computeinstance", "size": "Standard_DS1_v2"})
    assert small.status_code == 200, small.text


def test_a_low_priority_cluster_is_checked_only_against_the_low_priority_quota(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 2})
    api.put("/api/v1/quotas/total", json={"vcpus": 2})
    low = {**CLUSTER, "tier": "low_priority", "min_instances": 3, "max_instances": 3}
    accepted = api.put("/api/v1/computes/spot", json=low)
    assert accepted.status_code == 200, accepted.text
    api.put("/api/v1/quotas/low_priority", json={"vcpus": 2})
    refused = api.put("/api/v1/computes/spot2", json=low)
    assert refused.status_code == 400
    assert error_of(refused)["details"] == {"field": "min_instances"}
    assert "low-priority vCPU quota of 2" in error_of(refused)["message"]


def test_raising_min_instances_beyond_a_quota_by_update_is_refused_like_at_create(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 2})
    assert api.put("/api/v1/computes/c", json={**CLUSTER, "max_instances": 3}).status_code == 200
    response = api.patch("/api/v1/computes/c", json={"min_instances": 3})
    assert response.status_code == 400, response.text
    assert error_of(response)["details"] == {"field": "min_instances"}


# -- serverless jobs ------------------------------------------------------------------------------


def test_a_serverless_job_beyond_a_quota_is_refused_on_instance_count(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 2})
    response = api.put("/api/v1/jobs/j", json=SERVERLESS_JOB, headers=ALICE)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["details"] == {"field": "resources.instance_count"}
    assert "serverless job j (3 x Standard_DS1_v2) needs 3 vCPUs" in error["message"]
    assert api.get("/api/v1/jobs/j").status_code == 404
    fits = api.put("/api/v1/jobs/j", json={**SERVERLESS_JOB, "resources": {**SERVERLESS_JOB["resources"],
                                                                          "instance_count": 2}})
    assert fits.status_code == 200, fits.text


@pytest.mark.parametrize(
    ("instance_type", "needle"),
    [
        ("Standard_Nope_v9", "Standard_Nope_v9"),
        ("Standard_D64ds_v4", "pick a smaller size"),  # 256 GB: more memory than any test machine
    ],
)
def test_a_serverless_job_with_an_unusable_instance_type_is_refused_on_that_field(api: TestClient,
                                                                                  instance_type: str, needle: str):
    body = {"command": "echo", "resources": {"instance_type": instance_type}}
    response = api.put("/api/v1/jobs/j", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["details"] == {"field": "resources.instance_type"}
    assert error["message"].startswith("resources.instance_type: ") and needle in error["message"]


def test_a_spot_serverless_job_is_low_priority_and_priced_at_the_discount(api: TestClient):
    api.put(f"/api/v1/quotas/{FAMILY}", json={"vcpus": 2})  # dedicated quotas do not apply to spot
    body = {**SERVERLESS_JOB, "queue_settings": {"job_tier": "spot"}}
    response = api.put("/api/v1/jobs/j", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    job = api.get("/api/v1/jobs/j").json()
    assert job["status"] == "Queued" and job["compute"] == "serverless"
    assert job["serverless"] == {"size": "Standard_DS1_v2", "tier": "low_priority", "max_instances": 3,
                                 "live_nodes": 0}
    price = catalog.get_size("Standard_DS1_v2").price_per_hour
    assert job["cost"]["estimate"]["per_hour"] == pytest.approx(price * LOW_PRIORITY_FACTOR * 3)
    assert job["cost"]["estimate"]["currency"] == "USD"
    assert job["queue_reason"].startswith("waiting for its serverless nodes")

    api.put("/api/v1/quotas/low_priority", json={"vcpus": 2})
    refused = api.put("/api/v1/jobs/k", json=body)
    assert refused.status_code == 400 and "low-priority vCPU quota of 2" in error_of(refused)["message"]


def test_a_dedicated_serverless_job_is_priced_at_the_catalog_price(api: TestClient):
    job = api.put("/api/v1/jobs/j", json={**SERVERLESS_JOB, "limits": {"timeout": 1800}}).json()
    price = catalog.get_size("Standard_DS1_v2").price_per_hour
    assert job["serverless"]["tier"] == "dedicated"
    assert job["cost"]["estimate"]["per_hour"] == pytest.approx(price * 3)
    assert job["cost"]["estimate"]["max"] == pytest.approx(price * 3 / 2)


def test_compute_serverless_is_the_same_as_no_compute_and_its_pool_is_never_listed(api: TestClient):
    omitted = api.put("/api/v1/jobs/a", json=SERVERLESS_JOB).json()
    named = api.put("/api/v1/jobs/b", json={**SERVERLESS_JOB, "compute": "serverless"}).json()
    for job, name in ((omitted, "a"), (named, "b")):
        assert job["compute"] == "serverless" and job["target"] == f"serverless:{name}"
        assert job["serverless"]["size"] == "Standard_DS1_v2" and job["serverless"]["tier"] == "dedicated"
    assert omitted["cost"]["estimate"] == named["cost"]["estimate"]
    assert any("no compute was given" in w for w in omitted["warnings"])
    assert [c["name"] for c in api.get("/api/v1/computes").json()["value"]] == ["local"]


def test_the_submit_response_of_a_serverless_job_gives_the_same_queue_reason_as_get(api: TestClient):
    submitted = api.put("/api/v1/jobs/j", json=SERVERLESS_JOB).json()
    assert submitted["queue_reason"] == api.get("/api/v1/jobs/j").json()["queue_reason"]
    assert "no longer exists" not in submitted["queue_reason"]


def test_a_serverless_job_is_not_warned_that_its_instance_type_and_tier_are_ignored(api: TestClient):
    job = api.put("/api/v1/jobs/j", json={**SERVERLESS_JOB, "queue_settings": {"job_tier": "spot"}}).json()
    assert job["serverless"]["tier"] == "low_priority"  # they were acted on
    assert not [w for w in job["warnings"] if "not acted on" in w], job["warnings"]


# -- cost ------------------------------------------------------------------------------------------


@pytest.fixture
def costed(api: TestClient) -> TestClient:
    """Cluster `cpu` (bob's) with one node at 3.6/h (0.001/s) that lived 225 s: preparing 30 s, idle 60 s,
    running alice's job jobA 120 s, idle 10 s, leaving 5 s, then removed."""
    assert api.put("/api/v1/computes/cpu", json=CLUSTER, headers=BOB).status_code == 200
    now = api.app.state.clock.now()
    t0 = now - timedelta(hours=1)
    history = [(None, "preparing", 0, None), ("preparing", "idle", 30, None), ("idle", "running", 90, "jobA"),
               ("running", "idle", 210, None), ("idle", "leaving", 220, None), ("leaving", "removed", 225, None)]
    with api.app.state.store.session() as session:
        session.add(NodeRow(node_id="n1", compute="cpu", provider="local", state="removed",
                            info=NodeInfo(size="Standard_DS1_v2", family=FAMILY, vcpus=1, low_priority=False,
                                          price_per_hour=3.6), created_at=t0, updated_at=t0 + timedelta(seconds=225)))
        session.add(JobRow(name="jobA", display_name="jobA", experiment_name="Default", status="Completed",
                           compute="azureml:cpu", target="cpu", instance_count=1,
                           spec={"type": "command", "command": "echo"}, warnings=[], created_by="alice",
                           created_at=t0, updated_at=t0 + timedelta(seconds=210),
                           started_at=t0 + timedelta(seconds=90), ended_at=t0 + timedelta(seconds=210)))
        session.flush()
        for before, after, offset, job in history:
            session.add(NodeStateRow(node_id="n1", from_state=before, to_state=after, job_name=job,
                                     at=t0 + timedelta(seconds=offset)))
    api.t0 = t0  # type: ignore[attr-defined]
    return api


def lines_of(report: dict) -> dict[str, tuple[float, float]]:
    return {line["key"]: (line["cost"], line["idle"]) for line in report["value"]}


def test_cost_by_compute_is_the_nodes_whole_life_at_its_price(costed: TestClient):
    report = costed.get("/api/v1/costs", params={"by": "compute"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["by"], body["currency"], body["since"]) == ("compute", "USD", None)
    assert body["total"] == pytest.approx(0.225)
    assert lines_of(body) == {"cpu": (pytest.approx(0.225), pytest.approx(0.07))}
    assert body["value"][0]["node_hours"] == pytest.approx(0.0625)
    assert costed.get("/api/v1/costs").json()["by"] == "compute"  # the default grouping


def test_cost_by_job_splits_the_job_from_idle_and_overhead(costed: TestClient):
    body = costed.get("/api/v1/costs", params={"by": "job"}).json()
    assert body["total"] == pytest.approx(0.225)
    assert [line["key"] for line in body["value"]] == ["jobA", "(idle and overhead)"]  # most expensive first
    assert lines_of(body) == {"jobA": (pytest.approx(0.12), 0.0),
                              "(idle and overhead)": (pytest.approx(0.105), pytest.approx(0.07))}


def test_cost_by_user_charges_the_job_to_its_submitter_and_the_rest_to_the_compute_owner(costed: TestClient):
    body = costed.get("/api/v1/costs", params={"by": "user"}).json()
    assert lines_of(body) == {"alice": (pytest.approx(0.12), 0.0), "bob": (pytest.approx(0.105), pytest.approx(0.07))}


def test_cost_since_clips_the_history(costed: TestClient):
    since = (costed.t0 + timedelta(seconds=60)).isoformat()  # type: ignore[attr-defined]
    body = costed.get("/api/v1/costs", params={"by": "job", "since": since}).json()
    assert body["since"] is not None
    # From t0+60: idle 30 s, jobA 120 s, idle 10 s, leaving 5 s.
    assert body["total"] == pytest.approx(0.165)
    assert lines_of(body) == {"jobA": (pytest.approx(0.12), 0.0),
                              "(idle and overhead)": (pytest.approx(0.045), pytest.approx(0.04))}
    after = (costed.t0 + timedelta(seconds=300)).isoformat()  # type: ignore[attr-defined]
    assert costed.get("/api/v1/costs", params={"since": after}).json()["total"] == 0


@pytest.mark.parametrize(("params", "status", "field"), [({"by": "nonsense"}, 400, "by"),
                                                         ({"since": "yesterday"}, 422, "query.since")])
def test_bad_cost_report_parameters_are_refused_naming_the_field(costed: TestClient, params: dict, status: int,
                                                                 field: str):
    response = costed.get("/api/v1/costs", params=params)
    assert response.status_code == status, response.text
    details = error_of(response)["details"]
    assert (details == {"field": field}) if status == 400 else field in [p["field"] for p in details]


def test_compute_show_and_job_show_carry_their_cost(costed: TestClient):
    compute = costed.get("/api/v1/computes/cpu").json()
    assert compute["created_by"] == "bob"
    assert compute["cost"]["so_far"] == pytest.approx(0.225) and compute["cost"]["idle"] == pytest.approx(0.07)
    assert compute["cost"]["node_hours"] == pytest.approx(0.0625)
    job = costed.get("/api/v1/jobs/jobA").json()
    assert job["status"] == "Completed"
    assert job["cost"]["actual"] == pytest.approx(0.12) and "so_far" not in job["cost"]
