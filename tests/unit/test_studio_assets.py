"""The studio's assets, sweep/pipeline and endpoint pages, in-process: what they show, their 404s and
sign-in redirects, and the SVG figures of studio/graphs.py on small inputs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from api_support import api_client, upload
from fastapi.testclient import TestClient

from cible.core.lifecycle.jobs import path_to
from cible.server.services.jobs import set_status
from cible.server.store.rows import JobRow
from cible.server.studio import graphs
from cible.server.studio.pages.parents import step_edges

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
SWEEP = {
    "type": "sweep", "compute": "local", "experiment_name": "sweeps",
    "trial": {"command": "echo ${{search_space.lr}} ${{search_space.opt}}"},
    "sampling_algorithm": {"type": "random", "seed": 3},
    "search_space": {"lr": {"type": "uniform", "min_value": 0.01, "max_value": 0.9},
                     "opt": {"type": "choice", "values": ["adam", "sgd"]}},
    "objective": {"goal": "minimize", "primary_metric": "loss"},
    "limits": {"max_total_trials": 2, "max_concurrent_trials": 2},
}
PIPELINE = {"type": "pipeline", "settings": {"default_compute": "azureml:cpu-cluster"},
            "jobs": {"write": {"type": "command", "command": "echo hi > ${{outputs.out}}/hi.txt",
                               "outputs": {"out": {"type": "uri_folder"}}},
                     "read": {"type": "command", "command": "cat ${{inputs.x}}/hi.txt",
                              "inputs": {"x": "${{parent.jobs.write.outputs.out}}"}}}}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with api_client(f"sqlite:///{tmp_path}/db", tmp_path, tracking=False) as client:
        code = client.post("/api/v1/studio:sign-in-code").json()["code"]
        assert client.get(f"/sign-in?code={code}", follow_redirects=False).status_code == 303
        yield client


def page(api: TestClient, url: str, status: int = 200) -> str:
    answer = api.get(url, follow_redirects=False)
    assert answer.status_code == status, (url, answer.status_code, answer.text[:2000])
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text.count("<h1") == 1
    return answer.text


def element(html: str, element_id: str) -> str:
    """The element of that id, from its start tag to its end tag (nested ones of its kind counted)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"', html)
    assert match, f"no element id={element_id}"
    tag, depth = match.group(1), 0
    for mark in re.finditer(rf"<(/?){tag}\b[^>]*>", html[match.start():]):
        depth += -1 if mark.group(1) else 1
        if depth == 0:
            return html[match.start():match.start() + mark.end()]
    raise AssertionError(f"element id={element_id} is not closed")


def move(api: TestClient, name: str, target: str) -> None:
    """What the job reconciler would do: the job's status moved along its lifecycle."""
    app = api.app
    with app.state.store.session() as session:
        row = session.get(JobRow, name)
        for step in path_to(row.status, target):
            set_status(session, row, step, app.state.clock.now(), reason="moved by the test")


# ---- sign-in -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/models", "/models/m", "/models/m/1", "/data", "/data/d", "/environments/e/1",
                                 "/jobs/sw/trials", "/jobs/p/steps", "/endpoints", "/endpoints/ep",
                                 "/endpoints/ep/request-rate", "/batch-endpoints/b"])
def test_every_page_sends_a_browser_without_session_to_sign_in(tmp_path: Path, url: str) -> None:
    with api_client(f"sqlite:///{tmp_path}/db", tmp_path, tracking=False) as api:
        answer = api.get(url, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/sign-in?next=")
        htmx = api.get(url, headers={"HX-Request": "true"}, follow_redirects=False)
        assert htmx.status_code == 204 and htmx.headers["HX-Redirect"].startswith("/sign-in?next=")


# ---- assets ------------------------------------------------------------------------------------


def test_models_list_versions_and_a_version_with_its_mlmodel_and_files(api: TestClient) -> None:
    first = upload(api, {"model/MLmodel": b"flavors:\n  python_function: {loader_module: x}\n",
                         "model/model.pkl": b"x" * 2048})
    assert api.post("/api/v1/models/clf/versions", json={"path": f"{first}/model", "type": "mlflow_model",
                                                          "description": "a <b>classifier</b>",
                                                          "tags": {"team": "a&b"}}).status_code == 200
    plain = upload(api, {"weights/w.bin": b"1234"})
    assert api.post("/api/v1/models/clf/versions", json={"path": f"{plain}/weights"}).status_code == 200
    listing = page(api, "/models")
    table = element(listing, "models-table")
    assert '<a href="/models/clf">clf</a>' in table and '<a href="/models/clf/2">2</a>' in table
    assert re.search(r'<td class="num">2</td>', table)  # two versions
    versions = element(page(api, "/models/clf"), "versions-table")
    assert "a &lt;b&gt;classifier&lt;/b&gt;" in versions and "<b>" not in versions  # text, never markup
    assert [m for m in re.findall(r'data-version="([^"]+)"', versions)] == ["2", "1"]
    assert "mlflow_model" in versions and "custom_model" in versions
    one = page(api, "/models/clf/1")
    assert "python_function: {loader_module: x}" in unescape(element(one, "mlmodel"))
    files = element(one, "model-files")
    assert "clf/model/MLmodel" in files and "clf/model/model.pkl" in files and "2.0 KiB" in files
    assert "team: a&amp;b" in one and "<b>classifier" not in one
    download = api.get("/models/clf/1/files/clf/model/model.pkl")
    assert download.status_code == 200 and download.content == b"x" * 2048
    assert "attachment" in download.headers["content-disposition"]
    assert api.get("/models/clf/1/files/clf/model/../../../etc/passwd").status_code in (400, 404)
    two = page(api, "/models/clf/2")
    assert "no MLmodel file" in element(two, "mlmodel") and "clf/weights/w.bin" in element(two, "model-files")


@pytest.mark.parametrize("name", ["page.html", "app.js", "figure.svg"])
def test_a_model_file_is_always_a_download_of_no_type(api: TestClient, name: str) -> None:
    """An uploaded .html or .js served with its own type would run as a page of the studio's origin."""
    snapshot = upload(api, {f"model/{name}": b"<script>alert(document.cookie)</script>"})
    assert api.post("/api/v1/models/web/versions", json={"path": f"{snapshot}/model"}).status_code == 200
    download = api.get(f"/models/web/1/files/web/model/{name}")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["x-content-type-options"] == "nosniff"


def _statements(api: TestClient, url: str) -> int:
    """How many SQL statements answering `url` runs."""
    from sqlalchemy import event
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:  # noqa: ARG001
        seen.append(statement)

    engine = api.app.state.store.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        page(api, url)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def test_an_asset_list_runs_as_many_queries_for_20_rows_as_for_2(api: TestClient) -> None:
    def register(names: range) -> None:
        for i in names:
            for version in ("1", "2"):
                env = {"image": f"mcr.microsoft.com/azureml/img{i}:{version}"}
                answer = api.put(f"/api/v1/environments/env{i:02d}/versions/{version}", json=env)
                assert answer.status_code == 200, answer.text

    register(range(2))
    few = _statements(api, "/environments")
    register(range(2, 20))
    many = _statements(api, "/environments")
    assert many == few, (few, many)
    table = element(page(api, "/environments"), "environments-table")
    assert len(re.findall(r'data-testid="asset-row"', table)) == 20
    assert len(re.findall(r'<td class="num">2</td>', table)) == 20  # each one's two versions, counted still


def test_the_version_counts_follow_the_archived_rules_of_the_list(api: TestClient) -> None:
    for name, count in (("a", 3), ("b", 2), ("c", 1)):
        for version in range(1, count + 1):
            answer = api.put(f"/api/v1/environments/{name}/versions/{version}", json={"image": f"img:{version}"})
            assert answer.status_code == 200, answer.text
    assert api.post("/api/v1/environments/a/versions/3:archive").status_code == 200
    assert api.post("/api/v1/environments/b:archive").status_code == 200  # the whole asset
    assets = api.app.state.assets
    for flags in ({}, {"include_archived": True}, {"archived_only": True}):
        counts = assets.version_counts("environments", ["a", "b", "c", "nope"], **flags)
        expected = {n: assets.list("environments", n, **flags)["count"] for n in ("a", "b", "c", "nope")}
        assert counts == expected, flags
    assert assets.version_counts("environments", ["a", "b", "c"]) == {"a": 2, "b": 0, "c": 1}
    assert assets.version_counts("environments", []) == {}
    shown = element(page(api, "/environments"), "environments-table")
    assert re.search(r'data-name="a">.*?<td class="num">2</td>', shown, re.S)
    everything = element(page(api, "/environments?archived=true"), "environments-table")
    assert re.search(r'data-name="a">.*?<td class="num">3</td>', everything, re.S)
    assert re.search(r'data-name="b">.*?<td class="num">2</td>', everything, re.S)


def test_a_model_registered_by_reference_says_it_has_no_files_here(api: TestClient) -> None:
    assert api.post("/api/v1/models/remote/versions",
                    json={"path": "https://example.com/model.pkl"}).status_code == 200
    html = page(api, "/models/remote/1")
    assert "outside the workspace&#39;s datastore" in html or "outside the workspace's datastore" in html


def test_data_and_environments_show_their_path_type_image_and_conda_file(api: TestClient) -> None:
    uri = upload(api, {"d.csv": b"a\n1\n"})
    assert api.post("/api/v1/data/iris/versions", json={"type": "uri_file", "path": f"{uri}/d.csv"}).status_code == 200
    env = {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04",
           "conda_file": {"dependencies": ["python=3.10", {"pip": ["six"]}]}}
    assert api.put("/api/v1/environments/my-env/versions/1", json=env).status_code == 200
    assert "iris" in element(page(api, "/data"), "data-table")
    data = page(api, "/data/iris/1")
    assert "uri_file" in element(data, "asset-type") and "LocalUpload" in element(data, "asset-path")
    assert "uri_file" in element(page(api, "/data/iris"), "versions-table")
    assert "openmpi4.1.0" in element(page(api, "/environments"), "environments-table")
    environment = page(api, "/environments/my-env/1")
    conda = unescape(element(environment, "conda-file"))
    assert "python=3.10" in conda and "- six" in conda
    assert "openmpi4.1.0" in element(environment, "asset-image")


@pytest.mark.parametrize("url", ["/models/nope", "/models/nope/1", "/data/nope", "/environments/nope/3",
                                 "/models/<x>&y", "/models/clf/9/files/a/b"])
def test_unknown_assets_are_404_pages(api: TestClient, url: str) -> None:
    html = page(api, url, 404)
    assert "Traceback" not in html and "<x>" not in html
    if "<x>" in url:
        assert "&lt;x&gt;&amp;y" in html  # the name said back, escaped


def test_empty_lists_say_so_and_odd_query_values_are_no_json_error(api: TestClient) -> None:
    assert "No models yet" in page(api, "/models")
    assert "No data assets yet" in page(api, "/data?page=x&archived=maybe")
    assert "on this page" in page(api, f"/environments?page={10**30}")
    assert "No endpoints yet" in page(api, "/endpoints")


# ---- sweeps and pipelines ----------------------------------------------------------------------


def _orchestrate(api: TestClient, metrics: dict[str, list[float]]) -> None:
    app = api.app
    app.state.jobs.plans.tracking = {"uri": "http://127.0.0.1:9/mlflow"}  # a sweep needs MLflow at submit
    app.state.orchestrator.metric_history = lambda job, experiment, metric: metrics.get(job)


def test_a_sweeps_trials_page_marks_the_best_trial_and_draws_parallel_coordinates(api: TestClient) -> None:
    metrics: dict[str, list[float]] = {}
    _orchestrate(api, metrics)
    assert api.put("/api/v1/jobs/sw", json=SWEEP).status_code == 200
    orchestrator = api.app.state.orchestrator
    orchestrator.reconcile_once()
    for trial, loss in (("sw_0", 0.7), ("sw_1", 0.2)):
        move(api, trial, "Running")
        metrics[trial] = [0.9, loss]
        move(api, trial, "Completed")
    orchestrator.reconcile_once()
    html = page(api, "/jobs/sw/trials")
    table = element(html, "trials-table")
    assert re.findall(r'data-trial="([^"]+)"', table) == ["sw_0", "sw_1"]
    assert re.search(r'<tr data-testid="trial-row" data-trial="sw_1" class="best">', table)
    assert '<a href="/jobs/sw_0">sw_0</a>' in table and "Completed" in table
    assert "0.2" in table and "0.7" in table and ("adam" in table or "sgd" in table)
    assert "Best trial: sw_1" in html and "lowest" in html and "minimize loss" in html
    plot = element(html, "trials-plot")
    assert plot.startswith("<svg") and 'role="img"' in plot and "aria-label=" in plot and "<title>" in plot
    assert plot.count("<polyline") == 2 and 'class="best"' in plot


def test_a_one_parameter_sweep_is_a_scatter_and_a_sweep_without_metrics_says_so(api: TestClient) -> None:
    metrics: dict[str, list[float]] = {}
    _orchestrate(api, metrics)
    one = {**SWEEP, "search_space": {"lr": SWEEP["search_space"]["lr"]}, "trial": {"command": "echo ${{search_space.lr}}"}}
    assert api.put("/api/v1/jobs/one", json=one).status_code == 200
    api.app.state.orchestrator.reconcile_once()
    html = page(api, "/jobs/one/trials")
    assert "No best trial yet" in html and "has reported its metric" in element(html, "trials-plot")
    move(api, "one_0", "Running")
    metrics["one_0"] = [0.5]
    move(api, "one_0", "Completed")
    api.app.state.orchestrator.reconcile_once()
    plot = element(page(api, "/jobs/one/trials"), "trials-plot")
    assert plot.startswith("<svg") and "<circle" in plot and "best: one_0" in plot


def test_a_pipelines_steps_page_draws_its_graph_with_statuses(api: TestClient) -> None:
    assert api.put("/api/v1/computes/cpu-cluster", json=CLUSTER).status_code == 200
    assert api.put("/api/v1/jobs/p", json=PIPELINE).status_code == 200, api.put("/api/v1/jobs/p", json=PIPELINE).text
    api.app.state.orchestrator.reconcile_once()
    html = page(api, "/jobs/p/steps")
    graph = element(html, "pipeline-graph")
    assert graph.startswith("<svg") and 'role="img"' in graph and "<title>" in graph
    assert 'data-step="write" data-status="Queued"' in graph and 'data-step="read" data-status="NotStarted"' in graph
    assert "write → read" in graph and "marker-end" in graph
    table = element(html, "steps-table")
    assert re.findall(r'data-step="([^"]+)"', table) == ["write", "read"]
    assert '<a href="/jobs/p_write">p_write</a>' in table


def test_trials_and_steps_of_other_jobs_are_404_pages(api: TestClient) -> None:
    assert api.put("/api/v1/jobs/plain", json={"command": "echo hi", "compute": "local"}).status_code == 200
    html = page(api, "/jobs/plain/trials", 404)
    assert "is a command job, not a sweep" in html
    assert "not a pipeline" in page(api, "/jobs/plain/steps", 404)
    assert "does not exist" in page(api, "/jobs/ghost/trials", 404)


def test_step_edges_follow_output_bindings_only() -> None:
    steps = {"a": {"outputs": {"o": {}}}, "b": {"inputs": {"x": "${{parent.jobs.a.outputs.o}}",
                                                           "y": "${{parent.inputs.z}}", "n": 3}},
             "c": {"inputs": {"x": {"path": "${{parent.jobs.b.outputs.o}}"}, "w": "${{bad"}}}
    assert step_edges(steps) == [("a", "b"), ("b", "c")]


# ---- endpoints ---------------------------------------------------------------------------------


def test_an_online_endpoint_shows_deployments_traffic_and_request_rate_never_its_keys(api: TestClient) -> None:
    assert api.put("/api/v1/online-endpoints/my-ep", json={"spec": {"auth_mode": "key",
                                                                    "description": "<i>scores</i>"}}).status_code == 200
    code = upload(api, {"score.py": b"def init():\n    pass\n\ndef run(data):\n    return data\n"})
    model = upload(api, {"m/model.pkl": b"x"})
    spec = {"instance_type": "Standard_DS1_v2", "instance_count": 2, "model": {"path": f"{model}/m"},
            "code_configuration": {"code": code, "scoring_script": "score.py"},
            "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"}}
    for name in ("blue", "green"):
        answer = api.put(f"/api/v1/online-endpoints/my-ep/deployments/{name}", json={"spec": spec})
        assert answer.status_code == 200, answer.text
    assert api.patch("/api/v1/online-endpoints/my-ep", json={"traffic": {"blue": 100, "green": 0},
                                                             "mirror_traffic": {"green": 10}}).status_code == 200
    keys = api.post("/api/v1/online-endpoints/my-ep/credentials").json()
    api.app.state.endpoints.stats = lambda endpoint: {
        "blue": {"requests_per_s": 2.5, "p50_ms": 3.0, "p99_ms": 9.5, "errors": 1, "in_flight": 0, "queued": 0},
        "green": {"requests_per_s": 0.25, "p50_ms": 4.0, "p99_ms": 8.0, "errors": 0, "in_flight": 1, "queued": 0}}
    listing = element(page(api, "/endpoints"), "endpoints-table")
    assert '<a href="/endpoints/my-ep">my-ep</a>' in listing and "blue 100%, green 0%" in listing and "online" in listing
    html = page(api, "/endpoints/my-ep")
    deployments = element(html, "deployments-table")
    assert re.findall(r'data-name="([^"]+)"', deployments) == ["blue", "green"]
    assert "Standard_DS1_v2" in deployments and "0 of 0" in deployments and "Creating" in deployments
    traffic = element(html, "traffic")
    assert "blue 100%, green 0%" in traffic and "mirrored: <strong>green 10%" in traffic
    assert re.search(r'data-name="green">.*?<td class="num">0%</td><td class="num">10%</td>', traffic, re.DOTALL)
    rate = element(html, "request-rate")
    assert "2.75" in rate and "requests/s" in rate and "9.5" in rate
    assert "&lt;i&gt;scores&lt;/i&gt;" in html
    for secret in keys.values():
        assert secret not in html
    fragment = api.get("/endpoints/my-ep/request-rate", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<div id="request-rate"')
    assert keys["primaryKey"] not in fragment.text


def test_a_batch_endpoint_shows_its_default_deployment_settings_and_jobs(api: TestClient) -> None:
    assert api.put("/api/v1/computes/batch-cluster", json={**CLUSTER, "max_instances": 4}).status_code == 200
    assert api.put("/api/v1/batch-endpoints/heart-batch", json={"spec": {"description": "heart"}}).status_code == 200
    code = upload(api, {"batch/score.py": b"def init():\n    pass\n\ndef run(mini_batch):\n    return mini_batch\n"})
    model = upload(api, {"heart-model/model.pkl": b"pickle"})
    spec: dict[str, Any] = {
        "model": {"path": f"{model}/heart-model"}, "code_configuration": {"code": code, "scoring_script": "batch/score.py"},
        "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"},
        "compute": "azureml:batch-cluster", "resources": {"instance_count": 2},
        "settings": {"max_concurrency_per_instance": 3, "mini_batch_size": 5,
                     "retry_settings": {"max_retries": 2, "timeout": 60}}}
    answer = api.put("/api/v1/batch-endpoints/heart-batch/deployments/blue", json={"spec": spec, "set_default": True})
    assert answer.status_code == 200, answer.text
    job = api.post("/api/v1/batch-endpoints/heart-batch:invoke",
                   json={"input": "azureml://datastores/workspaceblobstore/paths/heart/"})
    assert job.status_code == 200, job.text
    listing = element(page(api, "/endpoints"), "endpoints-table")
    assert '<a href="/batch-endpoints/heart-batch">heart-batch</a>' in listing and "default: blue" in listing
    html = page(api, "/batch-endpoints/heart-batch")
    deployments = element(html, "batch-deployments")
    assert 'class="default"' in deployments and ">default</span>" in deployments
    assert '<td class="num">5</td>' in deployments  # its mini-batch size
    assert "azureml:batch-cluster" in deployments and '<td class="num">2</td>' in deployments
    settings = element(html, "batch-settings")
    assert "blue (default)" in settings and "<dt>mini_batch_size</dt><dd>5</dd>" in settings
    assert "<dt>retry max_retries</dt><dd>2</dd>" in settings and "<dt>instance_count</dt><dd>2</dd>" in settings
    jobs = element(html, "batch-jobs")
    assert f'<a href="/jobs/{job.json()["name"]}">' in jobs and "Queued" in jobs


@pytest.mark.parametrize("url", ["/endpoints/nope", "/batch-endpoints/nope", "/endpoints/%3Cb%3E"])
def test_unknown_endpoints_are_404_pages(api: TestClient, url: str) -> None:
    html = page(api, url, 404)
    assert "does not exist" in html and "<b>" not in html


def test_the_rate_fragment_of_an_unknown_endpoint_is_an_alert_not_a_page(api: TestClient) -> None:
    # htmx 2 swaps only 2xx answers: the polled panel must get a 200 whose fragment shows the alert and has
    # no hx-trigger (the swap replaces the polling element, so the every-5s poll ends).
    answer = api.get("/endpoints/nope/request-rate", headers={"HX-Request": "true"})
    assert answer.status_code == 200 and 'role="alert"' in answer.text and "<h1" not in answer.text
    assert 'id="request-rate"' in answer.text and "does not exist" in answer.text
    assert "hx-trigger" not in answer.text and "hx-get" not in answer.text
    # Not htmx (a script, curl): the real status.
    assert api.get("/endpoints/nope/request-rate").status_code == 404


# ---- graphs.py: pure SVG ---------------------------------------------------------------------------


NASTY = 'a<b>&"c\''


def _well_escaped(svg: str) -> None:
    assert "<b>" not in svg and '"c\'' not in svg
    assert "a&lt;b&gt;&amp;" in svg


def test_scatter_escapes_names_and_labels_and_marks_the_best() -> None:
    svg = graphs.scatter([(NASTY, 0.1, 2.0), ("t1", 0.5, 1.0), ("t2", 0.3, None)], x_label="l<r", y_label="loss&",
                         label=f"plot {NASTY}", element_id="trials-plot", best=NASTY)
    _well_escaped(svg)
    assert svg.startswith('<svg class="figure" id="trials-plot" role="img" aria-label="plot a&lt;b&gt;')
    assert svg.count("<circle") == 2  # the trial without a metric is not drawn
    assert 'class="best"' in svg and "l&lt;r" in svg and "loss&amp;" in svg
    assert graphs.scatter([("t", 1, None)], x_label="x", y_label="y", label="l", element_id="p").startswith('<p id="p"')


def test_parallel_coordinates_draws_a_line_per_trial_and_categories_as_ticks() -> None:
    rows = [(NASTY, {"lr": 0.1, "opt": "<adam>", "loss": 0.5}), ("t1", {"lr": 0.2, "opt": "sgd", "loss": 0.4}),
            ("t2", {"lr": 0.3, "opt": "sgd"})]
    svg = graphs.parallel_coordinates(["lr", "opt", "loss"], rows, label="pc", element_id="trials-plot", best="t1")
    assert svg.count("<polyline") == 3 and svg.count('class="best"') == 1
    assert "&lt;adam&gt;" in svg and "<adam>" not in svg
    _well_escaped(svg)
    assert "<title>pc</title>" in svg and "best trial: t1" in svg
    assert graphs.parallel_coordinates(["a"], [], label="x", element_id="p").startswith('<p id="p"')


def test_dag_lays_out_steps_by_dependency_and_colours_them_by_status() -> None:
    svg = graphs.dag([(NASTY, "Completed"), ("train", "Running"), ("score", "Failed"), ("lone", None)],
                     [(NASTY, "train"), ("train", "score"), ("ghost", "train")], label="g", element_id="pipeline-graph")
    _well_escaped(svg)
    assert svg.count('class="step"') == 4 and svg.count("marker-end") == 2  # the unknown step's edge is dropped
    for fill in ("#2da44e", "#218bff", "#cf222e"):  # charts.FILLS of ok, run, bad
        assert fill in svg
    assert "NotStarted" in svg and 'role="img"' in svg
    assert graphs.layers(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")]) == {"a": 0, "b": 1, "c": 2}
    assert graphs.layers(["a", "b"], [("a", "b"), ("b", "a")])  # a cycle does not loop
    assert graphs.dag([], [], label="g", element_id="x").startswith('<p id="x"')


def _boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """Each step's box as (left, top, right, bottom), read back from the SVG."""
    found = re.findall(r'data-step="([^"]*)"[^>]*><title>.*?</title><rect x="([\d.]+)" y="([\d.]+)" '
                       r'width="([\d.]+)" height="([\d.]+)"', svg)
    return {unescape(n): (float(x), float(y), float(x) + float(w), float(y) + float(h)) for n, x, y, w, h in found}


def _edges(svg: str) -> dict[str, str]:
    """Each arrow's path data by its title ("a → b")."""
    return {unescape(t): d for d, t in re.findall(r'<path d="([^"]+)"[^>]*marker-end[^>]*><title>([^<]*)</title>', svg)}


def _segments(d: str) -> list[list[tuple[float, float]]]:
    """A path of M, L and C commands as its segments, each a list of points: [p0, p1] or [p0, c1, c2, p3]."""
    tokens = re.findall(r"[MLC]|-?[\d.]+,-?[\d.]+", d)
    out: list[list[tuple[float, float]]] = []
    at: tuple[float, float] | None = None
    command = ""
    points: list[tuple[float, float]] = []
    for token in tokens:
        if token in "MLC":
            command, points = token, []
            continue
        x, y = (float(v) for v in token.split(","))
        points.append((x, y))
        if command == "M":
            at = (x, y)
        elif command == "L" or (command == "C" and len(points) == 3):
            assert at is not None
            out.append([at, *points])
            at, points = points[-1], []
    return out


def _along(segment: list[tuple[float, float]], steps: int = 64) -> list[tuple[float, float]]:
    if len(segment) == 2:
        (x0, y0), (x1, y1) = segment
        return [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(steps + 1)]
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = segment

    def at(t: float, a: float, b: float, c: float, e: float) -> float:
        return (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t ** 2 * c + t ** 3 * e

    return [(at(t, x0, x1, x2, x3), at(t, y0, y1, y2, y3)) for t in (i / steps for i in range(steps + 1))]


def _inside(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] < point[0] < box[2] and box[1] < point[1] < box[3]


def _view(svg: str) -> tuple[float, float]:
    found = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg)
    assert found
    return float(found[1]), float(found[2])


def test_an_arrow_that_skips_a_column_arcs_over_the_boxes_between() -> None:
    svg = graphs.dag([("prep", "Completed"), ("train", "Running"), ("score", None)],
                     [("prep", "train"), ("train", "score"), ("prep", "score")], label="g", element_id="pipeline-graph")
    boxes, edges = _boxes(svg), _edges(svg)
    assert set(edges) == {"prep → train", "train → score", "prep → score"} and svg.count("marker-end") == 3
    assert len({round(b[1]) for b in boxes.values()}) == 1  # all three in one row
    middle = boxes["train"]
    skip = _segments(edges["prep → score"])
    assert any(len(s) == 4 for s in skip)  # a cubic Bézier
    controls = [p for s in skip if len(s) == 4 for p in s[1:3]]
    assert controls and not any(_inside(p, middle) for p in controls)
    points = [p for s in skip for p in _along(s)]
    assert not any(_inside(p, middle) for p in points)  # the curve itself, not only its control points
    assert min(y for _, y in points) < middle[1] or max(y for _, y in points) > middle[3]  # it leaves the row
    width, height = _view(svg)
    assert all(0 <= x <= width and 0 <= y <= height for x, y in points)
    assert f'height="{int(height)}"' in svg and height > 102  # grown from a chain's 102 to hold the lane
    # It starts where the source's arrows start and ends, pointing right, 2 before the target's left side.
    (start, *_), end_segment = skip[0], skip[-1]
    assert start == (boxes["prep"][2], (boxes["prep"][1] + boxes["prep"][3]) / 2)
    assert end_segment[-1] == (boxes["score"][0] - 2, (boxes["score"][1] + boxes["score"][3]) / 2)
    assert end_segment[-2][0] < end_segment[-1][0] and end_segment[-2][1] == end_segment[-1][1]
    # The neighbouring arrows stay one curve across their gap.
    for a, b in (("prep", "train"), ("train", "score")):
        x1, y1, x2, y2 = boxes[a][2], (boxes[a][1] + boxes[a][3]) / 2, boxes[b][0], (boxes[b][1] + boxes[b][3]) / 2
        mid = (x1 + x2) / 2
        assert edges[f"{a} → {b}"] == f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2 - 2:.1f},{y2:.1f}"


def test_a_graph_without_skips_is_drawn_as_before_and_every_arrow_misses_every_box() -> None:
    chain = graphs.dag([("a", "Completed"), ("b", None)], [("a", "b")], label="g", element_id="x")
    assert _edges(chain) == {"a → b": "M192.0,36.0 C222.0,36.0 222.0,36.0 250.0,36.0"}
    assert 'viewBox="0 0 444 102"' in chain
    wide = ([("prep", None), ("a", None), ("b", None), ("c", None), ("d", None), ("e", None)],
            [("prep", "a"), ("prep", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("prep", "d"), ("a", "d"),
             ("b", "e"), ("prep", "e"), ("d", "e")])
    cycle = ([(NASTY, None), ("b", None), ("c", None)], [(NASTY, "b"), ("b", "c"), ("c", NASTY)])
    for nodes, links in (wide, cycle):
        svg = graphs.dag(nodes, links, label="g", element_id="g")
        assert svg == graphs.dag(nodes, links, label="g", element_id="g")  # deterministic
        assert "<line" not in svg and 'role="img"' in svg and "<title>g</title>" in svg
        boxes, edges = _boxes(svg), _edges(svg)
        assert len(edges) == len(links) and len(boxes) == len(nodes)
        width, height = _view(svg)
        for title, d in edges.items():
            points = [p for s in _segments(d) for p in _along(s)]
            assert all(0 <= x <= width and 0 <= y <= height for x, y in points), title
            assert not any(_inside(p, box) for p in points for box in boxes.values()), title
    _well_escaped(graphs.dag(*cycle, label="g", element_id="g"))


def test_numbers_are_short() -> None:
    assert [graphs.number(v) for v in (0.000012345, 0.123456, 3, 1234567.0, "x", True)] == \
        ["1.23e-05", "0.1235", "3", "1.23e+06", "x", "True"]
