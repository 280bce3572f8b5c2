"""MLflow tracking for jobs, end to end: MLflow's real server as the workspace's child, behind the
/mlflow proxy and a token check, a launcher's start_run/end_run, and job processes that log with
the plain MLflow client and nothing but the environment job_environment gives them.

One TrackingServer for the module: MLflow takes seconds to start.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cible.launch.tracking import TrackingError, end_run, job_environment, start_run
from cible.server.errors import install_error_handlers
from cible.server.tracking import TrackingServer, run_metrics
from cible.server.tracking_proxy import tracking_router
from cible.server.auth import TokenAuthMiddleware
from cible.server.tokens import Tokens
from cible.testing import serve_asgi as serve, wait_until

TOKEN = secrets.token_urlsafe(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PYTHON = sys.executable  # the venv's python: it has mlflow and scikit-learn


@dataclass
class Workspace:
    home: Path
    tracking: TrackingServer
    url: str
    first_response: httpx.Response  # sent through the proxy right after start()
    was_starting: bool
    ready_after_s: float

    @property
    def tracking_uri(self) -> str:
        return self.url + "/mlflow"


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    home = tmp_path_factory.mktemp("ws")
    tracking = TrackingServer(home)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(tracking_router(tracking))
    app.add_middleware(TokenAuthMiddleware, tokens=Tokens(TOKEN))
    with serve(app) as url:
        began = time.monotonic()
        tracking.start()
        was_starting = not tracking.ready(0)
        # Sent while MLflow is still importing: the proxy waits for it instead of failing.
        first = httpx.get(url + "/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 5},
                          headers=AUTH, timeout=90)
        try:
            yield Workspace(home, tracking, url, first, was_starting, time.monotonic() - began)
        finally:
            tracking.stop()


def job_env(ws: Workspace, run: dict, experiment: str) -> dict[str, str]:
    """The job's environment: the machine's, minus anything MLflow or cible, plus job_environment's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CIBLE_"))}
    return {**base, **job_environment(ws.tracking_uri, TOKEN, run, experiment)}


def run_job(ws: Workspace, run: dict, experiment: str, code: str, cwd: Path) -> None:
    done = subprocess.run([PYTHON, "-c", code], check=False, env=job_env(ws, run, experiment), cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (cwd / "mlruns").exists()  # nothing went to a local store


def test_the_proxy_waited_for_the_starting_child(ws: Workspace):
    assert ws.was_starting
    assert ws.first_response.status_code == 200, ws.first_response.text
    assert [e["name"] for e in ws.first_response.json()["experiments"]] == ["Default"]
    assert ws.tracking.is_ready and (ws.home / "mlflow" / "mlflow.db").is_file()


def test_a_job_logs_into_its_precreated_run(ws: Workspace, tmp_path: Path):
    run = start_run(ws.tracking_uri, TOKEN, "hello-exp", "job-hello", {"cible.job": "job-hello"})
    (tmp_path / "report.txt").write_text("hello artifact\n")
    run_job(ws, run, "hello-exp", (
        "import os\n"
        "given = os.environ['MLFLOW_RUN_ID']  # MLflow consumes the variable when it resumes the run\n"
        "import mlflow\n"
        "mlflow.log_param('p', 1)\n"
        "mlflow.log_metric('m', 0.5)\n"
        "mlflow.log_metric('m', 0.7)\n"
        "mlflow.log_artifact('report.txt')\n"
        "assert mlflow.active_run().info.run_id == given\n"
    ), tmp_path)
    end_run(ws.tracking_uri, TOKEN, run["run_id"], "Completed")

    shown = run_metrics(ws.tracking, run["run_id"])
    assert shown["metrics"] == {"m": 0.7} and shown["params"] == {"p": "1"}
    assert shown["status"] == "FINISHED" and shown["run_id"] == run["run_id"]
    assert shown["experiment_id"] == run["experiment_id"] and shown["run_name"] == "job-hello"
    assert shown["artifact_uri"].startswith("mlflow-artifacts:/")

    listed = httpx.get(ws.tracking_uri + "/api/2.0/mlflow/artifacts/list", params={"run_id": run["run_id"]},
                       headers=AUTH).json()
    assert [f["path"] for f in listed["files"]] == ["report.txt"]
    artifact = httpx.get(f"{ws.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{run['experiment_id']}/"
                         f"{run['run_id']}/artifacts/report.txt", headers=AUTH)
    assert artifact.status_code == 200 and artifact.text == "hello artifact\n"
    assert (ws.home / "mlflow" / "artifacts" / run["experiment_id"] / run["run_id"] / "artifacts"
            / "report.txt").is_file()


def test_autolog_logs_training_metrics_into_the_jobs_run(ws: Workspace, tmp_path: Path):
    run = start_run(ws.tracking_uri, TOKEN, "autolog-exp", "job-autolog", {})
    run_job(ws, run, "autolog-exp", (
        "import mlflow\n"
        "mlflow.autolog(log_models=False)\n"  # model logging works too; it only costs ~20 s here
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "X, y = load_iris(return_X_y=True)\n"
        "LogisticRegression(max_iter=300).fit(X, y)\n"
    ), tmp_path)
    end_run(ws.tracking_uri, TOKEN, run["run_id"], "Failed")
    shown = run_metrics(ws.tracking, run["run_id"])
    assert {"training_f1_score", "training_accuracy_score", "training_score"} <= set(shown["metrics"])
    assert shown["params"]["max_iter"] == "300"
    assert shown["status"] == "FAILED"
    runs = httpx.post(ws.tracking_uri + "/api/2.0/mlflow/runs/search", headers=AUTH,
                      json={"experiment_ids": [run["experiment_id"]]}).json()["runs"]
    assert [r["info"]["run_id"] for r in runs] == [run["run_id"]]  # no second run


def test_a_wrong_or_missing_token_is_refused(ws: Workspace):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.get(ws.tracking_uri + "/api/2.0/mlflow/experiments/search", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "Unauthorized"
    began = time.monotonic()
    with pytest.raises(TrackingError) as refused:
        start_run(ws.tracking_uri, "wrong", "never-exp", "job-never", {})
    assert refused.value.status == 401 and refused.value.error_code == "Unauthorized"
    assert time.monotonic() - began < 5  # refused at once, not retried until the deadline


def test_two_jobs_creating_one_experiment_at_once_get_the_same_one(ws: Workspace):
    barrier = threading.Barrier(4)
    results: dict[int, dict] = {}

    def launch(i: int) -> None:
        barrier.wait(10)
        results[i] = start_run(ws.tracking_uri, TOKEN, "raced-exp", f"job-race-{i}", {})

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4
    assert len({r["experiment_id"] for r in results.values()}) == 1
    assert len({r["run_id"] for r in results.values()}) == 4
    found = httpx.post(ws.tracking_uri + "/api/2.0/mlflow/experiments/search", headers=AUTH,
                       json={"filter": "name = 'raced-exp'", "max_results": 10}).json()["experiments"]
    assert len(found) == 1


def test_start_run_again_after_a_launcher_crash_reuses_the_run(ws: Workspace):
    first = start_run(ws.tracking_uri, TOKEN, "again-exp", "job-again", {"cible.job": "job-again"})
    assert start_run(ws.tracking_uri, TOKEN, "again-exp", "job-again", {}, run_id=first["run_id"]) == first
    assert start_run(ws.tracking_uri, TOKEN, "again-exp", "job-again", {}) == first  # found by its name
    tags = {t["key"]: t["value"] for t in httpx.get(
        ws.tracking_uri + "/api/2.0/mlflow/runs/get", params={"run_id": first["run_id"]}, headers=AUTH,
    ).json()["run"]["data"]["tags"]}
    assert tags["mlflow.runName"] == "job-again" and tags["cible.job"] == "job-again"
    assert run_metrics(ws.tracking, "0" * 32) is None


def test_the_child_ends_with_its_parent_and_comes_back_with_every_run(ws: Workspace):
    """Last: costs a restart. Closing the child's pipe is what the kernel does when the server dies."""
    run = start_run(ws.tracking_uri, TOKEN, "restart-exp", "job-restart", {})
    httpx.post(ws.tracking_uri + "/api/2.0/mlflow/runs/log-metric", headers=AUTH, json={
        "run_id": run["run_id"], "key": "loss", "value": 0.25, "timestamp": int(time.time() * 1000), "step": 0,
    }).raise_for_status()
    child = ws.tracking._proc
    old_pid = child.pid
    child.stdin.close()
    wait_until(lambda: child.poll() is not None, 30, message="the child to end when its pipe closes")
    # The next use restarts it; the launcher's calls wait (the proxy holds them) meanwhile.
    again = start_run(ws.tracking_uri, TOKEN, "restart-exp", "job-restart", {}, run_id=run["run_id"])
    assert again == run
    assert ws.tracking.pid not in (None, old_pid) and ws.tracking.restarts == 1
    end_run(ws.tracking_uri, TOKEN, run["run_id"], "Canceled")
    shown = run_metrics(ws.tracking, run["run_id"])
    assert shown["metrics"] == {"loss": 0.25} and shown["status"] == "KILLED"
