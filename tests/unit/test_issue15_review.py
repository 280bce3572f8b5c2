"""Review fixes of sweeps and pipelines (issue 15): the orchestrator on a real store, submit checks,
job delete of parents and children, registered components that name themselves, and the sandbox
of a job whose output is its own default artifacts folder."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cible.core.errors import CibleError, ConflictError, InvalidRequestError, NotFoundError, TrackingUnavailableError
from cible.core.lifecycle.jobs import path_to
from cible.core.planning.pipelines import decide_pipeline
from cible.launch import launcher as launcher_module
from cible.runfiles import PLAN_FILE
from cible.server.reconcilers.orchestrator import Orchestrator
from cible.server.services.computes import ComputeService
from cible.server.services.job_plans import PlanBuilder
from cible.server.services.jobs import JobService, set_status
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow
from cible.testing import FrozenClock
from cible.workspace import WorkspacePaths

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SWEEP = {
    "type": "sweep", "compute": "local", "experiment_name": "sweeps",
    "trial": {"command": "echo ${{search_space.lr}}"},
    "sampling_algorithm": {"type": "random", "seed": 3},
    "search_space": {"lr": {"type": "uniform", "min_value": 0.01, "max_value": 0.9}},
    "objective": {"goal": "minimize", "primary_metric": "loss"},
    "limits": {"max_total_trials": 1, "max_concurrent_trials": 1},
}
PIPELINE = {"type": "pipeline", "settings": {"default_compute": "azureml:cpu-cluster"},
            "jobs": {"write": {"type": "command", "command": "echo hi > ${{outputs.out}}/hi.txt",
                               "outputs": {"out": {"type": "uri_folder"}}},
                     "read": {"type": "command", "command": "cat ${{inputs.x}}/hi.txt",
                              "inputs": {"x": "${{parent.jobs.write.outputs.out}}"}}}}


class World:
    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.clock = FrozenClock(NOW)
        self.metrics: dict[str, list[float]] = {}  # trial -> its primary metric as MLflow has it now
        self.tracking_down = False
        self.components: dict[str, dict[str, Any]] = {}
        jobs: JobService

        def plan_of(name: str) -> dict[str, Any] | None:
            try:
                return jobs.run_handle(name)[1].plan
            except NotFoundError:
                return None

        def no_assets(kind: str, name: str, version: str) -> Any:
            raise NotFoundError(f"no {kind} {name}:{version}")

        def component(name: str, version: str) -> dict[str, Any]:
            if name not in self.components:
                raise NotFoundError(f"no component {name}")
            return self.components[name]

        plans = PlanBuilder(WorkspacePaths(root / "ws"), plan_of, no_assets, tracking={"uri": "http://127.0.0.1:9/mlflow"})
        jobs = self.jobs = JobService(store, ComputeService(store, 4, self.clock), plans, self.clock,
                                      default_compute="local", component_lookup=component)
        with store.session() as session:
            session.add(ComputeRow(name="cpu-cluster", compute_type="amlcompute", provisioning_state="Succeeded",
                                   spec={"name": "cpu-cluster", "type": "amlcompute", "size": "Standard_DS1_v2",
                                         "min_instances": 0, "max_instances": 2, "idle_time_before_scale_down": 120,
                                         "cible": {"provider": "local"}},
                                   created_at=NOW, updated_at=NOW))
        self.restart()

    def restart(self) -> None:
        """A new orchestrator on the same store: what a server restart keeps."""
        self.orchestrator = Orchestrator(self.store, self.jobs, self.clock, self.history)

    def history(self, job: str, experiment: str, metric: str) -> list[float] | None:
        if self.tracking_down:
            raise TrackingUnavailableError("MLflow is restarting")
        return list(self.metrics[job]) if job in self.metrics else None

    def row(self, name: str) -> JobRow:
        with self.store.session() as session:
            found = session.get(JobRow, name)
            assert found is not None, f"no job {name}"
            session.expunge(found)
            return found

    def children(self, parent: str) -> dict[str, str]:
        with self.store.session() as session:
            return {r.name: r.status for r in session.scalars(select(JobRow).where(JobRow.parent_job_name == parent))}

    def move(self, name: str, target: str) -> None:
        with self.store.session() as session:
            row = session.get(JobRow, name)
            for step in path_to(row.status, target):
                set_status(session, row, step, self.clock.now(), reason="moved by the test")

    def reconcile(self, times: int = 1) -> None:
        for _ in range(times):
            self.orchestrator.reconcile_once()


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    return World(store, tmp_path)


# -- a trial's metric, logged as it ends ------------------------------------------------------------


def test_a_trial_seen_running_before_it_logged_its_metric_is_judged_on_what_it_logged_by_its_end(world: World):
    world.jobs.create_or_update("sw", SWEEP)
    world.reconcile()
    world.move("sw_0", "Running")
    world.metrics["sw_0"] = []
    world.reconcile()  # seen running: nothing logged yet
    world.metrics["sw_0"] = [0.4]  # logged once, at the end of training
    world.move("sw_0", "Completed")
    world.reconcile(2)
    sweep = world.row("sw")
    assert sweep.status == "Completed", sweep.error
    assert sweep.children.best_trial == "sw_0" and sweep.children.metrics["sw_0"] == [0.4]


def test_an_ended_trials_metric_is_read_once_then_kept_and_read_again_once_after_a_restart(world: World):
    world.jobs.create_or_update("sw", {**SWEEP, "limits": {"max_total_trials": 2, "max_concurrent_trials": 1}})
    world.reconcile()
    world.move("sw_0", "Running")
    world.reconcile()
    world.metrics["sw_0"] = [0.5]
    world.move("sw_0", "Completed")
    world.reconcile()  # read once ended: kept from now on
    world.metrics["sw_0"] = [9.0]  # (MLflow would never change; here: proof that it is not read again)
    world.reconcile()
    assert world.row("sw").children.metrics["sw_0"] == [0.5]
    world.restart()  # what was read once ended is not known any more: read again, once
    world.reconcile()
    assert world.row("sw").children.metrics["sw_0"] == [9.0]


def test_a_canceled_sweep_ends_while_mlflow_is_down(world: World):
    world.jobs.create_or_update("sw", SWEEP)
    world.reconcile()
    world.move("sw_0", "Running")
    world.tracking_down = True
    world.jobs.cancel("sw")
    world.reconcile()
    assert world.children("sw") == {"sw_0": "CancelRequested"}
    world.move("sw_0", "Canceled")
    world.reconcile()
    assert world.row("sw").status == "Canceled"


def test_a_trial_that_logs_nan_neither_wins_nor_breaks_the_sweeps_record_or_its_json(world: World):
    world.jobs.create_or_update("sw", {**SWEEP, "limits": {"max_total_trials": 2, "max_concurrent_trials": 2}})
    world.reconcile()
    world.metrics.update({"sw_0": [0.9, float("nan")], "sw_1": [0.5]})  # sw_0 diverged: NaN is its last value
    world.move("sw_0", "Completed")
    world.move("sw_1", "Completed")
    world.reconcile(2)
    sweep = world.row("sw")
    assert sweep.status == "Completed" and sweep.children.metrics == {"sw_0": [0.9], "sw_1": [0.5]}
    assert sweep.children.best_trial == "sw_1"
    json.dumps(world.jobs.get("sw"), allow_nan=False, default=str)  # what the API answers (no NaN in JSON)


# -- a child's name taken by another job --------------------------------------------------------


def test_a_step_whose_name_another_job_took_fails_its_pipeline_instead_of_waiting_forever(world: World):
    world.jobs.create_or_update("p", PIPELINE)
    world.reconcile()
    # Made after the submit (whose checks refuse a name already taken), before `read` starts.
    world.jobs.create_or_update("p_read", {"type": "command", "command": "echo mine", "compute": "local",
                                           "tags": {"owner": "someone"}})
    world.move("p_write", "Completed")
    world.reconcile()
    pipeline = world.row("p")
    assert pipeline.status == "Failed"
    assert "step read could not be submitted" in pipeline.error.message
    assert "job 'p_read' already exists" in pipeline.error.message
    assert world.row("p_read").parent_job_name is None and world.row("p_read").spec["tags"] == {"owner": "someone"}


def test_a_trial_whose_name_another_job_has_is_not_taken_for_it(world: World):
    world.jobs.create_or_update("sw", {**SWEEP, "limits": {"max_total_trials": 2, "max_concurrent_trials": 1}})
    world.reconcile()
    world.jobs.create_or_update("sw_1", {"type": "command", "command": "echo 1", "compute": "local"})
    world.move("sw_0", "Completed")
    world.reconcile()
    assert world.row("sw").status == "Failed" and "job 'sw_1' already exists" in world.row("sw").error.message


def test_a_parent_whose_first_child_name_is_taken_is_refused_at_submit(world: World):
    world.jobs.create_or_update("p_write", {"type": "command", "command": "echo mine", "compute": "local"})
    with pytest.raises(ConflictError) as refused:
        world.jobs.create_or_update("p", PIPELINE)
    assert "jobs.write: its job would be named 'p_write'" in refused.value.message


# -- submit checks ------------------------------------------------------------------------------


def test_a_pipeline_whose_first_steps_cannot_be_planned_is_refused_at_submit(world: World):
    local_file = {**PIPELINE, "jobs": {"a": {"type": "command", "component": "./component.yml"}}}
    with pytest.raises(CibleError) as refused:
        world.jobs.create_or_update("p1", local_file)
    assert refused.value.http_status == 422 and "./component.yml" in refused.value.message
    with pytest.raises(CibleError):
        world.jobs.validate("p1", local_file)
    unbound = {"type": "pipeline", "settings": {"default_compute": "azureml:cpu-cluster"},
               "inputs": {"k": {"type": "string"}},
               "jobs": {"a": {"type": "command", "inputs": {"n": "${{parent.inputs.k}}"},
                              "component": {"type": "command", "command": "echo ${{inputs.n}}",
                                            "inputs": {"n": {"type": "string"}}}}}}
    with pytest.raises(CibleError) as refused:
        world.jobs.create_or_update("p2", unbound)
    assert "input 'n' is required" in refused.value.message
    with world.store.session() as session:
        assert session.scalars(select(JobRow.name)).all() == []


def test_a_registered_pipeline_component_that_names_itself_is_refused_not_recursed(world: World):
    world.components["loop"] = {"type": "pipeline", "name": "loop", "version": "2",
                                "jobs": {"again": {"type": "pipeline", "component": "azureml:loop@latest"}}}
    spec = {**PIPELINE, "jobs": {"a": {"type": "pipeline", "component": "azureml:loop@latest"}}}
    with pytest.raises(CibleError) as refused:
        world.jobs.create_or_update("p", spec)
    assert "includes itself" in refused.value.message
    decision = decide_pipeline(spec, {}, cancel_requested=False,
                               default_compute=None, components={"azureml:loop@latest": world.components["loop"]})
    assert decision.end == "Failed" and "azureml:loop@latest -> azureml:loop@latest" in decision.error["message"]


def test_a_sweep_trials_environment_file_is_never_read_on_the_server(world: World, tmp_path: Path):
    secret = tmp_path / "server-side.yml"
    secret.write_text("name: x\nimage: python:3.11\nserver_secret_key: 42\n")
    for reference in (f"file:{secret}", str(secret)):
        spec = {**SWEEP, "trial": {**SWEEP["trial"], "environment": reference}}
        with pytest.raises(InvalidRequestError) as refused:
            world.jobs.create_or_update("sw", spec)
        assert refused.value.message.startswith("trial.environment:")
        assert "server_secret_key" not in refused.value.message


# -- job delete -----------------------------------------------------------------------------------


def test_a_parent_is_deleted_only_once_its_children_have_ended_and_a_child_only_after_its_parent(world: World):
    world.jobs.create_or_update("sw", {**SWEEP, "limits": {"max_total_trials": 2, "max_concurrent_trials": 2}})
    world.reconcile()
    world.move("sw_0", "Completed")
    with pytest.raises(ConflictError) as refused:  # its sweep runs: deleted, the trial would be made again
        world.jobs.delete("sw_0")
    assert "belongs to job 'sw'" in refused.value.message
    world.move("sw_1", "Running")
    with world.store.session() as session:  # the sweep ended Failed; its trial is still stopping
        set_status(session, session.get(JobRow, "sw"), "Failed", NOW, reason="test")
    with pytest.raises(ConflictError) as refused:
        world.jobs.delete("sw")
    assert "sw_1" in refused.value.message and set(world.children("sw")) == {"sw_0", "sw_1"}
    world.move("sw_1", "Canceled")
    world.jobs.delete("sw")
    assert world.children("sw") == {}


# -- the sandbox of a job whose output is its default artifacts folder ----------------------------


def test_a_jobs_default_artifacts_output_is_not_writable_by_its_command(tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "runs" / "p_write"
    run_dir.mkdir(parents=True)
    datastore_out = tmp_path / "datastore" / "out"
    plan = {"job_name": "p_write", "outputs": {
        "artifacts": {"type": "uri_folder", "mode": "rw_mount", "uri": "azureml://jobs/p_write/outputs/artifacts",
                      "local_path": str(run_dir / "artifacts")},
        "out": {"type": "uri_folder", "mode": "rw_mount", "local_path": str(datastore_out),
                "uri": "azureml://datastores/workspaceblobstore/paths/azureml/p_write/out/"}}}
    (run_dir / PLAN_FILE).write_text(json.dumps(plan))
    seen: dict[str, Any] = {}

    def from_plan(plan: dict, writable: list[Path], readable: list[Path] = (), protect: list[Path] = ()) -> None:
        seen["writable"] = list(writable)  # and no sandbox: the command starts without one

    monkeypatch.setattr(launcher_module.sandbox.Sandbox, "from_plan", staticmethod(from_plan))
    monkeypatch.setenv("CIBLE_JOB_SANDBOX", "auto")
    launcher_module.Launcher(run_dir).sandboxed(lambda preexec: preexec)
    assert datastore_out in seen["writable"]
    assert not any(p == run_dir / "artifacts" or run_dir / "artifacts" in p.parents for p in seen["writable"])


def test_a_sweep_of_many_concurrent_trials_starts_them_a_batch_per_pass():
    from cible.core.models.sweeps import SweepJob
    from cible.core.planning.sampling import sample_trials
    from cible.core.planning.sweeps import MAX_NEW_TRIALS_PER_PASS, TrialView, decide_sweep

    spec = SweepJob.model_validate({**SWEEP, "limits": {"max_total_trials": 100_000, "max_concurrent_trials": 100_000}})
    first = decide_sweep(spec, [], seed_key="sw", elapsed_s=0, cancel_requested=False)
    assert len(first.new_trials) == MAX_NEW_TRIALS_PER_PASS and first.end is None
    started = [TrialView(i, f"sw_{i}", "Queued", params, ()) for i, params in enumerate(first.new_trials)]
    second = decide_sweep(spec, started, seed_key="sw", elapsed_s=1, cancel_requested=False)
    assert len(second.new_trials) == MAX_NEW_TRIALS_PER_PASS
    # The trials one pass that could start them all would have sampled (random sampling: by index).
    both = sample_trials(spec, [], 2 * MAX_NEW_TRIALS_PER_PASS, seed_key="sw")
    assert first.new_trials + second.new_trials == both


# -- a trial that finishes before its early termination lands -----------------------------------------


def test_a_trial_that_completes_after_its_cancel_was_asked_keeps_no_termination_error(world: World):
    from cible.core.models.records import JobError
    from cible.core.planning.jobs import JobDecision
    from cible.server.reconcilers.jobs import JobReconciler

    world.jobs.create_or_update("sw", SWEEP)
    world.reconcile()
    world.move("sw_0", "Running")
    world.jobs.cancel("sw_0", reason="early termination: bandit", error=JobError(code="EarlyTerminated",
                                                                                message="early termination: bandit"))
    version = world.row("sw_0").version
    with world.store.session() as session:  # the launcher reports it Completed before the cancel reached it
        JobReconciler._write(session, "sw_0", version, JobDecision(steps=["Completed"]),
                             world.clock.now())
    trial = world.row("sw_0")
    assert trial.status == "Completed" and trial.error is None
