"""decide_pipeline: which steps start, with what child job, and how a pipeline ends."""

from __future__ import annotations

import textwrap

import pytest

from cible.core.models import CommandJob, PipelineJob, SweepJob
from cible.core.planning.pipelines import PipelineDecision, StepView, decide_pipeline, reuse_key
from cible.core.specs.azureml.loader import load_spec_dict, load_spec_text

ENV = "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"


def pipeline(text: str) -> PipelineJob:
    return load_spec_text(textwrap.dedent(text), "job").entity


def decide(spec, steps=None, *, cancel=False, default_compute=None, **kwargs) -> PipelineDecision:
    views = {name: StepView(name, *view) if isinstance(view, tuple) else view for name, view in (steps or {}).items()}
    return decide_pipeline(spec, views, cancel_requested=cancel, default_compute=default_compute, **kwargs)


def launched(decision: PipelineDecision) -> dict[str, dict]:
    return {launch.step: launch.spec for launch in decision.launch}


TRAIN = {
    "name": "train", "version": "1", "type": "command", "code": "cible://snapshots/abc",
    "environment": ENV, "environment_variables": {"A": "1"},
    "inputs": {"training_data": {"type": "uri_folder"}, "max_epocs": {"type": "integer", "max": 100},
               "learning_rate": {"type": "number", "default": 0.01},
               "schedule": {"type": "string", "optional": True}},
    "outputs": {"model_output": {"type": "mlflow_model"}},
    "command": "python train.py --data ${{inputs.training_data}} --epochs ${{inputs.max_epocs}} "
               "--lr ${{inputs.learning_rate}} $[[--schedule ${{inputs.schedule}}]] --out ${{outputs.model_output}}",
}
SCORE = {
    "name": "score", "version": "1", "type": "command", "environment": ENV,
    "inputs": {"model_input": {"type": "mlflow_model"}, "test_data": {"type": "uri_folder"}},
    "outputs": {"score_output": {"type": "uri_folder"}},
    "command": "python score.py ${{inputs.model_input}} ${{inputs.test_data}} ${{outputs.score_output}}",
}


def e2e(settings: str = "", **components) -> PipelineJob:
    spec = pipeline(f"""
        type: pipeline
        experiment_name: e2e
        compute: azureml:cpu-cluster
        {settings}
        inputs:
          epochs: 20
          data: {{type: uri_folder, path: "cible://snapshots/data"}}
        outputs:
          trained: {{mode: upload}}
          report: {{mode: upload, path: "azureml://datastores/workspaceblobstore/paths/reports/${{{{name}}}}"}}
        jobs:
          train_job:
            component: azureml:train:1
            inputs:
              training_data: ${{{{parent.inputs.data}}}}
              max_epocs: ${{{{parent.inputs.epochs}}}}
            outputs:
              model_output: ${{{{parent.outputs.trained}}}}
          score_job:
            component: azureml:score:1
            compute: azureml:gpu-cluster
            inputs:
              model_input: ${{{{parent.jobs.train_job.outputs.model_output}}}}
              test_data: ${{{{parent.jobs.train_job.inputs.training_data}}}}
            outputs:
              score_output: ${{{{parent.outputs.report}}}}
          side_job:
            command: echo side
            environment: {ENV}
    """)
    return spec, {"azureml:train:1": components.get("train", TRAIN), "azureml:score:1": components.get("score", SCORE)}


def test_independent_steps_start_together_with_bound_inputs():
    spec, components = e2e()
    decision = decide(spec, components=components)
    assert decision.end is None and decision.cancel == [] and decision.skip == []
    children = launched(decision)
    assert list(children) == ["train_job", "side_job"]  # score_job waits for train_job
    train = children["train_job"]
    assert train == {
        "type": "command",
        "command": TRAIN["command"],
        "code": "cible://snapshots/abc",
        "environment": ENV,
        "environment_variables": {"A": "1"},
        # The pipeline's values, the component's default; the optional input without a value is left out.
        "inputs": {"training_data": {"type": "uri_folder", "path": "cible://snapshots/data"}, "max_epocs": 20,
                   "learning_rate": 0.01},
        # The pipeline output's mode on the component's type.
        "outputs": {"model_output": {"type": "mlflow_model", "mode": "upload"}},
        "compute": "azureml:cpu-cluster",
        "display_name": "train_job",
        "experiment_name": "e2e",
    }
    assert isinstance(load_spec_dict(train, "job").entity, CommandJob)  # the child is an ordinary command job
    assert children["side_job"]["command"] == "echo side" and children["side_job"]["outputs"] == {}


def test_a_step_starts_when_its_upstream_completed():
    spec, components = e2e()
    steps = {"train_job": ("p_train_job", "Completed"), "side_job": ("p_side_job", "Running")}
    decision = decide(spec, steps, components=components)
    score = launched(decision)["score_job"]
    assert score["inputs"] == {
        "model_input": {"type": "mlflow_model", "path": "azureml://jobs/p_train_job/outputs/model_output"},
        "test_data": {"type": "uri_folder", "path": "cible://snapshots/data"},  # train_job's input, as bound
    }
    assert score["outputs"] == {"score_output": {
        "type": "uri_folder", "mode": "upload", "path": "azureml://datastores/workspaceblobstore/paths/reports/${{name}}"}}
    assert score["compute"] == "azureml:gpu-cluster"  # the step's own compute wins
    assert isinstance(load_spec_dict(score, "job").entity, CommandJob)


def test_nothing_new_while_upstream_runs():
    spec, components = e2e()
    steps = {"train_job": ("p_train_job", "Running"), "side_job": ("p_side_job", "Completed")}
    assert decide(spec, steps, components=components) == PipelineDecision()


def test_completed_with_outputs_of_the_jobs_that_made_them():
    spec, components = e2e()
    steps = {"train_job": ("earlier_train", "Reused"), "score_job": ("p_score", "Completed"),
             "side_job": ("p_side", "Completed")}
    decision = decide(spec, steps, components=components)
    assert decision.end == "Completed" and decision.error is None
    assert decision.outputs == {"trained": "azureml://jobs/earlier_train/outputs/model_output",
                                "report": "azureml://jobs/p_score/outputs/score_output"}


def test_stop_on_first_failure_cancels_live_steps():
    spec, components = e2e("settings: {continue_on_step_failure: false}")
    steps = {"train_job": ("p_train", "Failed", {"code": "UserError", "message": "exit code 1"}),
             "side_job": ("p_side", "Running")}
    decision = decide(spec, steps, components=components)
    assert decision.cancel == ["p_side"]
    assert decision.skip == ["score_job"]
    assert decision.end == "Failed"
    assert decision.error == {"code": "UserError", "message": "step 'train_job' failed: exit code 1"}


def test_continue_on_failure_runs_independent_branches_then_fails():
    spec, components = e2e()  # continue_on_step_failure: true (Azure's documented default)
    steps = {"train_job": ("p_train", "Failed", None), "side_job": ("p_side", "Running")}
    decision = decide(spec, steps, components=components)
    assert decision.skip == ["score_job"] and decision.cancel == [] and decision.end is None
    steps = {"train_job": ("p_train", "Failed", None), "side_job": ("p_side", "Completed"),
             "score_job": (None, "Skipped")}
    decision = decide(spec, steps, components=components)
    assert decision.skip == [] and decision.end == "Failed"
    assert decision.error == {"code": "StepFailed", "message": "step 'train_job' failed: its job failed"}


def test_cancel_requested_cancels_live_steps_then_ends_canceled():
    spec, components = e2e()
    steps = {"train_job": ("p_train", "Running"), "side_job": ("p_side", "CancelRequested")}
    decision = decide(spec, steps, cancel=True, components=components)
    assert decision == PipelineDecision(cancel=["p_train"])  # p_side is being canceled already
    steps = {"train_job": ("p_train", "Canceled"), "side_job": ("p_side", "Completed")}
    decision = decide(spec, steps, cancel=True, components=components)
    assert decision.end == "Canceled" and decision.skip == ["score_job"] and decision.launch == []


def test_a_step_canceled_by_someone_else_ends_the_pipeline_canceled():
    spec, components = e2e()
    steps = {"train_job": ("p_train", "Canceled"), "side_job": ("p_side", "Completed")}
    assert decide(spec, steps, components=components).skip == ["score_job"]
    steps["score_job"] = (None, "Skipped")
    decision = decide(spec, steps, components=components)
    assert decision.end == "Canceled"
    assert decision.error == {"code": "StepCanceled", "message": "step 'train_job' was canceled"}


def test_compute_precedence():
    text = """
        type: pipeline
        {top}
        {settings}
        inputs: {{where: cpu-small}}
        jobs:
          bound: {{command: echo, environment: x, compute: "${{{{parent.inputs.where}}}}"}}
          own: {{command: echo, environment: x, compute: azureml:gpu}}
          plain: {{command: echo, environment: x}}
    """

    def computes(top="", settings="", default_compute=None):
        spec = pipeline(text.format(top=top, settings=settings))
        return {n: c.get("compute") for n, c in launched(decide(spec, default_compute=default_compute)).items()}

    assert computes() == {"bound": "cpu-small", "own": "azureml:gpu", "plain": None}  # None: the server's choice
    assert computes(default_compute="local-pool")["plain"] == "local-pool"
    assert computes(top="compute: azureml:top", default_compute="x")["plain"] == "azureml:top"
    assert computes(top="compute: azureml:top", settings="settings: {default_compute: azureml:serverless}")[
        "plain"] == "azureml:serverless"


def test_reuse_keys():
    spec, components = e2e()
    first = {launch.step: launch.reuse_key for launch in decide(spec, components=components).launch}
    assert first["train_job"] and first["side_job"]
    assert first == {launch.step: launch.reuse_key for launch in decide(spec, components=components).launch}
    changed = {**TRAIN, "command": TRAIN["command"] + " --verbose"}
    again = {launch.step: launch.reuse_key for launch in decide(spec, components={**components,
                                                                                  "azureml:train:1": changed}).launch}
    assert again["train_job"] != first["train_job"] and again["side_job"] == first["side_job"]
    volatile = {**TRAIN, "is_deterministic": False}
    keys = {launch.step: launch.reuse_key
            for launch in decide(spec, components={**components, "azureml:train:1": volatile}).launch}
    assert keys["train_job"] is None and keys["side_job"] is not None
    assert all(launch.reuse_key is None for launch in decide(spec, components=components, force_rerun=True).launch)
    forced, _ = e2e("settings: {force_rerun: true}")
    assert all(launch.reuse_key is None for launch in decide(forced, components=components).launch)


def test_a_reused_upstream_keeps_the_downstream_key():
    spec, components = e2e()
    keys = set()
    for upstream in ("old_train", "old_train"):
        steps = {"train_job": (upstream, "Reused"), "side_job": ("s", "Completed")}
        keys.add(decide(spec, steps, components=components).launch[0].reuse_key)
    assert len(keys) == 1
    other = decide(spec, {"train_job": ("new_train", "Completed")}, components=components)
    assert other.launch[0].reuse_key not in keys
    assert reuse_key({"command": "a"}) != reuse_key({"command": "b"})


def test_registered_components_checked_when_resolved():
    spec, _ = e2e()
    decision = decide(spec, components={"azureml:train:1": TRAIN})
    assert decision.end == "Failed" and decision.launch == []
    assert decision.error["message"] == "jobs.score_job.component: component 'azureml:score:1' is not resolved"
    wrong = {**TRAIN, "inputs": {**TRAIN["inputs"], "max_epocs": {"type": "integer", "max": 10}}}
    decision = decide(spec, components={"azureml:train:1": wrong, "azureml:score:1": SCORE})
    assert decision.end == "Failed"
    assert "jobs.train_job.inputs.max_epocs: pipeline input 'epochs': 20 is above the input's max 10" in \
        decision.error["message"]


def test_decide_takes_the_spec_as_a_dict():
    spec, components = e2e()
    body = spec.model_dump(mode="json", exclude_none=True)
    assert decide(body, components=components) == decide(spec, components=components)


def test_default_artifacts_feed_a_later_step():
    spec = pipeline(f"""
        type: pipeline
        jobs:
          hello_job:
            command: echo "hello" && echo "world" > ./outputs/world.txt
            environment: {ENV}
            compute: azureml:cpu-cluster
            outputs:
              artifacts:
          world_job:
            command: cat ${{{{inputs.world_input}}}}/outputs/world.txt
            environment: {ENV}
            compute: azureml:cpu-cluster
            inputs:
              world_input: ${{{{parent.jobs.hello_job.outputs.artifacts}}}}
    """)
    first = launched(decide(spec))
    assert list(first) == ["hello_job"] and first["hello_job"]["outputs"] == {"artifacts": {"type": "uri_folder"}}
    world = launched(decide(spec, {"hello_job": ("p_hello_job", "Completed")}))["world_job"]
    assert world["inputs"] == {"world_input": {"type": "uri_folder",
                                               "path": "azureml://jobs/p_hello_job/outputs/artifacts"}}


SWEEP_TRIAL = {
    "name": "train_model", "version": "1", "type": "command", "code": "cible://snapshots/t", "environment": ENV,
    "inputs": {"data": {"type": "uri_folder"}, "c_value": {"type": "number", "default": 1.0},
               "kernel": {"type": "string", "default": "rbf"}, "degree": {"type": "integer", "default": 3}},
    "outputs": {"model_output": {"type": "uri_folder"}},
    "command": "python train.py --data ${{inputs.data}} --C ${{inputs.c_value}} --kernel ${{inputs.kernel}} "
               "--degree ${{inputs.degree}} --model_output ${{outputs.model_output}}",
}


def test_sweep_step_runs_as_a_sweep_job_and_feeds_the_next_step():
    spec = PipelineJob.model_validate({
        "type": "pipeline", "settings": {"default_compute": "azureml:cpu-cluster"},
        "jobs": {
            "sweep_step": {
                "type": "sweep", "trial": SWEEP_TRIAL, "sampling_algorithm": "random",
                "inputs": {"data": {"type": "uri_file", "path": "https://example.org/iris.csv"}, "degree": 4},
                "outputs": {"model_output": {"mode": "upload"}},
                "search_space": {"c_value": {"type": "uniform", "min_value": 0.5, "max_value": 0.9},
                                 "kernel": {"type": "choice", "values": ["rbf", "linear"]}},
                "objective": {"goal": "minimize", "primary_metric": "training_f1_score"},
                "limits": {"max_total_trials": 5, "max_concurrent_trials": 3},
            },
            "predict_step": {
                "type": "command", "command": "python p.py ${{inputs.model}}", "environment": ENV,
                "inputs": {"model": "${{parent.jobs.sweep_step.outputs.model_output}}"},
            },
        },
    })
    first = decide(spec)
    assert [(launch.step, launch.reuse_key) for launch in first.launch] == [("sweep_step", None)]
    child = first.launch[0].spec
    assert child["type"] == "sweep" and child["compute"] == "azureml:cpu-cluster"
    assert child["inputs"] == {"data": {"type": "uri_file", "path": "https://example.org/iris.csv"}, "degree": 4}
    assert child["outputs"] == {"model_output": {"type": "uri_folder", "mode": "upload"}}
    assert child["trial"]["command"] == SWEEP_TRIAL["command"] and child["trial"]["inputs"]["c_value"]["default"] == 1.0
    assert isinstance(load_spec_dict(child, "job").entity, SweepJob)
    after = launched(decide(spec, {"sweep_step": ("p_sweep", "Completed")}))
    assert after["predict_step"]["inputs"] == {
        "model": {"type": "uri_folder", "path": "azureml://jobs/p_sweep/outputs/model_output"}}


NESTED_COMPONENT = {
    "type": "pipeline", "name": "train_pipeline",
    "inputs": {"train_data": {"type": "uri_folder"}, "epochs": {"type": "integer", "default": 5},
               "schedule": {"type": "string", "optional": True}, "node": {"type": "string", "default": "cpu-cluster"}},
    "outputs": {"trained_model": {"type": "mlflow_model"}},
    "jobs": {"train_job": {
        "component": TRAIN, "compute": "${{parent.inputs.node}}",
        "inputs": {"training_data": "${{parent.inputs.train_data}}", "max_epocs": "${{parent.inputs.epochs}}",
                   "schedule": "${{parent.inputs.schedule}}"},
        "outputs": {"model_output": "${{parent.outputs.trained_model}}"},
    }},
}


def test_nested_pipeline_step_runs_as_a_pipeline_job():
    spec = PipelineJob.model_validate({
        "type": "pipeline", "experiment_name": "nested",
        "settings": {"default_compute": "azureml:cpu-cluster", "continue_on_step_failure": False},
        "inputs": {"raw": {"type": "uri_folder", "path": "cible://snapshots/raw"}, "node": "gpu-cluster"},
        "outputs": {"model": {"mode": "upload"}},
        "jobs": {"train_pipeline": {
            "type": "pipeline", "component": NESTED_COMPONENT, "compute": "${{parent.inputs.node}}",
            "inputs": {"train_data": "${{parent.inputs.raw}}"},
            "outputs": {"trained_model": "${{parent.outputs.model}}"},
        }},
    })
    decision = decide(spec)
    (launch,) = decision.launch
    child = launch.spec
    assert launch.reuse_key is None
    assert child["type"] == "pipeline" and child["experiment_name"] == "nested"
    assert child["settings"] == {"continue_on_step_failure": False, "force_rerun": False,
                                 "default_compute": "gpu-cluster"}
    assert child["inputs"] == {"train_data": {"type": "uri_folder", "path": "cible://snapshots/raw"}}
    assert child["outputs"] == {"trained_model": {"type": "mlflow_model", "mode": "upload"}}
    nested = load_spec_dict(child, "job").entity
    assert isinstance(nested, PipelineJob)
    # The nested pipeline's own step: the component's default compute input, the optional input left out.
    inner = launched(decide(nested))["train_job"]
    assert inner["compute"] == "cpu-cluster"
    assert inner["inputs"] == {"training_data": {"type": "uri_folder", "path": "cible://snapshots/raw"},
                               "max_epocs": 5, "learning_rate": 0.01}
    assert inner["outputs"] == {"model_output": {"type": "mlflow_model", "mode": "upload"}}
    done = decide(nested, {"train_job": ("c_train", "Completed")})
    assert done.end == "Completed" and done.outputs == {"trained_model": "azureml://jobs/c_train/outputs/model_output"}


def test_a_required_input_bound_to_nothing_fails_the_pipeline():
    component = {**NESTED_COMPONENT, "inputs": {**NESTED_COMPONENT["inputs"],
                                                "epochs": {"type": "integer", "optional": True}}}
    spec = PipelineJob.model_validate({"type": "pipeline", "component": component,
                                       "inputs": {"train_data": {"type": "uri_folder", "path": "cible://snapshots/d"}}})
    decision = decide(spec)
    assert decision.end == "Failed" and decision.skip == ["train_job"]
    assert decision.error["message"] == "step 'train_job': input 'max_epocs' is required and has no value"


def test_pipeline_job_from_a_registered_pipeline_component():
    spec = PipelineJob.model_validate({"type": "pipeline", "component": "azureml:train_pipeline:1",
                                       "inputs": {"train_data": {"type": "uri_folder", "path": "cible://snapshots/d"},
                                                  "epochs": 3}})
    decision = decide(spec, components={"azureml:train_pipeline:1": NESTED_COMPONENT})
    train = launched(decision)["train_job"]
    assert train["inputs"]["max_epocs"] == 3 and train["compute"] == "cpu-cluster"


@pytest.mark.parametrize("value", ["local", "azureml:local"])
def test_a_bound_local_compute_fails_the_pipeline(value):
    spec = PipelineJob.model_validate({
        "type": "pipeline", "jobs": {"s": {"component": NESTED_COMPONENT["jobs"]["train_job"]["component"],
                                           "compute": "${{parent.inputs.where}}",
                                           "inputs": {"training_data": {"path": "cible://snapshots/x"},
                                                      "max_epocs": 1}}},
        "inputs": {"where": {"type": "string", "default": value}},
    })
    decision = decide(spec)
    assert decision.end == "Failed" and decision.skip == ["s"]
    assert decision.error == {"code": "InvalidSpec", "message": "step 's': 'local' compute cannot run a pipeline step"}
