"""The studio's jobs area in-process: the list (filters, paging, the htmx refresh), a job's page, its
log and metrics data routes, file downloads and Cancel (CSRF), and the REST route's compute filter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.core.errors import TrackingUnavailableError
from cible.core.lifecycle.jobs import JobStatus
from cible.core.models.records import NodeInfo
from cible.server import tracking as tracking_module
from cible.server.services.jobs import set_status
from cible.server.store.rows import JobRow, NodeRow, NodeStateRow
from cible.server.studio.pages import jobs as jobs_page

HELLO = {"command": "echo hello", "compute": "local"}
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
TO_RUNNING = (JobStatus.STARTING, JobStatus.RUNNING)
TO_COMPLETED = (*TO_RUNNING, JobStatus.FINALIZING, JobStatus.COMPLETED)


@pytest.fixture
def api(tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path) as client:
        yield client


def sign_in(api: TestClient) -> str:
    """A studio session in the client's cookies; returns the page's CSRF token."""
    code = api.post("/api/v1/studio:sign-in-code").json()["code"]
    assert api.get(f"/sign-in?code={code}", follow_redirects=False).status_code == 303
    return csrf_of(api.get("/jobs").text)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)


def move(api: TestClient, name: str, steps) -> None:  # noqa: ANN001
    """Move a job through `steps` as the reconciler would (these tests run none)."""
    clock = api.app.state.clock
    with api.app.state.store.session() as session:
        row = session.get(JobRow, name)
        for step in steps:
            set_status(session, row, step, clock.now(), reason="test")


def rows(page: str) -> list[str]:
    return re.findall(r'data-testid="job-row" data-job="([^"]+)"', page)


def write_log(api: TestClient, name: str, data: bytes) -> None:
    log = api.app.state.settings.paths.run_dir(name) / "artifacts" / "user_logs" / "std_log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(data)


def test_without_a_session_the_pages_send_to_sign_in(api: TestClient):
    for path in ("/jobs?status=Queued&page=2", "/jobs/j1", "/jobs/j1/log?offset=3", "/jobs/j1/metrics"):
        answer = api.get(path, follow_redirects=False)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith("/sign-in?next=") and unquote(location.split("next=", 1)[1]) == path
    polled = api.get("/jobs", headers={"HX-Request": "true"}, follow_redirects=False)
    assert polled.status_code == 204 and polled.headers["HX-Redirect"].startswith("/sign-in?next=")
    assert api.post("/jobs/j1/cancel", follow_redirects=False).status_code == 303  # no session: no cancel


def test_the_list_shows_jobs_with_status_badges_and_filters(api: TestClient):
    assert api.put("/api/v1/computes/cpu-cluster", json=CLUSTER).status_code == 200
    api.put("/api/v1/jobs/local-a", json={**HELLO, "experiment_name": "exp-a"})
    api.put("/api/v1/jobs/local-b", json=HELLO)
    api.put("/api/v1/jobs/on-cluster", json={"command": "echo", "compute": "azureml:cpu-cluster"})
    api.put("/api/v1/jobs/on-serverless", json={"command": "echo", "compute": "azureml:serverless"})
    move(api, "local-b", TO_RUNNING)
    move(api, "on-cluster", (JobStatus.FAILED,))
    sign_in(api)

    page = api.get("/jobs")
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'self'")
    text = page.text
    assert 'id="jobs-table"' in text and 'id="job-filters"' in text and "<h1>Jobs</h1>" in text
    assert sorted(rows(text)) == ["local-a", "local-b", "on-cluster", "on-serverless"]
    assert '<span class="badge run">Running</span>' in text and '<span class="badge bad">Failed</span>' in text
    assert '<span class="badge wait">Queued</span>' in text
    assert 'href="/jobs/local-b"' in text
    assert rows(api.get("/jobs?status=Running").text) == ["local-b"]
    assert rows(api.get("/jobs?status=failed").text) == ["on-cluster"]  # any case, as the CLI
    assert rows(api.get("/jobs?compute=cpu-cluster").text) == ["on-cluster"]
    assert rows(api.get("/jobs?compute=azureml:cpu-cluster").text) == ["on-cluster"]
    assert rows(api.get("/jobs?compute=serverless").text) == ["on-serverless"]
    assert sorted(rows(api.get("/jobs?compute=local").text)) == ["local-a", "local-b"]
    assert rows(api.get("/jobs?experiment=exp-a").text) == ["local-a"]
    assert rows(api.get("/jobs?experiment=exp-a&status=Running").text) == []
    kept = api.get("/jobs?compute=local&status=Queued").text
    assert rows(kept) == ["local-a"] and 'value="local"' in kept and '<option value="Queued" selected>' in kept
    refused = api.get("/jobs?status=runing")  # typed into the URL: said on the page, never a 500
    assert refused.status_code == 400 and 'role="alert"' in refused.text and "is not a job status" in refused.text


def test_the_list_pages_by_fifty_newest_first_and_keeps_the_filters(api: TestClient):
    for i in range(55):
        api.put(f"/api/v1/jobs/job-{i:02d}", json={**HELLO, "experiment_name": "many"})
        api.app.state.clock.advance(1)
    api.put("/api/v1/jobs/other", json=HELLO)  # another experiment: filtered out
    sign_in(api)
    first = api.get("/jobs?experiment=many").text
    assert rows(first) == [f"job-{i:02d}" for i in range(54, 4, -1)]
    assert "1–50 of 55 jobs · page 1 of 2" in first
    assert 'href="/jobs?experiment=many&amp;page=2"' in first and 'id="pager-prev"' not in first
    second = api.get("/jobs?experiment=many&page=2").text
    assert rows(second) == [f"job-{i:02d}" for i in range(4, -1, -1)]
    assert 'href="/jobs?experiment=many"' in second and 'id="pager-next"' not in second
    assert rows(api.get("/jobs?experiment=many&page=9").text) == rows(second)  # past the end: the last page
    assert len(rows(api.get("/jobs?page=nonsense").text)) == 50  # the first page


def test_a_page_past_the_end_is_the_last_page_with_a_pager_that_agrees(api: TestClient):
    for i in range(3):
        api.put(f"/api/v1/jobs/j{i}", json=HELLO)
        api.app.state.clock.advance(1)
    sign_in(api)
    for url in ("/jobs?page=1000", f"/jobs?page={10**12}", "/jobs?page=2"):
        html = api.get(url).text
        assert rows(html) == ["j2", "j1", "j0"], url
        pager = re.search(r'<span id="pager-status">(.*?)</span>', html).group(1)
        assert pager == "1–3 of 3 jobs · page 1 of 1", (url, pager)
        assert 'id="pager-prev"' not in html and 'id="pager-next"' not in html and 'id="no-jobs"' not in html
        assert '"/jobs?page=' not in html  # its own poll and links: page 1 (no page in the URL)
    for i in range(3, 60):
        api.put(f"/api/v1/jobs/j{i}", json=HELLO)
        api.app.state.clock.advance(1)
    last = api.get("/jobs?page=7&status=queued").text  # 60 queued jobs: two pages
    assert "51–60 of 60 jobs · page 2 of 2" in last and len(rows(last)) == 10
    assert 'href="/jobs?status=Queued"' in last and 'id="pager-next"' not in last
    assert 'hx-get="/jobs?status=Queued&amp;page=2"' in last


def test_a_status_filter_in_any_case_is_selected_in_the_filter_form(api: TestClient):
    api.put("/api/v1/jobs/j1", json=HELLO)
    sign_in(api)
    for typed in ("queued", "QUEUED", "Queued"):
        html = api.get(f"/jobs?status={typed}").text
        assert rows(html) == ["j1"], typed
        assert '<option value="Queued" selected>' in html and '<option value="" selected' not in html, typed
        assert html.count(" selected>") == 1, typed
    assert rows(api.get("/jobs?status=running").text) == []
    assert '<option value="Running" selected>' in api.get("/jobs?status=running").text


def test_an_htmx_poll_gets_the_results_alone_and_nothing_when_unchanged(api: TestClient):
    api.put("/api/v1/jobs/j1", json=HELLO)
    sign_in(api)
    full = api.get("/jobs").text
    digest = re.search(r'"seen": "([0-9a-f]+)"', full).group(1)
    polled = api.get("/jobs", headers={"HX-Request": "true"})
    assert polled.status_code == 200 and polled.text.lstrip().startswith('<div id="jobs-results"')
    assert "<h1>" not in polled.text and rows(polled.text) == ["j1"]
    same = api.get(f"/jobs?seen={digest}", headers={"HX-Request": "true"})
    assert same.status_code == 204 and same.content == b""
    move(api, "j1", TO_RUNNING)  # a status changed: the table comes, with its new colour
    changed = api.get(f"/jobs?seen={digest}", headers={"HX-Request": "true"})
    assert changed.status_code == 200 and '<span class="badge run">Running</span>' in changed.text


def test_the_list_shows_what_each_job_cost_on_its_nodes(api: TestClient):
    api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    api.put("/api/v1/jobs/paid", json={"command": "echo", "compute": "azureml:cpu-cluster"})
    api.put("/api/v1/jobs/free", json=HELLO)
    clock = api.app.state.clock
    start = clock.now()
    with api.app.state.store.session() as session:
        session.add(NodeRow(node_id="n1", compute="cpu-cluster", provider="local", state="idle",
                            info=NodeInfo(price_per_hour=3.6), created_at=start, updated_at=start))
        session.flush()
        session.add(NodeStateRow(node_id="n1", from_state=None, to_state="running", at=start, job_name="paid"))
        session.add(NodeStateRow(node_id="n1", from_state="running", to_state="idle",
                                 at=start + timedelta(hours=1), job_name=None))
    clock.advance(2 * 3600)
    sign_in(api)
    page = api.get("/jobs").text
    paid = re.search(r'data-job="paid".*?</tr>', page, re.S).group(0)
    free = re.search(r'data-job="free".*?</tr>', page, re.S).group(0)
    assert "$3.60" in paid and "$" not in free
    assert "$3.60 so far" in api.get("/jobs/paid").text  # the job page's figure is the same


def test_a_jobs_page_shows_its_parts(api: TestClient):
    body = {**HELLO, "inputs": {"lr": 0.1}, "outputs": {"model": {"type": "uri_folder"}}, "tags": {"team": "a"}}
    assert api.put("/api/v1/jobs/j1", json=body).status_code == 200
    sign_in(api)
    page = api.get("/jobs/j1")
    assert page.status_code == 200
    text = page.text
    assert text.count("<h1>") == 1 and "<script>" not in text and " onclick=" not in text
    for element in ('id="job-status"', 'id="cancel-job"', 'id="job-cost"', 'id="queue-reason"',
                    'id="status-timeline"', 'id="job-log"', 'data-log-url="/jobs/j1/log"', 'id="metric-charts"',
                    'data-metrics-url="/jobs/j1/metrics"', 'id="job-io"', 'hx-get="/jobs/j1/params"',
                    'hx-get="/jobs/j1/summary"', 'src="/static/job.js"', 'src="/static/vendor/uPlot-1.6.32.iife.min.js"'):
        assert element in text, element
    assert '<span class="badge wait" id="job-status">Queued</span>' in text
    assert 'role="img"' in text and "<title>Status timeline of job j1" in text
    assert "lr" in text and "0.1" in text and "model" in text and "team=a" in text
    params = api.get("/jobs/j1/params")
    assert params.status_code == 200 and 'id="job-params"' in params.text and "tracking is off" in params.text
    summary = api.get("/jobs/j1/summary")
    assert summary.status_code == 200 and summary.text.lstrip().startswith('<div id="job-summary"')
    assert 'hx-trigger="every 2s"' in summary.text
    move(api, "j1", (JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FAILED))
    with api.app.state.store.session() as session:
        from cible.core.models.records import JobError

        session.get(JobRow, "j1").error = JobError(code="UserError", message="exit code 3")
    ended = api.get("/jobs/j1/summary").text  # an ended job: no Cancel, no polling, its error shown
    assert 'id="cancel-job"' not in ended and "hx-trigger" not in ended and 'id="queue-reason"' not in ended
    assert 'id="job-error"' in ended and "exit code 3" in ended and '<span class="badge bad" id="job-status">' in ended
    assert api.get("/jobs/j1/params").status_code == 286  # the page's last refresh of them: htmx stops polling
    assert 'hx-trigger="load"' in api.get("/jobs/j1").text


def test_a_child_links_to_its_parent_and_a_sweep_to_its_trials(api: TestClient):
    api.put("/api/v1/jobs/parent", json=HELLO)
    api.put("/api/v1/jobs/child", json=HELLO)
    with api.app.state.store.session() as session:
        session.get(JobRow, "child").parent_job_name = "parent"
        session.get(JobRow, "parent").job_type = "sweep"
    sign_in(api)
    assert 'id="parent-job" href="/jobs/parent"' in api.get("/jobs/child").text
    assert 'href="/jobs/parent/trials"' in api.get("/jobs/parent").text


def test_an_unknown_job_is_a_404_page(api: TestClient):
    sign_in(api)
    for path in ("/jobs/nope", "/jobs/nope/files/artifacts/x.txt"):
        answer = api.get(path)
        assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
        assert "does not exist" in answer.text and "<h1>" in answer.text
    assert api.get("/jobs/nope/log").status_code == 404
    assert api.get("/jobs/nope/metrics").status_code == 404
    gone = api.get("/jobs/nope/summary")  # a job deleted under a polling page: said, and the polling stops
    assert gone.status_code == 286 and "does not exist" in gone.text


def test_the_log_route_answers_bytes_from_an_offset_with_the_status(api: TestClient):
    api.put("/api/v1/jobs/j1", json=HELLO)
    sign_in(api)
    empty = api.get("/jobs/j1/log")
    assert empty.status_code == 200 and empty.content == b""
    assert empty.headers["X-Cible-Next-Offset"] == "0" and empty.headers["X-Cible-Job-Status"] == "Queued"
    data = "step 1 ✓\nstep 2\n".encode()
    write_log(api, "j1", data)
    whole = api.get("/jobs/j1/log?offset=0")
    assert whole.content == data and whole.headers["content-type"] == "text/plain; charset=utf-8"
    assert whole.headers["X-Cible-Next-Offset"] == str(len(data))
    assert whole.headers["x-content-type-options"] == "nosniff"
    rest = api.get("/jobs/j1/log?offset=9")
    assert rest.content == data[9:] and rest.headers["X-Cible-Next-Offset"] == str(len(data))
    move(api, "j1", (JobStatus.CANCELED,))
    drained = api.get(f"/jobs/j1/log?offset={len(data)}")
    assert drained.content == b"" and drained.headers["X-Cible-Job-Status"] == "Canceled"
    refused = api.get("/jobs/j1/log?offset=-1")  # a page saying so, not the API's JSON
    assert refused.status_code == 400 and "text/html" in refused.headers["content-type"]


def test_files_download_as_attachments_and_paths_stay_inside(api: TestClient):
    api.put("/api/v1/jobs/j1", json=HELLO)
    write_log(api, "j1", b"hello\n")
    sign_in(api)
    page = api.get("/jobs/j1").text
    assert 'href="/jobs/j1/files/artifacts/user_logs/std_log.txt"' in page and 'id="job-files"' in page
    got = api.get("/jobs/j1/files/artifacts/user_logs/std_log.txt")
    assert got.status_code == 200 and got.content == b"hello\n"
    assert got.headers["content-disposition"].startswith("attachment")
    assert got.headers["content-type"] == "application/octet-stream"
    assert api.get("/jobs/j1/files/artifacts/user_logs/..%2F..%2F..%2Fdb.sqlite").status_code in (400, 404)
    listed = api.get("/jobs/j1/files")  # the fragment the page polls while the job runs
    assert listed.status_code == 200 and "artifacts/user_logs/std_log.txt" in listed.text and "<h1>" not in listed.text
    assert 'id="files-panel" hx-get="/jobs/j1/files" hx-trigger="every 10s"' in page
    move(api, "j1", (JobStatus.CANCELED,))
    assert api.get("/jobs/j1/files").status_code == 286  # ended: the last refresh
    assert api.get("/jobs/nope/files").status_code == 286


def test_cancel_needs_the_csrf_token_and_answers_the_new_status(api: TestClient):
    for name in ("a", "b", "c"):
        api.put(f"/api/v1/jobs/{name}", json=HELLO)
    csrf = sign_in(api)
    refused = api.post("/jobs/a/cancel", headers={"HX-Request": "true"})
    assert refused.status_code == 403
    assert api.post("/jobs/a/cancel", headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    assert api.get("/api/v1/jobs/a").json()["status"] == "Queued"

    fragment = api.post("/jobs/a/cancel", headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<div id="job-summary"')
    assert 'id="job-status">CancelRequested<' in fragment.text
    assert api.get("/api/v1/jobs/a").json()["status"] == "CancelRequested"

    form = api.post("/jobs/b/cancel", data={"csrf_token": csrf}, follow_redirects=False)  # no script
    assert form.status_code == 303 and form.headers["location"] == "/jobs/b"
    assert api.get("/api/v1/jobs/b").json()["status"] == "CancelRequested"
    move(api, "b", (JobStatus.CANCELED,))
    assert 'id="job-status">Canceled<' in api.get("/jobs/b/summary").text

    move(api, "c", TO_COMPLETED)  # ended already: the reason, in an alert
    late = api.post("/jobs/c/cancel", headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert late.status_code == 200 and 'role="alert"' in late.text and "already ended Completed" in late.text
    late_form = api.post("/jobs/c/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert late_form.status_code == 409 and 'role="alert"' in late_form.text and "<h1>" in late_form.text
    missing = api.post("/jobs/nope/cancel", data={"csrf_token": csrf})
    assert missing.status_code == 404 and "does not exist" in missing.text


def test_metrics_with_tracking_off_say_why(api: TestClient):
    api.put("/api/v1/jobs/j1", json=HELLO)
    sign_in(api)
    assert api.app.state.tracking is None  # the test session runs without MLflow
    answer = api.get("/jobs/j1/metrics")
    assert answer.status_code == 200
    body = answer.json()
    assert body["metrics"] == {} and "off" in body["unavailable"] and body["retry"] is False
    assert body["status"] == "Queued" and body["terminal"] is False


def test_metrics_come_as_steps_and_values_and_mlflow_down_is_a_200(api: TestClient, monkeypatch):
    api.put("/api/v1/jobs/j1", json=HELLO)
    move(api, "j1", TO_COMPLETED)
    sign_in(api)
    api.app.state.tracking = object()  # a stand-in: the reads below are replaced
    api.app.state.artifacts.run_of = lambda job, experiment: "run-1" if job == "j1" else None
    monkeypatch.setattr(jobs_page, "run_metrics", lambda tracking, run_id, timeout: {
        "metrics": {"loss": 0.2, "acc": 0.9}, "params": {}})
    points = {"loss": ([0, 1, 2], [1.0, 0.5, 0.2]), "acc": ([0, 1], [float("nan"), 0.9])}
    monkeypatch.setattr(jobs_page, "metric_points", lambda tracking, run_id, key, timeout: points[key])
    body = api.get("/jobs/j1/metrics").json()
    assert body["terminal"] is True and body["unavailable"] is None and body["run_id"] == "run-1"
    assert body["metrics"] == {"acc": {"steps": [0, 1], "values": [None, 0.9]},
                               "loss": {"steps": [0, 1, 2], "values": [1.0, 0.5, 0.2]}}

    def down(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise TrackingUnavailableError("the workspace's MLflow tracking server is not answering yet; retry shortly")

    monkeypatch.setattr(jobs_page, "run_metrics", down)
    answer = api.get("/jobs/j1/metrics")
    assert answer.status_code == 200 and answer.json()["metrics"] == {}
    assert "not answering" in answer.json()["unavailable"] and answer.json()["retry"] is True


def test_metric_points_are_steps_and_values_in_logged_order(monkeypatch):
    class Ready:
        url, auth_headers = "http://127.0.0.1:1", {}

        def ready(self, timeout: float) -> bool:
            return True

    logged = [{"key": "loss", "value": 0.5, "step": 1, "timestamp": 20},
              {"key": "loss", "value": 0.9, "step": 0, "timestamp": 10},
              {"key": "loss", "value": 0.4, "step": 1, "timestamp": 30}]
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(200, json={"metrics": logged}))
    assert tracking_module.metric_points(Ready(), "r", "loss") == ([0, 1, 1], [0.9, 0.5, 0.4])
    assert tracking_module.metric_history(Ready(), "r", "loss") == [0.9, 0.5, 0.4]
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(404, text="RESOURCE_DOES_NOT_EXIST"))
    assert tracking_module.metric_points(Ready(), "r", "loss") == ([], [])


def test_the_rest_list_filters_by_compute(migrated_db_url, tmp_path):  # noqa: ANN001 (SQLite and PostgreSQL)
    with api_client(migrated_db_url, tmp_path) as api:
        rest_compute_filter(api)


def rest_compute_filter(api: TestClient) -> None:
    api.put("/api/v1/computes/cpu-cluster", json=CLUSTER)
    api.put("/api/v1/jobs/l", json=HELLO)
    api.put("/api/v1/jobs/c", json={"command": "echo", "compute": "azureml:cpu-cluster"})
    api.put("/api/v1/jobs/s", json={"command": "echo", "compute": "azureml:serverless"})

    def listed(compute: str) -> list[str]:
        answer = api.get("/api/v1/jobs", params={"compute": compute})
        assert answer.status_code == 200, answer.text
        return sorted(j["name"] for j in answer.json()["value"])

    assert listed("local") == ["l"]
    assert listed("cpu-cluster") == listed("azureml:cpu-cluster") == ["c"]
    assert listed("serverless") == ["s"]
    assert listed("gpu-cluster") == []
    assert api.get("/api/v1/jobs", params={"compute": "cpu-cluster"}).json()["count"] == 1
    assert sorted(j["name"] for j in api.get("/api/v1/jobs").json()["value"]) == ["c", "l", "s"]


# -- job.js: the live log and metrics, when their routes refuse or the server does not answer ----------

JOB_JS_HARNESS = r"""
// Runs static/job.js against stub DOM nodes and a fetch that answers from a script (argv[3], JSON:
// {"log": [answer...], "metrics": [answer...]}, an answer {status, body, headers} or {throw: message};
// the last one repeats), fires its timers for a few rounds, then prints what the page shows.
const script = JSON.parse(process.argv[3]);
function node(ds) { return { dataset: ds || {}, textContent: "", hidden: false, children: [], scrollHeight: 0,
  scrollTop: 0, clientHeight: 0, appendChild(n) { this.textContent += n.text; }, insertBefore() {}, append() {} }; }
const pre = node({ logUrl: "/jobs/j/log", status: "Running" }), box = node({ metricsUrl: "/jobs/j/metrics" });
const notes = { log: node(), metrics: node() };
const byId = { "job-log": pre, "metric-charts": box, "log-note": notes.log, "metrics-note": notes.metrics };
global.document = { readyState: "complete", getElementById: (id) => byId[id] || null,
  createTextNode: (text) => ({ text }), createElement: () => node(), addEventListener() {} };
global.window = { location: { pathname: "/jobs/j", search: "", assign() {} }, addEventListener() {} };
const calls = { log: 0, metrics: 0 }, timers = [];
global.setTimeout = (fn, ms) => { timers.push({ fn, ms }); };
global.fetch = async (url) => {
  const kind = url.indexOf("/log") >= 0 ? "log" : "metrics", answers = script[kind];
  const a = answers[Math.min(calls[kind]++, answers.length - 1)];
  if (a.throw) throw new TypeError(a.throw);
  const h = {}; Object.keys(a.headers || {}).forEach((k) => { h[k.toLowerCase()] = a.headers[k]; });
  return { ok: a.status >= 200 && a.status < 300, status: a.status, headers: { get: (k) => h[k.toLowerCase()] ?? null },
    text: async () => a.body, json: async () => JSON.parse(a.body),
    arrayBuffer: async () => new TextEncoder().encode(a.body).buffer };
};
const settle = async () => { for (let i = 0; i < 6; i++) await new Promise((r) => setImmediate(r)); };
(async () => {
  eval(require("fs").readFileSync(process.argv[2], "utf8"));
  for (let round = 0; round < 3; round++) { await settle(); timers.splice(0).forEach((t) => t.fn()); }
  await settle();
  console.log(JSON.stringify({ calls, pending: timers.map((t) => t.ms), log_note: notes.log.textContent,
    metrics_note: notes.metrics.textContent, log_stopped: pre.dataset.stopped || null,
    metrics_stopped: box.dataset.stopped || null, log_error: pre.dataset.error || null }));
})();
"""


def run_job_js(tmp_path, script: dict) -> dict:  # noqa: ANN001
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run static/job.js")
    job_js = Path(jobs_page.__file__).parent.parent / "static" / "job.js"
    harness = tmp_path / "harness.js"
    harness.write_text(JOB_JS_HARNESS)
    done = subprocess.run([node, str(harness), str(job_js), json.dumps(script)], capture_output=True, text=True,
                          timeout=30, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def answer_of(response) -> dict:  # noqa: ANN001
    return {"status": response.status_code, "body": response.text, "headers": dict(response.headers)}


def test_job_js_stops_following_a_deleted_job_and_says_why(api: TestClient, tmp_path):  # noqa: ANN001
    sign_in(api)
    log, metrics = api.get("/jobs/gone/log?offset=0"), api.get("/jobs/gone/metrics")
    assert log.status_code == metrics.status_code == 404
    shown = run_job_js(tmp_path, {"log": [answer_of(log)], "metrics": [answer_of(metrics)]})
    assert shown["calls"] == {"log": 1, "metrics": 1} and shown["pending"] == []  # asked once, not every 5 s
    assert shown["log_stopped"] == shown["metrics_stopped"] == "true"
    assert shown["log_note"].startswith("Stopped following the log: ") and "404" in shown["log_note"]
    assert "gone" in shown["log_note"] and "Following the log" not in shown["log_note"]
    assert shown["metrics_note"].startswith("Stopped following the metrics: ") and "gone" in shown["metrics_note"]


def test_job_js_retries_a_server_that_does_not_answer_and_says_so(api: TestClient, tmp_path):  # noqa: ANN001
    down = {"throw": "Failed to fetch"}
    failing = {"status": 503, "body": "<html>busy</html>", "headers": {"Content-Type": "text/html"}}
    shown = run_job_js(tmp_path, {"log": [down], "metrics": [failing]})
    assert shown["calls"] == {"log": 4, "metrics": 4} and shown["pending"] == [5000, 5000]  # still retrying
    assert shown["log_stopped"] is None and shown["metrics_stopped"] is None
    assert shown["log_note"] == "Could not read the log: the server did not answer (Failed to fetch); retrying every 5 s."
    assert shown["metrics_note"] == "Could not read the metrics: the server answered 503; retrying every 5 s."
    # Once it answers again, the notes say what the page shows.
    job = {"status": 200, "body": "hello\n", "headers": {"X-Cible-Next-Offset": "6", "X-Cible-Job-Status": "Running"}}
    empty = {"status": 200, "body": '{"status": "Running", "terminal": false, "metrics": {}}',
             "headers": {"Content-Type": "application/json"}}
    shown = run_job_js(tmp_path, {"log": [down, job], "metrics": [failing, empty]})
    assert shown["log_note"] == "Following the log as the job writes it…" and shown["log_error"] is None
    assert shown["metrics_note"] == "No metrics logged yet."
