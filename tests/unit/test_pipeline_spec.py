"""Pipeline jobs (`type: pipeline`): Azure's example shapes load, and a badly wired graph is refused
at the key at fault."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models import (
    CommandComponent,
    CommandStep,
    PipelineComponent,
    PipelineJob,
    PipelineStep,
    StepInput,
    SweepStep,
)
from cible.core.models.pipelines import Binding, parse_binding
from cible.core.specs.azureml.loader import load_spec, load_spec_dict, load_spec_text


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


@pytest.fixture
def load(tmp_path, monkeypatch):
    """load(text, files={...}) -> LoadedSpec of ./pipeline.yml (messages say pipeline.yml:L:C)."""
    monkeypatch.chdir(tmp_path)

    def _load(text: str, files: dict[str, str] | None = None, **kwargs):
        write(tmp_path, {**(files or {}), "pipeline.yml": text})
        return load_spec("pipeline.yml", "job", **kwargs)

    return _load


@pytest.fixture
def load_error(load):
    def _load_error(text: str, files: dict[str, str] | None = None) -> str:
        with pytest.raises(InvalidSpecError) as info:
            load(text, files)
        return info.value.message

    return _load_error


def component(name: str, inputs: dict[str, str] | None = None, outputs: dict[str, str] | None = None,
              extra: str = "") -> str:
    """A command component YAML whose command uses each port."""
    lines = [f"name: {name}", "version: 1", "type: command", "environment: {image: python}"]
    args = ""
    if inputs:
        lines.append("inputs:")
        for port, decl in inputs.items():
            lines.append(f"  {port}: {decl}")
            args += f" --{port} ${{{{inputs.{port}}}}}"
    if outputs:
        lines.append("outputs:")
        for port, decl in outputs.items():
            lines.append(f"  {port}: {decl}")
            args += f" --{port} ${{{{outputs.{port}}}}}"
    lines.append(f"command: python {name}.py{args}")
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


E2E_FILES = {
    "train.yml": component("train", {"training_data": "{type: uri_folder}", "max_epocs": "{type: integer}",
                                     "learning_rate": "{type: number, default: 0.01}",
                                     "learning_rate_schedule": "{type: string, default: time-based}"},
                           {"model_output": "{type: uri_folder}"}, "code: ./train_src\n"),
    "score.yml": component("score", {"model_input": "{type: uri_folder}", "test_data": "{type: uri_folder}"},
                           {"score_output": "{type: uri_folder}"}, "code: ./score_src\n"),
    "eval.yml": component("eval", {"scoring_result": "{type: uri_folder}"}, {"eval_output": "{type: uri_folder}"},
                          "code: ./eval_src\n"),
    "train_src/": "", "score_src/": "", "eval_src/": "", "data/": "",
}

E2E_LOCAL = """
    $schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
    type: pipeline
    display_name: 1a_e2e_local_components
    description: Dummy train-score-eval pipeline with local components
    inputs:
      pipeline_job_training_max_epocs: 20
      pipeline_job_training_learning_rate: 1.8
      pipeline_job_learning_rate_schedule: 'time-based'
    outputs:
      pipeline_job_trained_model:
        mode: upload
      pipeline_job_evaluation_report:
        mode: upload
    jobs:
      train_job:
        type: command
        compute: azureml:cpu-cluster
        component: ./train.yml
        inputs:
          training_data:
            type: uri_folder
            path: ./data
          max_epocs: ${{parent.inputs.pipeline_job_training_max_epocs}}
          learning_rate: ${{parent.inputs.pipeline_job_training_learning_rate}}
          learning_rate_schedule: ${{parent.inputs.pipeline_job_learning_rate_schedule}}
        outputs:
          model_output: ${{parent.outputs.pipeline_job_trained_model}}
      score_job:
        type: command
        component: ./score.yml
        compute: azureml:cpu-cluster
        inputs:
          model_input: ${{parent.jobs.train_job.outputs.model_output}}
          test_data:
            type: uri_folder
            path: ./data
        outputs:
          score_output:
            mode: upload
      evaluate_job:
        type: command
        component: ./eval.yml
        compute: azureml:cpu-cluster
        inputs:
          scoring_result: ${{parent.jobs.score_job.outputs.score_output}}
        outputs:
          eval_output: ${{parent.outputs.pipeline_job_evaluation_report}}
"""


def test_e2e_local_components(tmp_path, load):
    spec = load(E2E_LOCAL, E2E_FILES)
    job = spec.entity
    assert isinstance(job, PipelineJob)
    assert list(job.jobs) == ["train_job", "score_job", "evaluate_job"]
    train = job.jobs["train_job"]
    assert isinstance(train, CommandStep) and isinstance(train.component, CommandComponent)
    assert train.component.code == str((tmp_path / "train_src").resolve())
    assert train.inputs["training_data"].path == str((tmp_path / "data").resolve())
    assert train.inputs["max_epocs"] == "${{parent.inputs.pipeline_job_training_max_epocs}}"
    assert job.settings.continue_on_step_failure is True and job.settings.force_rerun is False
    assert job.outputs["pipeline_job_trained_model"].mode == "upload"
    assert job.outputs["pipeline_job_trained_model"].type is None  # the bound step output's type serves
    assert spec.warnings == []


def test_a_dumped_pipeline_loads_again_unchanged(load):
    """What the SDK sends (components inlined, paths absolute) is what the server loads, without a folder."""
    job = load(E2E_LOCAL, E2E_FILES).entity
    body = job.model_dump(mode="json", exclude_none=True)
    again = load_spec_dict(body, "job", source="request body").entity
    assert again == job
    assert again.model_dump(mode="json", exclude_none=True) == body


def test_registered_components_stay_references(load):
    job = load("""
        type: pipeline
        display_name: 1b_e2e_registered_components
        inputs:
          pipeline_job_training_max_epocs: 20
        outputs:
          pipeline_job_trained_model:
            mode: upload
        compute: azureml:cpu-cluster
        jobs:
          train_job:
            type: command
            component: azureml:my_train@latest
            inputs:
              training_data:
                type: uri_folder
                path: ./data
              max_epocs: ${{parent.inputs.pipeline_job_training_max_epocs}}
              anything: 1  # checked once the server resolves the component
            outputs:
              model_output: ${{parent.outputs.pipeline_job_trained_model}}
          score_job:
            type: command
            component: azureml:my_score:3
            inputs:
              model_input: ${{parent.jobs.train_job.outputs.model_output}}
    """, {"data/": ""}).entity
    assert job.jobs["train_job"].component == "azureml:my_train@latest"
    assert job.jobs["score_job"].component == "azureml:my_score:3"
    assert job.compute == "azureml:cpu-cluster"


def test_without_a_folder_local_component_files_stay_strings():
    text = "type: pipeline\njobs:\n  a:\n    component: file:./component.yml\n"
    job = load_spec_text(text, "job").entity
    assert job.jobs["a"].component == "file:./component.yml"


def test_basic_pipeline_with_settings_typo_and_serverless(load):
    files = {f"component{c}.yml": component(f"component_{c.lower()}", extra=f"code: ./component{c}_src\n")
             for c in "ABC"}
    files.update({f"component{c}_src/": "" for c in "ABC"})
    spec = load("""
        $schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
        type: pipeline
        display_name: 3a_basic_pipeline
        settings:
          default_datestore: azureml:workspaceblobstore
          default_compute: azureml:serverless
        jobs:
          component_a:
            type: command
            component: ./componentA.yml
            limits:
              timeout: 3600
          component_b:
            type: command
            component: ./componentB.yml
          component_c:
            type: command
            component: ./componentC.yml
    """, files)
    assert spec.entity.settings.default_compute == "azureml:serverless"
    assert spec.entity.jobs["component_a"].limits.timeout == 3600
    assert spec.warnings == ["'settings.default_datestore' is accepted but not acted on by cible yet"]
    assert spec.locations[spec.warnings[0]] == "pipeline.yml:5:3"


def test_pipeline_with_data_between_steps(load):
    files = {
        "componentA.yml": component("component_a", {"component_a_input": "{type: uri_folder}"},
                                    {"component_a_output": "{type: uri_folder}"}),
        "componentB.yml": component("component_b", {"component_b_input": "{type: uri_folder}"},
                                    {"component_b_output": "{type: uri_folder}"}),
        "componentC.yml": component("component_c", {"component_c_input": "{type: uri_folder}"},
                                    {"component_c_output": "{type: uri_folder}"}),
        "data/": "",
    }
    job = load("""
        type: pipeline
        display_name: 3b_pipeline_with_data
        settings:
          default_compute: azureml:cpu-cluster
        outputs:
          final_pipeline_output:
            mode: rw_mount
        jobs:
          component_a:
            type: command
            component: ./componentA.yml
            inputs:
              component_a_input:
                type: uri_folder
                path: ./data
            outputs:
              component_a_output:
                mode: rw_mount
          component_b:
            type: command
            component: file:./componentB.yml
            inputs:
              component_b_input: ${{parent.jobs.component_a.outputs.component_a_output}}
            outputs:
              component_b_output:
                mode: rw_mount
          component_c:
            type: command
            component: ./componentC.yml
            inputs:
              component_c_input: ${{parent.jobs.component_b.outputs.component_b_output}}
            outputs:
              component_c_output: ${{parent.outputs.final_pipeline_output}}
    """, files).entity
    assert job.jobs["component_a"].outputs["component_a_output"].mode == "rw_mount"
    assert job.jobs["component_a"].outputs["component_a_output"].type is None


def test_public_image_and_distributed_component_steps(load):
    spec = load("""
        type: pipeline
        display_name: 6a_tf_hello_world
        settings:
          default_compute: azureml:serverless
        jobs:
          tf_job:
            type: command
            component: ./component.yml
            resources:
              instance_count: 2
            distribution:
              type: tensorflow
              worker_count: 2
          hello_python_world_job:
            type: command
            component: ./hello.yml
            compute: azureml:cpu-cluster
    """, {
        "component.yml": """
            type: command
            name: TF-hello-world
            version: 1
            compute: azureml:gpu-cluster
            environment: azureml:AzureML-tensorflow-2.4-ubuntu18.04-py37-cuda11-gpu
            command: echo $TF_CONFIG
            resources:
              instance_count: 2
            distribution:
              type: tensorflow
              worker_count: 2
        """,
        "hello.yml": "type: command\nname: hello_python_world\nversion: 1\ncode: ./src\n"
                     "environment:\n  image: docker.io/python\ncommand: >-\n  python hello.py\n",
        "src/": "",
    })
    step = spec.entity.jobs["tf_job"]
    assert step.resources.instance_count == 2 and step.distribution.worker_count == 2
    assert spec.warnings == ["'jobs.tf_job.component.compute' is accepted but not acted on by cible yet"]


def test_hyperparameter_sweep_step(load):
    train = component("train_model", {"data": "{type: uri_folder}", "c_value": "{type: number, default: 1.0}",
                                      "kernel": "{type: string, default: rbf}", "degree": "{type: integer, default: 3}",
                                      "coef0": "{type: number, default: 0}", "shrinking": "{type: boolean, default: false}",
                                      "tol": "{type: number, default: 1e-3}"},
                      {"model_output": "{type: uri_folder}", "test_data": "{type: uri_folder}"}, "code: ./train-src\n")
    predict = component("predict_component", {"model": "{type: mlflow_model}", "test_data": "{type: uri_folder}"},
                        {"predict_result": "{type: uri_folder}"})
    job = load("""
        type: pipeline
        display_name: pipeline_with_hyperparameter_sweep
        settings:
            default_compute: azureml:cpu-cluster
        jobs:
          sweep_step:
            type: sweep
            inputs:
              data:
                type: uri_file
                path: wasbs://datasets@azuremlexamples.blob.core.windows.net/iris.csv
              degree: 3
              shrinking: False
              tol: 0.001
            outputs:
              model_output:
                type: uri_folder
                mode: upload
              test_data:
                type: uri_folder
                mode: upload
            sampling_algorithm: random
            trial: ./train.yml
            search_space:
              c_value:
                type: uniform
                min_value: 0.5
                max_value: 0.9
              kernel:
                type: choice
                values: ["rbf", "linear", "poly"]
              coef0:
                type: uniform
                min_value: 0.1
                max_value: 1
            objective:
              goal: minimize
              primary_metric: training_f1_score
            limits:
              max_total_trials: 5
              max_concurrent_trials: 3
              timeout: 7200
          predict_step:
            type: command
            inputs:
              model: ${{parent.jobs.sweep_step.outputs.model_output}}
              test_data: ${{parent.jobs.sweep_step.outputs.test_data}}
            outputs:
              predict_result:
            component: ./predict.yml
    """, {"train.yml": train, "predict.yml": predict, "train-src/": ""}).entity
    sweep = job.jobs["sweep_step"]
    assert isinstance(sweep, SweepStep) and isinstance(sweep.trial, CommandComponent)
    assert sweep.limits.max_concurrent_trials == 3 and sweep.sampling_algorithm.type == "random"
    assert set(sweep.search_space) == {"c_value", "kernel", "coef0"}


def test_sweep_step_rules(load_error):
    trial = component("t", {"lr": "{type: number}"})
    message = load_error("""
        type: pipeline
        jobs:
          s:
            type: sweep
            trial: ./t.yml
            sampling_algorithm: grid
            search_space:
              lr: {type: uniform, min_value: 0.1, max_value: 1}
              momentum: {type: choice, values: [0.9]}
            objective: {goal: maximize, primary_metric: acc}
    """, {"t.yml": trial})
    assert "jobs.s.search_space.momentum: the trial component has no input 'momentum'" in message
    message = load_error("""
        type: pipeline
        jobs:
          s:
            type: sweep
            trial: ./t.yml
            sampling_algorithm: grid
            search_space:
              lr: {type: uniform, min_value: 0.1, max_value: 1}
            objective: {goal: maximize, primary_metric: acc}
    """, {"t.yml": trial})
    assert "jobs.s.search_space.lr.type: grid sampling supports only choice parameters, not uniform" in message


def test_inline_steps_and_default_artifacts(load):
    spec = load("""
        $schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
        type: pipeline
        display_name: hello_pipeline_default_artifacts
        jobs:
          hello_job:
            command: echo "hello" && echo "world" > ./outputs/world.txt
            environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
            compute: azureml:cpu-cluster
            outputs:
              artifacts:
          world_job:
            command: cat ${{inputs.world_input}}/outputs/world.txt
            environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
            compute: azureml:cpu-cluster
            inputs:
              world_input: ${{parent.jobs.hello_job.outputs.artifacts}}
    """)
    hello = spec.entity.jobs["hello_job"]
    assert hello.type == "command" and hello.component is None
    assert hello.outputs["artifacts"].type is None  # `artifacts:` is a default output, kept through a dump


def test_inline_steps_bound_to_pipeline_inputs(load):
    job = load("""
        type: pipeline
        display_name: hello_pipeline_abc
        settings:
            default_compute: azureml:cpu-cluster
        inputs:
          hello_string_top_level_input: "hello world"
        jobs:
          a:
            command: echo hello ${{inputs.hello_string}}
            environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
            inputs:
              hello_string: ${{parent.inputs.hello_string_top_level_input}}
          b:
            command: echo "world" >> ${{outputs.world_output}}/world.txt
            environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
            outputs:
              world_output:
          c:
            command: echo ${{inputs.world_input}}/world.txt
            environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
            inputs:
              world_input: ${{parent.jobs.b.outputs.world_output}}
    """).entity
    assert set(job.jobs) == {"a", "b", "c"}


def test_output_to_a_custom_path(load):
    job = load("""
        type: pipeline
        outputs:
          output:
            type: uri_file
            path: azureml://datastores/workspaceblobstore/paths/${{name}}/hello_world.txt
            mode: rw_mount
        jobs:
          hello_world:
            command: echo "hello" && echo "world" > ${{outputs.output}}
            environment: azureml://registries/azureml/environments/sklearn-1.0/labels/latest
            compute: azureml:cpu-cluster
            outputs:
              output: ${{parent.outputs.output}}
    """).entity
    assert job.outputs["output"].path.endswith("${{name}}/hello_world.txt")


NESTED = """
    type: pipeline
    display_name: nyc_taxi_data_regression
    settings:
      default_datastore: azureml:workspaceblobstore
      default_compute: azureml:cpu-cluster
      continue_on_step_failure: false
    inputs:
      pipeline_raw_data:
        type: uri_folder
        path: ./data
      compute_train_node: cpu-cluster
    outputs:
      pipeline_job_trained_model:
        type: mlflow_model
    jobs:
      data_pipeline:
        type: pipeline
        component: ./data_pipeline/data_pipeline.yml
        inputs:
          raw_data: ${{parent.inputs.pipeline_raw_data}}
        outputs:
          train_data:
      train_pipeline:
        type: pipeline
        component: ./train_pipeline/train_pipeline.yml
        inputs:
          train_data: ${{parent.jobs.data_pipeline.outputs.train_data}}
          compute_train_node: ${{parent.inputs.compute_train_node}}
        outputs:
          trained_model: ${{parent.outputs.pipeline_job_trained_model}}
"""
NESTED_FILES = {
    "data/": "",
    "data_pipeline/data_pipeline.yml": """
        type: pipeline
        name: data_pipeline
        inputs:
          raw_data:
            type: uri_folder
            optional: true
        outputs:
          train_data:
            type: uri_folder
        jobs:
          prep_job:
            type: command
            component: ./prep_src/prep.yml
            inputs:
              raw_data: ${{parent.inputs.raw_data}}
            outputs:
              prep_data:
          transform_job:
            type: command
            component: ./transform_src/transform.yml
            inputs:
              clean_data: ${{parent.jobs.prep_job.outputs.prep_data}}
            outputs:
              transformed_data: ${{parent.outputs.train_data}}
    """,
    "data_pipeline/prep_src/prep.yml": component("prep", {"raw_data": "{type: uri_folder}"},
                                                 {"prep_data": "{type: uri_folder}"}, "code: .\n"),
    "data_pipeline/transform_src/transform.yml": component("transform", {"clean_data": "{type: uri_folder}"},
                                                           {"transformed_data": "{type: uri_folder}"}, "code: .\n"),
    "train_pipeline/train_pipeline.yml": """
        type: pipeline
        name: train_pipeline
        inputs:
          train_data:
            type: uri_folder
          compute_train_node:
            type: string
        outputs:
          trained_model:
            type: mlflow_model
        jobs:
          train_job:
            type: command
            component: ./train_src/train.yml
            compute: ${{parent.inputs.compute_train_node}}
            inputs:
              training_data: ${{parent.inputs.train_data}}
            outputs:
              model_output: ${{parent.outputs.trained_model}}
    """,
    "train_pipeline/train_src/train.yml": component(
        "train", {"training_data": "{type: uri_folder}", "test_split_ratio": "{type: number, min: 0, max: 1, default: 0.2}"},
        {"model_output": "{type: mlflow_model}"}, "code: .\n"),
}


def test_nested_pipeline_components(tmp_path, load):
    job = load(NESTED, NESTED_FILES).entity
    data_step = job.jobs["data_pipeline"]
    assert isinstance(data_step, PipelineStep) and isinstance(data_step.component, PipelineComponent)
    prep = data_step.component.jobs["prep_job"].component
    assert prep.code == str((tmp_path / "data_pipeline" / "prep_src").resolve())  # relative to prep.yml
    assert job.settings.continue_on_step_failure is False


def test_pipeline_job_from_a_pipeline_component(load):
    job = load("""
        type: pipeline
        component: ./data_pipeline/data_pipeline.yml
        inputs:
          raw_data: {type: uri_folder, path: ./data}
        outputs:
          train_data: {mode: upload}
        settings: {default_compute: azureml:cpu-cluster}
    """, NESTED_FILES).entity
    assert isinstance(job.component, PipelineComponent) and job.jobs is None


# ---- a badly wired graph ------------------------------------------------------------------


def test_bindings_to_unknown_steps_ports_and_pipeline_ports(load_error):
    message = load_error("""
        type: pipeline
        inputs: {n: 3}
        jobs:
          train_job:
            type: command
            component: ./train.yml
            inputs:
              training_data: ${{parent.inputs.nope}}
              max_epocs: ${{parent.inputs.n}}
              epochs: 3
            outputs:
              model_output: ${{parent.outputs.missing}}
          score_job:
            command: echo ${{inputs.m}} ${{inputs.t}}
            environment: {image: python}
            inputs:
              m: ${{parent.jobs.train_job.outputs.model}}
              t: ${{parent.jobs.trainer.outputs.model_output}}
    """, E2E_FILES)
    assert "pipeline.yml:8:22: jobs.train_job.inputs.training_data: the pipeline has no input 'nope'; its inputs: n" \
        in message
    assert "jobs.train_job.inputs.epochs: the component 'train' has no input 'epochs'; its inputs: learning_rate, " \
        "learning_rate_schedule, max_epocs, training_data" in message
    assert "jobs.train_job.outputs.model_output: the pipeline has no output 'missing'; its outputs: (none)" in message
    assert "jobs.score_job.inputs.m: step 'train_job' has no output 'model'; its outputs: model_output" in message
    assert "jobs.score_job.inputs.t: the pipeline has no step 'trainer'; its steps: score_job, train_job" in message


def test_a_cycle_is_named(load_error):
    message = load_error("""
        type: pipeline
        jobs:
          a:
            command: echo ${{inputs.x}} ${{outputs.o}}
            environment: {image: python}
            inputs: {x: "${{parent.jobs.c.outputs.o}}"}
            outputs: {o: }
          b:
            command: echo ${{inputs.x}} ${{outputs.o}}
            environment: {image: python}
            inputs: {x: "${{parent.jobs.a.outputs.o}}"}
            outputs: {o: }
          c:
            command: echo ${{inputs.x}} ${{outputs.o}}
            environment: {image: python}
            inputs: {x: "${{parent.jobs.b.outputs.o}}"}
            outputs: {o: }
    """)
    assert message == "pipeline.yml:4:5: jobs.a: the steps form a cycle: a -> c -> b -> a"


def test_component_input_values_are_checked_at_the_step(load_error):
    files = {"c.yml": component("c", {"ratio": "{type: number, min: 0, max: 1}", "mode": "{type: string, enum: [a, b]}",
                                      "count": "{type: integer}", "flag": "{type: boolean, default: false}"})}
    message = load_error("""
        type: pipeline
        inputs:
          r: 1.5
        jobs:
          s:
            component: ./c.yml
            inputs:
              ratio: ${{parent.inputs.r}}
              mode: c
              flag: maybe
    """, files)
    assert "jobs.s.inputs.ratio: pipeline input 'r': 1.5 is above the input's max 1" in message
    assert "jobs.s.inputs.mode: 'c' is not one of a, b" in message
    assert "jobs.s.inputs.flag: 'maybe' is not a boolean (true or false)" in message
    assert "jobs.s.inputs: the component 'c' requires input count; give it here" in message


@pytest.mark.parametrize(("step", "expected"), [
    ("{type: parallel, component: ./x.yml}",
     "pipeline.yml:3:13: jobs.s.type: 'parallel' steps are not supported by cible yet"),
    ("{type: automl}", "jobs.s.type: 'automl' steps are not supported by cible yet"),
    ("{type: component, component: ./x.yml}", "jobs.s.type: 'type: component' is the preview syntax"),
    ("{type: magic}", "jobs.s.type: 'magic' is not a step type"),
    ("{command: echo, environment: {image: python}, compute: local}",
     "jobs.s.compute: 'local' compute cannot run a pipeline step"),
    ("{environment: {image: python}}",
     "jobs.s.command: a command step needs 'command' (an inline command) or 'component'"),
    ("{component: azureml:c:1, command: echo}", "jobs.s.command: 'command' comes from the component"),
    ("{component: c}", "jobs.s.component: 'c' is not a component"),
    ("{command: 'echo ${{inputs.x}}', environment: {image: python}}",
     "jobs.s.command: the command refers to input 'x' which is not defined"),
    ("{command: echo, environment: {image: python}, inputs: {x: '${{inputs.y}}'}}",
     "jobs.s.inputs.x: '${{inputs.y}}' is the preview syntax; bindings start with parent: '${{parent.inputs.y}}'"),
    ("{command: echo, environment: {image: python}, inputs: {x: 'a ${{parent.inputs.y}}'}}",
     "jobs.s.inputs.x: 'a ${{parent.inputs.y}}' is not a binding"),
    ("{command: echo, environment: {image: python}, outputs: {o: '${{parent.inputs.y}}'}}",
     "jobs.s.outputs.o: a step output can be bound only to a pipeline output"),
])
def test_bad_steps(load_error, step, expected):
    message = load_error(f"type: pipeline\njobs:\n  s: {step}\n")
    assert expected in message


def test_compute_bound_to_a_local_input(load_error):
    message = load_error("""
        type: pipeline
        inputs: {where: local}
        jobs:
          s:
            command: echo
            environment: {image: python}
            compute: ${{parent.inputs.where}}
    """)
    assert "jobs.s.compute: 'local' compute cannot run a pipeline step" in message


def test_pipeline_needs_jobs_or_component(load_error):
    assert "missing required key 'jobs' in pipeline job" in load_error("type: pipeline\ndisplay_name: x\n")
    message = load_error("type: pipeline\ncomponent: azureml:p:1\njobs:\n  a: {command: echo, environment: x}\n")
    assert "component: a pipeline job has 'jobs' or 'component', not both" in message


def test_settings_values(load, load_error):
    job = load("type: pipeline\nsettings:\n  force_rerun: true\n  continue_on_step_failure: false\n"
               "jobs:\n  a: {command: echo, environment: x}\n").entity
    assert job.settings.force_rerun is True and job.settings.continue_on_step_failure is False
    job = load("type: pipeline\njobs:\n  a: {command: echo, environment: x}\n",
               set_overrides=["settings.force_rerun=True"]).entity
    assert job.settings.force_rerun is True
    assert "'local' compute cannot run pipeline steps" in load_error(
        "type: pipeline\nsettings: {default_compute: local}\njobs:\n  a: {command: echo, environment: x}\n")


def test_step_warnings_name_the_step(load):
    spec = load("""
        type: pipeline
        jobs:
          a:
            command: echo
            environment: x
            services: {my_jupyter: {type: jupyter_lab}}
    """)
    assert spec.warnings == ["'jobs.a.services' is accepted but not acted on by cible yet"]


def test_step_input_without_a_type_takes_the_declared_one(load):
    files = {"c.yml": component("c", {"f": "{type: uri_file}"}), "f.csv": "a,b\n"}
    job = load("type: pipeline\njobs:\n  s:\n    component: ./c.yml\n    inputs:\n      f: {path: ./f.csv}\n",
               files).entity
    given = job.jobs["s"].inputs["f"]
    assert isinstance(given, StepInput) and given.type is None


def test_parse_binding():
    assert parse_binding("${{parent.inputs.x}}") == Binding("inputs", "x")
    assert parse_binding(" ${{ parent.jobs.prep-job.outputs.prep_data }} ") == Binding("outputs", "prep_data", "prep-job")
    assert parse_binding("${{parent.jobs.a.inputs.i}}") == Binding("inputs", "i", "a")
    assert str(Binding("outputs", "o", "a")) == "${{parent.jobs.a.outputs.o}}"
    assert parse_binding("plain") is None and parse_binding(3) is None
    with pytest.raises(ValueError, match="preview syntax"):
        parse_binding("${{jobs.a.outputs.o}}")


def test_inline_component_and_environment_file_resolve_against_the_pipeline(tmp_path, load):
    spec = load("""
        type: pipeline
        jobs:
          a:
            command: echo
            environment: file:./env/env.yml
          b:
            component:
              type: command
              code: ./src
              environment: {image: python}
              command: echo
    """, {"env/env.yml": "image: python:3.11\nconda_file: conda.yml\nos_type: windows\n",
          "env/conda.yml": "dependencies: [pip]\n", "src/": ""})
    job = spec.entity
    assert job.jobs["a"].environment.conda_file == str((tmp_path / "env" / "conda.yml").resolve())
    assert job.jobs["b"].component.code == str((tmp_path / "src").resolve())
    assert spec.warnings == ["'jobs.a.environment.os_type: windows' is accepted but not acted on by cible yet"]


def test_a_component_of_the_other_kind(load_error):
    message = load_error("""
        type: pipeline
        jobs:
          c:
            component: {type: pipeline, jobs: {x: {command: echo, environment: y}}}
          d:
            type: pipeline
            component: {command: echo, environment: y}
    """)
    assert "jobs.c.component.type: a pipeline component runs in a step of 'type: pipeline'; this step's type is " \
        "command" in message
    assert "jobs.d.component.type: a command component runs in a step of 'type: command'" in message
