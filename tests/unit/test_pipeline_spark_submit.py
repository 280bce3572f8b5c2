"""Spark steps at the server: a pipeline with one is checked at submit as its Spark child will be planned
(a conf its size cannot hold is a 4xx naming the step), a registered spark component resolves, and the
orchestrator submits the step as a Spark job (serverless when the step has resources and no compute)
that a later step reads and a rerun reuses."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from api_support import api_client, error_of, upload
from fastapi.testclient import TestClient
from sqlalchemy import select

from cible.core.errors import NotFoundError
from cible.core.lifecycle.jobs import path_to
from cible.server.reconcilers.orchestrator import Orchestrator
from cible.server.services.computes import ComputeService
from cible.server.services.job_plans import PlanBuilder
from cible.server.services.jobs import JobService, set_status
from cible.server.store.db import Store
from cible.server.store.rows import JobRow
from cible.testing import FakeNodeProvider, FrozenClock
from cible.workspace import WorkspacePaths

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SIZE = "Standard_DS2_v2"  # 2 vCPUs, 7 GiB
CONF = {"spark.executor.cores": 1, "spark.executor.memory": "512m", "spark.executor.instances": 1,
        "spark.driver.memory": "512m"}


def spark_component(code: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"type": "spark", "entry": {"file": "wrangle.py"}, "conf": CONF,
            "inputs": {"data": {"type": "uri_file", "mode": "direct"}},
            "outputs": {"out": {"type": "uri_folder", "mode": "direct"}},
            "args": "--data ${{inputs.data}} --out ${{outputs.out}}", **fields}
    return body if code is None else {**body, "code": code}


def pipeline(component: Any, **step: Any) -> dict[str, Any]:
    return {"type": "pipeline", "experiment_name": "sparks",
            "inputs": {"raw": {"type": "uri_file", "path": "azureml://datastores/workspaceblobstore/paths/raw.csv"}},
            "jobs": {"wrangle": {"type": "spark", "component": component,
                                 "inputs": {"data": "${{parent.inputs.raw}}"},
                                 **({"resources": {"instance_type": SIZE}} | step)},
                     "count": {"type": "command", "command": "ls ${{inputs.folder}}",
                               "inputs": {"folder": "${{parent.jobs.wrangle.outputs.out}}"}}}}


# ---- at submit (the REST API in-process) -------------------------------------------------------


@pytest.fixture
def api(migrated_db_url: str, tmp_path: Path):
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def test_a_pipeline_with_a_registered_spark_component_passes_submit(api: TestClient):
    code = upload(api, {"wrangle.py": b"print('wrangle')\n"})
    registered = api.put("/api/v1/components/wrangler/versions/1", json=spark_component(code))
    assert registered.status_code == 200, registered.text
    assert registered.json()["type"] == "spark" and registered.json()["entry"] == {"file": "wrangle.py"}
    job = api.put("/api/v1/jobs/sp1", json=pipeline("azureml:wrangler:1"))
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "Queued"
    assert [s["name"] for s in job.json()["steps"]] == ["wrangle", "count"]


def test_a_spark_component_whose_code_is_not_uploaded_is_refused_at_registration(api: TestClient):
    refused = api.put("/api/v1/components/wrangler/versions/1", json=spark_component("/home/me/src"))
    assert refused.status_code == 400
    assert "code: '/home/me/src' is a local path" in error_of(refused)["message"]


def test_a_spark_step_its_size_cannot_hold_is_refused_at_submit_naming_the_step(api: TestClient):
    big = spark_component(conf={**CONF, "spark.executor.memory": "64g"})
    refused = api.put("/api/v1/jobs/sp2", json=pipeline(big))
    assert refused.status_code == 400, refused.text
    message = error_of(refused)["message"]
    assert message.startswith("jobs.wrangle: conf.spark.executor.memory: 65536 MiB do not fit a node of "
                              f"{SIZE}"), message
    unknown = api.put("/api/v1/jobs/sp3", json=pipeline(spark_component(), resources={"instance_type": "Standard_X"}))
    assert unknown.status_code in (400, 404) and "jobs.wrangle: resources.instance_type" in error_of(unknown)["message"]


# ---- run by the orchestrator ---------------------------------------------------------------------


@pytest.fixture
def world(store: Store, tmp_path: Path):
    clock = FrozenClock(NOW)
    jobs: JobService

    def plan_of(name: str) -> dict[str, Any] | None:
        try:
            return jobs.run_handle(name)[1].plan
        except NotFoundError:
            return None

    def no_assets(kind: str, name: str, version: str) -> Any:
        raise NotFoundError(f"no {kind} {name}:{version}")

    plans = PlanBuilder(WorkspacePaths(tmp_path / "ws"), plan_of, no_assets)
    computes = ComputeService(store, 4, clock, providers={"local": FakeNodeProvider("local")})  # serverless nodes
    jobs = JobService(store, computes, plans, clock, default_compute="local")
    jobs.spark_environment = "host"
    return store, clock, jobs, Orchestrator(store, jobs, clock, lambda *args: None)


def _drive(world: Any, name: str, spec: dict[str, Any]) -> None:
    """Submit `name`, completing each child job by hand as the job reconciler would once it ran."""
    store, clock, jobs, orchestrator = world
    jobs.create_or_update(name, spec)
    for _ in range(6):
        orchestrator.reconcile_once()
        with store.session() as session:
            for row in session.scalars(select(JobRow).where(JobRow.parent_job_name == name)):
                for status in path_to(row.status, "Completed"):
                    set_status(session, row, status, clock.now(), reason="moved by the test")
    orchestrator.reconcile_once()


def test_the_orchestrator_submits_a_spark_step_as_a_serverless_spark_job_and_reuses_it(world: Any):
    store, _, jobs, _ = world
    _drive(world, "p1", pipeline(spark_component()))
    with store.session() as session:
        rows = {r.parent_step: r for r in session.scalars(select(JobRow).where(JobRow.parent_job_name == "p1"))}
        parent = session.get(JobRow, "p1")
        assert parent.status == "Completed"
        spark = rows["wrangle"]
        assert (spark.job_type, spark.target, spark.compute) == ("spark", "serverless:p1_wrangle", None)
        assert spark.run.serverless.size == SIZE
        assert spark.run.plan["spark"]["mode"] == "standalone"
        assert spark.spec["conf"] == CONF and spark.reuse_key
        assert rows["count"].spec["inputs"]["folder"]["path"] == "azureml://jobs/p1_wrangle/outputs/out"
    _drive(world, "p2", pipeline(spark_component()))
    assert jobs.get("p2")["status"] == "Completed"
    assert {s["name"]: (s["status"], s["job"]) for s in jobs.get("p2")["steps"]} == {
        "wrangle": ("Reused", "p1_wrangle"), "count": ("Reused", "p1_count")}
