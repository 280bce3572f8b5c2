"""The orchestrator's pass over sweeps and pipelines, on a real migrated store with a frozen clock.

The job service is the real one (every child goes through a submit's checks); what the other
reconcilers would do to a child (run it, end it) is done here by hand with `set_status`, and the
trials' metrics come from a fake MLflow history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cible.core.errors import NotFoundError
from cible.core.lifecycle.jobs import path_to
from cible.server.reconcilers.orchestrator import FAIL_AFTER, Orchestrator
from cible.server.services.computes import ComputeService
from cible.server.services.job_plans import PlanBuilder
from cible.server.services.jobs import JobService, set_status
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow
from cible.testing import FrozenClock
from cible.workspace import WorkspacePaths

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class World:
    store: Store
    clock: FrozenClock
    jobs: JobService
    orchestrator: Orchestrator
    metrics: dict[str, list[float]] = field(default_factory=dict)  # trial -> its primary metric as logged
    broken: list[Exception] = field(default_factory=list)  # raised by the metric history when set

    def history(self, job: str, experiment: str, metric: str) -> list[float] | None:
        if self.broken:
            raise self.broken[0]
        assert (experiment, metric) == ("sweeps", "loss")  # where the trial's run is, and what it logs
        return self.metrics.get(job)

    def row(self, name: str) -> JobRow:
        with self.store.session() as session:
            found = session.get(JobRow, name)
            assert found is not None, f"no job {name}"
            session.expunge(found)
            return found

    def children(self, parent: str) -> dict[str, str]:
        """child name -> status."""
        with self.store.session() as session:
            return {r.name: r.status for r in session.scalars(select(JobRow).where(JobRow.parent_job_name == parent))}

    def move(self, name: str, target: str) -> None:
        """What the job reconciler would do: the child's status moved along its lifecycle."""
        with self.store.session() as session:
            row = session.get(JobRow, name)
            for step in path_to(row.status, target):
                set_status(session, row, step, self.clock.now(), reason="moved by the test")

    def reconcile(self) -> None:
        self.orchestrator.reconcile_once()


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    clock = FrozenClock(NOW)
    computes = ComputeService(store, 4, clock)
    jobs: JobService

    def plan_of(name: str) -> dict[str, Any] | None:  # as the app wires it: a step's input from an earlier job
        try:
            return jobs.run_handle(name)[1].plan
        except NotFoundError:
            return None

    def no_assets(kind: str, name: str, version: str) -> Any:
        raise NotFoundError(f"no {kind} {name}:{version}")

    # A tracking URI: a sweep is refused at submit on a server without MLflow. Nothing reaches it.
    plans = PlanBuilder(WorkspacePaths(tmp_path / "ws"), plan_of, no_assets, tracking={"uri": "http://127.0.0.1:9/mlflow"})
    jobs = JobService(store, computes, plans, clock, default_compute="local")
    with store.session() as session:  # a cluster for pipeline steps (they cannot run on local)
        session.add(ComputeRow(name="cpu-cluster", compute_type="amlcompute", provisioning_state="Succeeded",
                               spec={"name": "cpu-cluster", "type": "amlcompute", "size": "Standard_DS1_v2",
                                     "min_instances": 0, "max_instances": 2, "idle_time_before_scale_down": 120,
                                     "cible": {"provider": "local"}},
                               created_at=NOW, updated_at=NOW))
    world = World(store, clock, jobs, None)  # type: ignore[arg-type]
    world.orchestrator = Orchestrator(store, jobs, clock, world.history)
    return world


SWEEP = {
    "type": "sweep",
    "compute": "local",
    "experiment_name": "sweeps",
    "trial": {"command": "echo ${{search_space.lr}} > ${{outputs.model}}/lr.txt"},
    "sampling_algorithm": {"type": "random", "seed": 3},
    "search_space": {"lr": {"type": "uniform", "min_value": 0.01, "max_value": 0.9}},
    "objective": {"goal": "minimize", "primary_metric": "loss"},
    "limits": {"max_total_trials": 4, "max_concurrent_trials": 2},
    "outputs": {"model": {"type": "uri_folder"}},
}


def test_a_sweep_keeps_max_concurrent_trials_going_and_ends_with_the_best_trials_outputs(world: World):
    world.jobs.create_or_update("sw", SWEEP)
    world.reconcile()
    assert world.children("sw") == {"sw_0": "Queued", "sw_1": "Queued"}
    assert world.row("sw").status == "Running"
    world.reconcile()  # nothing ended: no third trial
    assert set(world.children("sw")) == {"sw_0", "sw_1"}

    world.move("sw_0", "Running")
    world.metrics["sw_0"] = [0.9, 0.5]
    world.move("sw_0", "Completed")
    world.reconcile()
    assert set(world.children("sw")) == {"sw_0", "sw_1", "sw_2"}  # one ended: one more started

    for trial, history in (("sw_1", [0.3, 0.2]), ("sw_2", [0.8])):
        world.move(trial, "Running")
        world.metrics[trial] = history
        world.move(trial, "Completed")
    world.reconcile()
    assert set(world.children("sw")) == {"sw_0", "sw_1", "sw_2", "sw_3"}  # max_total_trials reached
    assert world.row("sw").children.best_trial == "sw_1"
    world.reconcile()
    assert len(world.children("sw")) == 4

    world.move("sw_3", "Running")
    world.metrics["sw_3"] = [0.4]
    world.move("sw_3", "Completed")
    world.reconcile()
    sweep = world.row("sw")
    assert sweep.status == "Completed"
    assert sweep.children.best_trial == "sw_1"
    assert sweep.children.metrics["sw_3"] == [0.4]
    # Its outputs are the best trial's, as that trial's plan has them.
    assert sweep.run.plan["outputs"]["model"] == world.row("sw_1").run.plan["outputs"]["model"]
    params = [world.row(f"sw_{i}").spec["properties"]["hyperparameters"]["lr"] for i in range(4)]
    assert all(0.01 <= lr <= 0.9 for lr in params) and len(set(params)) == 4
    shown = world.jobs.get("sw")
    assert shown["best_trial"]["name"] == "sw_1" and shown["best_trial"]["metric"] == 0.2


def _pipeline(deterministic: bool = True) -> dict[str, Any]:
    component = {"type": "command", "name": "writer", "version": "1", "is_deterministic": deterministic,
                 "command": "echo hi > ${{outputs.out}}/hi.txt", "outputs": {"out": {"type": "uri_folder"}}}
    return {"type": "pipeline", "experiment_name": "pipes",
            "settings": {"default_compute": "azureml:cpu-cluster"},
            "jobs": {"write": {"type": "command", "component": component},
                     "read": {"type": "command", "command": "cat ${{inputs.x}}/hi.txt",
                              "inputs": {"x": "${{parent.jobs.write.outputs.out}}"}}}}


def _run_pipeline(world: World, name: str, spec: dict[str, Any]) -> None:
    """Submit pipeline `name` and drive it to its end: each command job it makes (at any depth) is
    completed by hand as soon as it exists; sweeps and nested pipelines are left to the orchestrator."""
    world.jobs.create_or_update(name, spec)
    for _ in range(8):
        world.reconcile()
        with world.store.session() as session:
            live = list(session.scalars(select(JobRow.name).where(
                JobRow.job_type == "command", JobRow.status.notin_(("Completed", "Failed", "Canceled")))))
        for job in live:
            world.move(job, "Completed")
    world.reconcile()


def test_a_pipeline_step_whose_reuse_key_matches_a_completed_job_is_recorded_reused_without_a_child(world: World):
    _run_pipeline(world, "p1", _pipeline())
    assert world.row("p1").status == "Completed"
    assert set(world.children("p1")) == {"p1_write", "p1_read"}

    world.jobs.create_or_update("p2", _pipeline())
    world.reconcile()
    record = world.row("p2").children
    assert record.reused == {"write": "p1_write"}
    assert world.children("p2") == {}  # no child made for a reused step
    world.reconcile()  # its follower binds to the earlier job's output: reused too
    world.reconcile()
    assert world.row("p2").children.reused == {"write": "p1_write", "read": "p1_read"}
    assert world.row("p2").status == "Completed"
    steps = {s["name"]: s for s in world.jobs.get("p2")["steps"]}
    assert {n: (s["status"], s["job"]) for n, s in steps.items()} == {"write": ("Reused", "p1_write"),
                                                                      "read": ("Reused", "p1_read")}


def test_a_step_after_a_nested_pipeline_is_reused_when_nothing_changed(world: World):
    inner = {"type": "pipeline", "outputs": {"result": {"type": "uri_folder"}},
             "jobs": {"two": {"type": "command", "command": "echo 2 > ${{outputs.dst}}/x",
                              "outputs": {"dst": "${{parent.outputs.result}}"}}}}
    spec = {"type": "pipeline", "settings": {"default_compute": "azureml:cpu-cluster"},
            "jobs": {"inner": {"type": "pipeline", "component": inner},
                     "after": {"type": "command", "command": "cat ${{inputs.x}}/x",
                               "inputs": {"x": "${{parent.jobs.inner.outputs.result}}"}}}}
    _run_pipeline(world, "n1", spec)
    assert world.row("n1").status == "Completed"
    assert world.row("n1_inner").run.plan["outputs"]["result"] == world.row("n1_inner_two").run.plan["outputs"]["dst"]

    _run_pipeline(world, "n2", spec)
    assert world.row("n2").status == "Completed"
    assert world.row("n2_inner").children.reused == {"two": "n1_inner_two"}
    # `after` reads the same data as before (made by n1_inner_two), through a new nested pipeline job.
    assert world.row("n2").children.reused == {"after": "n1_after"}


def test_a_step_of_a_non_deterministic_component_is_not_reused(world: World):
    _run_pipeline(world, "n1", _pipeline(deterministic=False))
    world.jobs.create_or_update("n2", _pipeline(deterministic=False))
    world.reconcile()
    assert world.row("n2").children.reused == {}
    assert world.children("n2") == {"n2_write": "Queued"}
    assert world.row("n2_write").reuse_key is None


def test_a_parent_whose_pass_keeps_raising_is_failed_and_its_live_children_canceled(world: World):
    world.jobs.create_or_update("sw", SWEEP)
    world.reconcile()
    world.move("sw_0", "Running")
    world.broken.append(RuntimeError("the history cannot be read"))
    for attempt in range(1, FAIL_AFTER + 1):
        world.reconcile()
        trouble = world.orchestrator.troubles.get("sw")
        if attempt < FAIL_AFTER:
            assert world.row("sw").status == "Running" and trouble is not None and trouble.count == attempt
            world.reconcile()  # backing off: not tried again before its time
            assert world.orchestrator.troubles.get("sw").count == attempt
            world.clock.advance(trouble.wait_s(world.clock.now()))
    sweep = world.row("sw")
    assert sweep.status == "Failed"
    assert sweep.error.code == "ReconcileError" and "the history cannot be read" in sweep.error.message
    assert f"{FAIL_AFTER} tries" in sweep.error.message
    assert world.children("sw") == {"sw_0": "CancelRequested", "sw_1": "CancelRequested"}
    assert world.orchestrator.troubles.get("sw") is None
    world.reconcile()  # an ended parent is left alone
    assert world.row("sw").status == "Failed"


def test_a_step_reads_the_default_artifacts_of_a_step_that_does_not_declare_them(world: World):
    # Azure's hello-pipeline-default-artifacts: the producer names no `artifacts` output.
    world.jobs.create_or_update("a1", {
        "type": "pipeline", "settings": {"default_compute": "azureml:cpu-cluster"},
        "jobs": {"hello": {"type": "command", "command": "echo world > ./outputs/world.txt"},
                 "world": {"type": "command", "command": "cat ${{inputs.seen}}/outputs/world.txt",
                           "inputs": {"seen": "${{parent.jobs.hello.outputs.artifacts}}"}}}})
    world.reconcile()
    assert world.children("a1") == {"a1_hello": "Queued"}
    world.move("a1_hello", "Completed")
    world.reconcile()
    assert world.row("a1").status == "Running", world.row("a1").error
    assert world.children("a1") == {"a1_hello": "Completed", "a1_world": "Queued"}
    produced = world.row("a1_hello").run.plan["outputs"]["artifacts"]["local_path"]
    assert world.row("a1_world").run.plan["inputs"]["seen"]["source"]["local_path"] == produced
    assert produced.endswith("/runs/a1_hello/artifacts")
