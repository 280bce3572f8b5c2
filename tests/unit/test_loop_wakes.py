"""Which control loops a submit and a job's end wake: only those that act on the job. A loop woken for
nothing makes a whole pass, competing with the request and with the loop that has the work."""

from __future__ import annotations

from dataclasses import replace

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.core.lifecycle.jobs import JobStatus
from cible.core.models.records import RunRecord
from cible.core.planning.jobs import LiveJob

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}
LOOPS = ("reconciler", "clusters", "orchestrator", "serving")


@pytest.fixture
def api(migrated_db_url: str, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        assert client.put("/api/v1/computes/cpu-cluster", json=CLUSTER).status_code in (200, 201)
        yield client


@pytest.fixture
def woken(api: TestClient) -> list[str]:
    """The loops woken since the test began, in order (their passes do not run: reconcile=False)."""
    calls: list[str] = []
    for loop in LOOPS:
        setattr(getattr(api.app.state, loop), "wake", lambda loop=loop: calls.append(loop))
    return calls


def job(compute: str, **fields) -> dict:  # noqa: ANN003
    return {"command": "echo hi", "compute": compute, "experiment_name": "wakes", **fields}


@pytest.mark.parametrize(("compute", "expected"), [
    ("local", ["reconciler"]),  # its slots are the job reconciler's
    ("azureml:cpu-cluster", ["clusters"]),  # queued, it is the cluster reconciler's until placed
    ("serverless", ["clusters"]),
])
def test_a_submit_wakes_the_loop_that_runs_its_job(api: TestClient, woken: list[str], compute: str,
                                                   expected: list[str]):
    assert api.put("/api/v1/jobs/j1", json=job(compute)).status_code in (200, 201)
    assert woken == expected


def test_a_pipeline_wakes_the_orchestrator_only(api: TestClient, woken: list[str]):
    pipeline = {"type": "pipeline", "experiment_name": "wakes", "settings": {"default_compute": "azureml:cpu-cluster"},
                "jobs": {"step": {"type": "command", "command": "echo hi"}}}
    response = api.put("/api/v1/jobs/p1", json=pipeline)
    assert response.status_code in (200, 201), response.text
    assert woken == ["orchestrator"]  # it submits the steps, which wake their own loops


def test_a_batch_wakes_each_loop_once(api: TestClient, woken: list[str]):
    jobs = [{"name": f"b{i}", **job(compute)} for i, compute in enumerate(["local", "azureml:cpu-cluster", "local"])]
    assert api.post("/api/v1/jobs", json={"jobs": jobs}).status_code == 200
    assert sorted(woken) == ["clusters", "reconciler"]


def test_a_cancel_wakes_every_job_loop(api: TestClient, woken: list[str]):
    api.put("/api/v1/jobs/j1", json=job("local"))
    woken.clear()
    assert api.post("/api/v1/jobs/j1:cancel").status_code == 200
    assert sorted(woken) == ["clusters", "orchestrator", "reconciler"]


ENDED = LiveJob(name="j1", status=JobStatus.COMPLETED, target="local", run=RunRecord(), runs_on=None)


@pytest.mark.parametrize(("ended", "expected"), [
    ([ENDED], []),  # a plain job: nobody waits for it
    ([replace(ENDED, parent="sweep-1")], ["orchestrator"]),  # its sweep may start the next trial
    ([replace(ENDED, job_type="replica")], ["serving"]),  # its deployment may replace it
    ([ENDED, replace(ENDED, parent="p"), replace(ENDED, job_type="replica")], ["orchestrator", "serving"]),
])
def test_a_jobs_end_wakes_who_waits_for_it(api: TestClient, woken: list[str], ended: list[LiveJob],
                                           expected: list[str]):
    api.app.state.reconciler.on_any_end(ended)
    assert woken == expected
