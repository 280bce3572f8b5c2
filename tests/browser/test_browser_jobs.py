"""A job watched in the studio as it runs: its log grows on the page, its MLflow metric is drawn as
a chart, it is canceled from the page; the jobs list; the first paint of a job page (recorded, not
asserted: the benchmark is read from timings.json and the printed lines); a sweep's trials and a
pipeline's steps.

One workspace with MLflow's tracking server (the metric chart reads the job's run) for the module.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browser_support import Studio, expect, paint_timings, record_timings
from e2e_support import REPO, Workspace, write_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

LIVE = "live-job"
TICKER = '''
import sys
import time

print("starting", flush=True)
import mlflow  # the host's Python: mlflow comes with cible

for step in range(400):  # ~2 minutes at most; the test cancels it long before
    print(f"tick {step}", flush=True)
    if step % 3 == 0:
        mlflow.log_metric("loss", 1.0 / (1.0 + step / 3.0), step=step // 3)
    time.sleep(0.3)
'''
PAINT_LOADS = 5


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    ws = Workspace(tmp_path_factory.mktemp("studio-jobs"), tracking=True)
    yield ws
    ws.stop()


@pytest.fixture(scope="module")
def live_job(workspace: Workspace) -> str:
    """A job on `local` that prints a line every 0.3 s and logs `loss` every ~0.9 s, for ~2 minutes."""
    src = workspace.cwd / "ticker"
    src.mkdir(exist_ok=True)
    (src / "ticker.py").write_text(TICKER)
    spec = write_yaml(workspace.cwd, "live.yml", """
        code: ticker
        command: python ticker.py
        compute: local
        experiment_name: studio-live
        display_name: ticks and loss
        """)
    workspace.cible("job", "create", "-f", spec, "-n", LIVE)
    workspace.wait_status(LIVE, "Running", timeout=60)
    return LIVE


@pytest.fixture(scope="module")
def session(studio: Studio, live_job: str):
    """A context signed in through a printed link (one session for the module's pages)."""
    context, _ = studio.signed_in("/jobs")
    yield context
    context.close()


def values_in(text: str) -> int:
    found = re.search(r"\((\d+) values?\)", text)
    assert found, text
    return int(found.group(1))


def tick_count(page) -> int:
    return page.locator("#job-log").inner_text().count("tick ")


def test_a_running_jobs_log_grows_on_its_page(studio: Studio, session, live_job: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs/{live_job}")
    expect(page.locator("#job-status")).to_have_text("Running")
    log = page.locator("#job-log")
    expect(log).to_contain_text("tick ", timeout=30_000)
    before = tick_count(page)
    # ~3 lines a second are printed; the page polls the log about every second.
    page.wait_for_function("n => (document.querySelector('#job-log').textContent.match(/tick /g) || []).length >= n",
                           arg=before + 10, timeout=20_000)
    assert tick_count(page) >= before + 10
    assert page.url.endswith(f"/jobs/{live_job}")  # the same page, never reloaded
    page.close()


def test_a_running_jobs_metric_is_drawn_as_a_chart(studio: Studio, session, live_job: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs/{live_job}")
    chart = page.locator('#metric-charts .chart[data-metric="loss"]')
    # MLflow's server starts with the workspace; the first metric can take its start-up time.
    expect(chart.locator("canvas").first).to_be_visible(timeout=90_000)
    page.wait_for_function("() => Number(document.querySelector('#metric-charts').dataset.drawn || 0) >= 1")
    box = chart.locator("canvas").first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 50, box
    # Refreshed while the job runs: the chart's line says how many values it has, and that grows.
    latest = chart.locator(".metric-latest")
    expect(latest).to_contain_text(re.compile(r"\(\d+ values?\)"))
    first = values_in(latest.inner_text())
    page.wait_for_function("n => { const m = document.querySelector('#metric-charts .chart[data-metric=\"loss\"] "
                           ".metric-latest').textContent.match(/\\((\\d+) value/); return m && Number(m[1]) > n; }",
                           arg=first, timeout=30_000)
    studio.look(page, "job-running")
    page.close()


def test_first_paint_of_a_job_page(studio: Studio, session, live_job: str) -> None:
    """Measured over a few loads and recorded (timings.json, printed): the benchmark's number. Not
    asserted against the target here (a timed test flakes on a busy machine); read it in the note."""
    page = studio.page(session)
    for key, path, what in (("job_page_first_paint", f"/jobs/{live_job}", "job page (running: log and chart live)"),
                            ("jobs_list_first_paint", "/jobs", "jobs list")):
        summary = paint_timings(page, studio.url + path, PAINT_LOADS)
        where = record_timings(key, {"page": path, **summary})
        fcp = [load["first_contentful_paint_ms"] for load in summary["loads"]]
        print(f"\n{what} {path}: first contentful paint over {PAINT_LOADS} loads: median "
              f"{summary['first_contentful_paint_ms_median']:.0f} ms (each: {', '.join(f'{v:.0f}' for v in fcp)}); "
              f"first byte {summary['response_start_ms_median']:.0f} ms, DOMContentLoaded "
              f"{summary['dom_content_loaded_ms_median']:.0f} ms (medians); target <= 300 ms; in {where}")
        assert summary["first_contentful_paint_ms_min"] > 0
    page.close()


def test_the_jobs_list_shows_the_job_and_filters(studio: Studio, session, live_job: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs")
    rows = page.locator('#jobs-table [data-testid="job-row"]')
    expect(rows.filter(has_text=live_job)).to_have_count(1)
    row = rows.filter(has_text=live_job)
    expect(row).to_contain_text("Running")
    studio.look(page, "jobs-list")
    # The filters form: status Completed hides the running job; Running shows it.
    form = page.locator("#job-filters")
    form.get_by_label("Status").select_option("Completed")
    form.get_by_role("button", name="Filter").click()
    expect(rows.filter(has_text=live_job)).to_have_count(0)
    form.get_by_label("Status").select_option("Running")
    form.get_by_role("button", name="Filter").click()
    expect(rows.filter(has_text=live_job)).to_have_count(1)
    # The row's link opens the job's page.
    page.goto(f"{studio.url}/jobs")
    rows.filter(has_text=live_job).get_by_role("link", name=live_job).click()
    studio.wait_path(page, f"/jobs/{live_job}")
    page.close()


def test_cancel_a_running_job_from_its_page(studio: Studio, session, workspace: Workspace, live_job: str) -> None:
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs/{live_job}")
    expect(page.locator("#job-status")).to_have_text("Running")
    page.locator("#cancel-job").click()
    expect(page.locator("#job-status")).to_have_text("Canceled", timeout=60_000)
    expect(page.locator("#cancel-job")).to_be_hidden()
    assert workspace.wait_status(live_job, "Canceled", timeout=10)["status"] == "Canceled"
    studio.ended_job_page_settled(page)
    studio.look(page, "job-canceled")
    page.close()


def test_a_failed_jobs_page_shows_its_error(studio: Studio, session, workspace: Workspace) -> None:
    spec = write_yaml(workspace.cwd, "failing.yml", """
        command: python -c "import sys; print('about to fail'); sys.exit(3)"
        compute: local
        experiment_name: studio-live
        """)
    workspace.cible("job", "create", "-f", spec, "-n", "failing-job")
    workspace.wait_status("failing-job", timeout=60)
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs/failing-job")
    expect(page.locator("#job-status")).to_have_text("Failed")
    # Read at once (no retry after a failed first fetch): the log of an ended job is there in seconds.
    expect(page.locator("#job-log")).to_contain_text("about to fail", timeout=4_000)
    expect(page.locator("main")).to_contain_text("exited with code 3")  # the error box
    studio.ended_job_page_settled(page)
    studio.look(page, "job-failed")
    page.close()


# -- sweeps and pipelines: the parents pages --------------------------------------------------------
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def cluster(workspace: Workspace) -> str:
    workspace.cible("compute", "create", "-f", EXAMPLES / "clusters" / "cpu-cluster.yml")
    return "cpu-cluster"


def _run_example(workspace: Workspace, example: Path, name: str) -> None:
    proc = workspace.cible("job", "create", "-f", example, "-n", name, "--stream", "-o", "json", timeout=600)
    assert '"Completed"' in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_a_sweeps_trials_page(studio: Studio, session, workspace: Workspace, cluster: str) -> None:
    _run_example(workspace, EXAMPLES / "sweeps" / "hello-sweep.yml", "studio-sweep")
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs/studio-sweep")
    expect(page.locator("#job-status")).to_have_text("Completed")
    studio.ended_job_page_settled(page)
    studio.look(page, "sweep-job")
    page.get_by_role("link", name=re.compile("^Trials")).first.click()  # the job page links its trials
    studio.wait_path(page, "/jobs/studio-sweep/trials")
    expect(page.locator("#trials-table tbody tr")).to_have_count(4)
    expect(page.locator("#trials-table tr.best")).to_have_count(1)
    expect(page.locator("#trials-plot")).to_be_visible()
    studio.look(page, "sweep-trials")
    page.close()


def test_a_pipelines_steps_page(studio: Studio, session, workspace: Workspace, cluster: str) -> None:
    _run_example(workspace, EXAMPLES / "pipelines" / "data-pipeline.yml", "studio-pipeline")
    page = studio.page(session)
    page.goto(f"{studio.url}/jobs/studio-pipeline")
    page.get_by_role("link", name=re.compile("^Steps")).first.click()  # the job page links its steps
    studio.wait_path(page, "/jobs/studio-pipeline/steps")
    expect(page.locator("#pipeline-graph")).to_be_visible()
    for step in ("prep", "train", "score"):
        expect(page.locator("main")).to_contain_text(step)
    studio.look(page, "pipeline-steps")
    assert urlsplit(page.url).path == "/jobs/studio-pipeline/steps"
    page.close()
