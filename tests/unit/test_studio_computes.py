"""The studio's COMPUTES pages in-process: the list (computes, quota usage, cost by compute), a
cluster's page (nodes, node-state timeline, jobs), an instance's page and its power actions
(CSRF, refusals in an alert, the polled state fragment), and 404 pages."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.core.errors import InvalidRequestError
from cible.core.models.records import NodeInfo
from cible.server.store.rows import NodeRow, NodeStateRow
from cible.server.studio.node_charts import idle_explanation, instance_actions, node_timeline_rows, quota_rows

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
INSTANCE = {"type": "computeinstance", "size": "Standard_DS1_v2", "idle_time_before_shutdown_minutes": 30}
HTMX = {"HX-Request": "true"}


@pytest.fixture
def api(tmp_path) -> TestClient:
    with api_client(f"sqlite:///{tmp_path}/db", tmp_path) as client:
        yield client


def sign_in(api: TestClient) -> str:
    """Open a studio session in the client's cookie jar; returns the session's CSRF token."""
    code = api.post("/api/v1/studio:sign-in-code").json()["code"]
    assert api.get(f"/sign-in?code={code}", follow_redirects=False).status_code == 303
    page = api.get("/computes")
    assert page.status_code == 200, page.text
    return re.search(r'data-csrf="([^"]+)"', page.text).group(1)


def create(api: TestClient, name: str, body: dict) -> None:
    response = api.put(f"/api/v1/computes/{name}", json=body)
    assert response.status_code == 200, response.text


def add_node(api: TestClient, compute: str, node_id: str, history: list[tuple[str, float]],
             job: str | None = None) -> None:
    """A node as the reconciler would have left it, with its state changes (state, minutes ago)."""
    now = api.app.state.clock.now()
    state = history[-1][0]
    with api.app.state.store.session() as session:
        session.add(NodeRow(node_id=node_id, compute=compute, provider="local", state=state, job_name=job,
                            info=NodeInfo(size="Standard_DS1_v2", family="standardDSv2Family", vcpus=1,
                                          price_per_hour=0.057),
                            created_at=now - timedelta(minutes=history[0][1]), updated_at=now,
                            idle_since=now if state == "idle" else None))
        session.flush()
        previous = None
        for to_state, ago in history:
            session.add(NodeStateRow(node_id=node_id, from_state=previous, to_state=to_state, reason="test",
                                     at=now - timedelta(minutes=ago), job_name=job if to_state == "running" else None))
            previous = to_state


def test_pages_and_actions_need_a_session(api: TestClient):
    create(api, "ci", INSTANCE)
    for path in ("/computes", "/computes/ci", "/computes/ci/state"):
        response = api.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/sign-in?next="), path
    assert api.get("/computes/ci/state", headers=HTMX).headers["HX-Redirect"].startswith("/sign-in")
    assert api.post("/computes/ci/stop", follow_redirects=False).status_code == 303
    assert api.get("/api/v1/computes/ci").json()["state"] == "Creating"


def test_the_list_shows_every_compute_quota_usage_and_cost(api: TestClient):
    create(api, "cpu-cluster", CLUSTER)
    create(api, "ci", INSTANCE)
    add_node(api, "cpu-cluster", "cpu-n1", [("preparing", 90), ("idle", 85)])
    assert api.put("/api/v1/quotas/standardDSv2Family", json={"vcpus": 4}).status_code == 200
    sign_in(api)
    page = api.get("/computes")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="computes-table"' in html
    rows = re.findall(r'data-testid="compute-row" data-compute="([^"]+)"', html)
    assert rows == ["local", "ci", "cpu-cluster"]
    assert 'href="/computes/cpu-cluster"' in html and "scale down after 2m 00s idle" in html
    assert "shut down after 30m 00s idle" in html and "Creating" in html
    quota = html[html.index('id="quota-usage"'):html.index('id="cost-by-compute"')]
    assert "Total Cluster Dedicated Regional vCPUs" in quota
    family = re.search(r'data-scope="standardDSv2Family">(.*?)</tr>', quota, re.DOTALL).group(1)
    assert re.search(r'<td class="num">1</td>\s*<td class="num">4</td>', family) and "25.0%" in family
    cost = html[html.index('id="cost-by-compute"'):]
    assert 'data-testid="cost-row"' in cost and 'href="/computes/cpu-cluster"' in cost
    assert "$0.08" in cost  # the node's billed time (85 min idle) at $0.057 an hour


def test_a_cluster_page_shows_its_settings_nodes_timeline_and_jobs(api: TestClient):
    create(api, "cpu-cluster", CLUSTER)
    add_node(api, "cpu-cluster", "cpu-n1", [("preparing", 30), ("idle", 25), ("running", 10)], job="j1")
    add_node(api, "cpu-cluster", "cpu-n2", [("preparing", 60 * 30), ("idle", 60 * 29), ("removed", 60 * 28)])
    queued = api.put("/api/v1/jobs/j2", json={"command": "echo", "compute": "azureml:cpu-cluster"})
    assert queued.status_code == 200, queued.text
    sign_in(api)
    page = api.get("/computes/cpu-cluster")
    assert page.status_code == 200, page.text
    html = page.text
    assert html.count("<h1") == 1 and "Compute cluster cpu-cluster" in html
    assert 'id="min-max">0 / 2<' in html and 'id="idle-scale-down">2m 00s<' in html
    assert "Standard_DS1_v2" in html and "3.5 GB" in html  # the size from the catalog
    table = html[html.index('id="nodes-table"'):html.index("</table>", html.index('id="nodes-table"'))]
    assert 'data-node="cpu-n1"' in table and 'href="/jobs/j1"' in table and ">running<" in table
    assert "cpu-n2" not in table  # removed: not listed (and long gone: not in the timeline either)
    svg = re.search(r'<svg class="figure" id="node-timeline" role="img" aria-label="[^"]+"', html)
    assert svg and "<title>" in html[svg.start():]
    assert "cpu-n2" not in html[svg.start():html.index("</svg>", svg.start())]
    jobs = html[html.index('id="compute-jobs"'):]
    assert 'href="/jobs/j2"' in jobs and "Queued" in jobs


def test_a_cluster_without_history_says_so_and_local_says_what_it_is(api: TestClient):
    create(api, "cpu-cluster", CLUSTER)
    sign_in(api)
    html = api.get("/computes/cpu-cluster").text
    assert 'id="nodes-table"' in html and "No node now" in html and "<svg" not in html
    assert 'id="node-timeline"' in html and "No node has run" in html
    local = api.get("/computes/local")
    assert local.status_code == 200 and 'id="local-note"' in local.text and "jobs at once" in local.text.lower()


def test_an_instance_page_shows_its_state_idleness_and_buttons(api: TestClient):
    create(api, "ci", INSTANCE)
    add_node(api, "ci", "ci-n1", [("preparing", 5), ("idle", 4)])
    sign_in(api)
    html = api.get("/computes/ci").text
    assert re.search(r'id="instance-state">Running<', html)
    reason = html[html.index('id="idle-reason"'):html.index("</div>", html.index('id="idle-reason"'))]
    assert "Idle since" in reason and "Idle shutdown stops it at 2026-01-01 00:30:00 UTC (in 30m 00s)" in reason
    for verb in ("start", "stop", "restart", "snooze"):
        assert f'id="instance-{verb}"' in html and f'hx-post="/computes/ci/{verb}"' in html
    assert re.search(r'id="instance-start"[^>]*disabled', html)  # it is on already
    assert not re.search(r'id="instance-stop"[^>]*disabled', html)
    assert 'hx-get="/computes/ci/state" hx-trigger="every 2s"' in html
    assert '<label for="snooze-minutes">' in html
    fragment = api.get("/computes/ci/state")
    assert fragment.status_code == 200 and 'id="instance-live"' in fragment.text and "<html" not in fragment.text


def test_stop_needs_the_csrf_token_then_changes_the_state(api: TestClient):
    create(api, "ci", INSTANCE)
    add_node(api, "ci", "ci-n1", [("preparing", 5), ("idle", 4)])
    csrf = sign_in(api)
    refused = api.post("/computes/ci/stop", headers=HTMX)
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert api.get("/api/v1/computes/ci").json()["state"] == "Running"

    stopped = api.post("/computes/ci/stop", headers={**HTMX, "X-CSRF-Token": csrf})
    assert stopped.status_code == 200, stopped.text
    assert 'id="instance-panel"' in stopped.text and 'role="status"' in stopped.text
    assert re.search(r'id="instance-state">Stopping<', stopped.text)
    shown = api.get("/api/v1/computes/ci").json()
    assert shown["state"] == "Stopping" and "stop requested" in shown["power_reason"]
    again = api.post("/computes/ci/stop", headers={**HTMX, "X-CSRF-Token": csrf})
    assert again.status_code == 200
    assert re.search(r'role="alert"[^>]*>[^<]*already stopped or stopping', again.text)
    # A plain form (no script) with the token in its body goes back to the page.
    started = api.post("/computes/ci/start", data={"csrf_token": csrf}, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"] == "/computes/ci"
    assert api.get("/api/v1/computes/ci").json()["state"] == "Running"  # its node is still there


def test_refused_actions_show_the_reason_and_never_fail(api: TestClient):
    create(api, "ci", INSTANCE)
    add_node(api, "ci", "ci-n1", [("preparing", 5), ("idle", 4), ("running", 2)], job="j1")
    csrf = sign_in(api)
    html = api.get("/computes/ci").text
    assert re.search(r'id="instance-stop"[^>]*disabled', html) and "job j1 is running on it" in html
    for verb in ("stop", "restart", "start"):
        response = api.post(f"/computes/ci/{verb}", headers={**HTMX, "X-CSRF-Token": csrf})
        assert response.status_code == 200 and 'role="alert"' in response.text, verb
    stop = api.post("/computes/ci/stop", headers={**HTMX, "X-CSRF-Token": csrf})
    assert "job j1 is running on compute instance ci" in stop.text
    assert api.get("/api/v1/computes/ci").json()["state"] == "JobRunning"
    plain = api.post("/computes/ci/stop", data={"csrf_token": csrf})
    assert plain.status_code == 409 and "job j1 is running" in plain.text and "<h1>" in plain.text
    bad = api.post("/computes/ci/snooze", data={"minutes": "soon"}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert bad.status_code == 200 and 'role="alert"' in bad.text and "minutes" in bad.text
    unknown_verb = api.post("/computes/ci/explode", headers={"X-CSRF-Token": csrf})
    assert unknown_verb.status_code == 404 and "<h1>" in unknown_verb.text


def test_snooze_postpones_the_idle_shutdown(api: TestClient):
    create(api, "ci", INSTANCE)
    add_node(api, "ci", "ci-n1", [("preparing", 5), ("idle", 4)])
    csrf = sign_in(api)
    response = api.post("/computes/ci/snooze", data={"minutes": "60"}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    assert "not before 2026-01-01 01:30:00 UTC" in response.text
    assert api.get("/api/v1/computes/ci").json()["snoozed_until"] == "2026-01-01T01:30:00+00:00"


@pytest.mark.parametrize("minutes", ["nan", "NaN", "inf", "-inf", "infinity"])
def test_a_non_finite_snooze_is_refused_in_the_alert_not_a_500(api: TestClient, minutes: str):
    create(api, "ci", INSTANCE)
    add_node(api, "ci", "ci-n1", [("preparing", 5), ("idle", 4)])
    csrf = sign_in(api)
    response = api.post("/computes/ci/snooze", data={"minutes": minutes}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    alert = re.search(r'role="alert"[^>]*>(.*?)</', response.text, re.S)
    assert alert and "minutes" in alert.group(1) and "24 hours" in alert.group(1)
    plain = api.post("/computes/ci/snooze", data={"minutes": minutes, "csrf_token": csrf})
    assert plain.status_code == 400 and "<h1>" in plain.text
    assert api.get("/api/v1/computes/ci").json()["snoozed_until"] is None


@pytest.mark.parametrize("minutes", [float("nan"), float("inf"), float("-inf"), 0.0, 1441.0])
def test_the_instance_service_refuses_a_snooze_outside_0_to_24_hours(api: TestClient, minutes: float):
    create(api, "ci", INSTANCE)
    add_node(api, "ci", "ci-n1", [("preparing", 5), ("idle", 4)])
    with pytest.raises(InvalidRequestError, match="at most 24 hours"):
        api.app.state.instances.snooze("ci", minutes)


def test_unknown_computes_are_404_pages(api: TestClient):
    csrf = sign_in(api)
    page = api.get("/computes/nope")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "does not exist" in page.text and "<h1>" in page.text
    assert api.get("/computes/nope/state").status_code == 404
    gone = api.post("/computes/nope/stop", headers={**HTMX, "X-CSRF-Token": csrf})
    assert gone.status_code == 200 and 'role="alert"' in gone.text and "does not exist" in gone.text
    assert api.post("/computes/nope/stop", headers={"X-CSRF-Token": csrf}).status_code == 404


# -- the pure helpers ------------------------------------------------------------------------------
NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_timeline_rows_are_cut_to_the_window_and_end_at_removal():
    old = [("preparing", NOW - timedelta(hours=30)), ("idle", NOW - timedelta(hours=26)),
           ("removed", NOW - timedelta(hours=2))]
    gone = [("idle", NOW - timedelta(hours=40)), ("removed", NOW - timedelta(hours=30))]
    rows = node_timeline_rows([("a", old), ("b", gone)], NOW)
    assert [name for name, _ in rows] == ["a"]
    (span,) = rows[0][1]
    assert (span.state, span.start, span.end) == ("idle", NOW - timedelta(hours=24), NOW - timedelta(hours=2))
    assert len(node_timeline_rows([(str(i), old) for i in range(50)], NOW)) == 30


def test_instance_buttons_and_idleness_in_words():
    running = {"name": "ci", "state": "JobRunning", "node": {"job": "j1"}, "idleness": {"idle": False,
               "why_not": "job j1 is running on it"}}
    assert instance_actions(running, 1800) == {"start": "it is already on", "stop": running_why(),
                                               "restart": running_why(), "snooze": None}
    stopped = {"name": "ci", "state": "Stopped", "power_reason": "idle shutdown: no job", "idleness": {}}
    assert instance_actions(stopped, None)["start"] is None and instance_actions(stopped, None)["snooze"]
    assert idle_explanation(stopped, None, NOW)["headline"] == "Stopped (idle shutdown: no job)."
    assert idle_explanation(running, 1800, NOW)["headline"].startswith("Not idle: job j1 is running on it.")


def running_why() -> str:
    return "job j1 is running on it; cancel it or wait until it ends"


def test_quota_rows_keep_totals_and_families_in_use_first():
    usage = [{"type": "x/dedicatedCores/usages", "currentValue": 2, "limit": -1, "name": {"value": "t", "localizedValue": "T"}},
             {"type": "x/vmFamily/usages", "currentValue": 0, "limit": -1, "name": {"value": "f1"}},
             {"type": "x/vmFamily/usages", "currentValue": 3, "limit": 4, "name": {"value": "f2"}}]
    shown, others = quota_rows(usage)
    assert [r["scope"] for r in shown] == ["t", "f2"] and [r["scope"] for r in others] == ["f1"]
    assert shown[0]["limit"] is None and (shown[1]["percent"], shown[1]["level"]) == (75.0, "ok")
