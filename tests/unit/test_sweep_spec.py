"""Sweep job specs (`type: sweep`): Azure's schema and rules, each error at its key's file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models import Environment, SweepJob
from cible.core.models.sweeps import BanditPolicy, Choice, QLogNormal, RandomSampling, TruncationSelectionPolicy
from cible.core.specs.azureml.loader import load_spec, load_spec_dict

# Azure's lightgbm iris sweep example (cli/jobs/single-step/lightgbm/iris/job-sweep.yml).
LIGHTGBM = """\
$schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json
type: sweep
trial:
  code: src
  command: >-
    python main.py
    --iris-csv ${{inputs.iris_csv}}
    --learning-rate ${{search_space.learning_rate}}
    --boosting ${{search_space.boosting}}
  environment: azureml:AzureML-lightgbm-3.3@latest
inputs:
  iris_csv:
    type: uri_file
    path: wasbs://datasets@azuremlexamples.blob.core.windows.net/iris.csv
compute: azureml:cpu-cluster
sampling_algorithm: random
search_space:
  learning_rate:
    type: uniform
    min_value: 0.01
    max_value: 0.9
  boosting:
    type: choice
    values: ["gbdt", "dart"]
objective:
  goal: minimize
  primary_metric: test-multi_logloss
limits:
  max_total_trials: 20
  max_concurrent_trials: 10
  timeout: 7200
display_name: lightgbm-iris-sweep-example
experiment_name: lightgbm-iris-sweep-example
"""

# The smallest sweep; `{extra}` adds top-level keys, `{space}` replaces the search space.
MINIMAL = """\
type: sweep
sampling_algorithm: {algorithm}
search_space:
{space}
objective:
  goal: maximize
  primary_metric: accuracy
trial:
  command: python train.py {args}
  environment: azureml:AzureML-sklearn-1.5@latest
{extra}
"""
UNIFORM_LR = "  lr:\n    type: uniform\n    min_value: 0.01\n    max_value: 0.1"


@pytest.fixture
def load(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()

    def _load(text: str, name: str = "sweep.yml"):
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return load_spec(name, "job")

    return _load


@pytest.fixture
def error(load):
    def _error(text: str) -> str:
        with pytest.raises(InvalidSpecError) as info:
            load(text)
        return info.value.message

    return _error


def minimal(algorithm: str = "random", space: str = UNIFORM_LR, args: str = "--lr ${{search_space.lr}}",
            extra: str = "") -> str:
    return MINIMAL.format(algorithm=algorithm, space=space, args=args, extra=extra)


def test_azure_lightgbm_sweep_loads(load, tmp_path):
    loaded = load(LIGHTGBM)
    sweep = loaded.entity
    assert isinstance(sweep, SweepJob)
    assert sweep.sampling_algorithm == RandomSampling(type="random")
    assert sweep.trial.code == str((tmp_path / "src").resolve())
    assert isinstance(sweep.search_space["boosting"], Choice)
    assert sweep.objective.goal == "minimize"
    assert (sweep.limits.max_total_trials, sweep.limits.concurrent_trials, sweep.limits.timeout) == (20, 10, 7200)
    assert sweep.limits.trial_timeout is None
    assert sweep.early_termination is None
    assert loaded.warnings == []


def test_defaults_and_case_insensitive_values(load):
    sweep = load(minimal(algorithm="Bayesian").replace("goal: maximize", "goal: Maximize")).entity
    assert sweep.sampling_algorithm.type == "bayesian"
    assert sweep.objective.goal == "maximize"
    assert (sweep.limits.max_total_trials, sweep.limits.concurrent_trials, sweep.limits.timeout) == (1000, 1000, 5184000)


def test_object_form_of_the_sampling_algorithm(load):
    sweep = load(minimal(algorithm="\n  type: Random\n  seed: 42\n  rule: Sobol")).entity
    assert sweep.sampling_algorithm == RandomSampling(type="random", seed=42, rule="sobol")


def test_every_parameter_type_and_policy_loads(load):
    space = """\
  a: {type: choice, values: [1, 2.5, "x", true]}
  b: {type: randint, upper: 10}
  c: {type: uniform, min_value: 0, max_value: 1}
  d: {type: loguniform, min_value: -5, max_value: 0}
  e: {type: quniform, min_value: 0, max_value: 100, q: 5}
  f: {type: qloguniform, min_value: 0, max_value: 4, q: 1}
  g: {type: normal, mu: 10, sigma: 3}
  h: {type: lognormal, mu: 0, sigma: 1}
  i: {type: qnormal, mu: 10, sigma: 3, q: 2}
  j: {type: QLogNormal, mu: 1, sigma: 0.5, q: 0.1}"""
    extra = "early_termination:\n  type: truncation_selection\n  truncation_percentage: 20\n  delay_evaluation: 5"
    sweep = load(minimal(space=space, args="", extra=extra)).entity
    assert [p.type for p in sweep.search_space.values()] == [
        "choice", "randint", "uniform", "loguniform", "quniform", "qloguniform", "normal", "lognormal", "qnormal",
        "qlognormal"]
    assert isinstance(sweep.search_space["j"], QLogNormal)
    assert sweep.early_termination == TruncationSelectionPolicy(truncation_percentage=20, delay_evaluation=5)
    bandit = load(minimal(extra="early_termination: {type: Bandit, slack_amount: 0.2}")).entity.early_termination
    assert bandit == BanditPolicy(slack_amount=0.2, evaluation_interval=1, delay_evaluation=0)


def test_grid_takes_only_choice(error):
    message = error(minimal(algorithm="grid"))
    assert message == ("sweep.yml:5:11: search_space.lr.type: grid sampling supports only choice parameters, "
                       "not uniform")


def test_bayesian_takes_choice_uniform_quniform_and_no_early_termination(error, load):
    space = "  lr: {type: loguniform, min_value: -5, max_value: 0}"
    extra = "early_termination:\n  type: median_stopping"
    lines = error(minimal(algorithm="bayesian", space=space, extra=extra)).splitlines()
    assert lines == [
        "sweep.yml:4:14: search_space.lr.type: bayesian sampling supports only choice, uniform, quniform "
        "parameters, not loguniform",
        "sweep.yml:12:3: early_termination: bayesian sampling does not support early termination; remove "
        "early_termination or use random sampling",
    ]
    fine = "  a: {type: choice, values: [1]}\n  b: {type: uniform, min_value: 0, max_value: 1}\n" \
           "  c: {type: quniform, min_value: 0, max_value: 9, q: 3}"
    assert load(minimal(algorithm="bayesian", space=fine, args="")).entity.algorithm == "bayesian"


def test_trial_command_names_defined_hyperparameters_inputs_and_outputs(error):
    args = "--lr ${{search_space.lr}} --x ${{search_space.nope}} --d ${{inputs.data}} --o ${{outputs.model}}"
    lines = error(minimal(args=args)).splitlines()
    assert lines == [
        "sweep.yml:12:12: trial.command: the command refers to search_space parameter 'nope' which is not defined; "
        "defined parameters: lr",
        "sweep.yml:12:12: trial.command: the command refers to input 'data' which is not defined; "
        "defined inputs: (none)",
        "sweep.yml:12:12: trial.command: the command refers to output 'model' which is not defined; "
        "defined outputs: (none)",
    ]
    assert "unknown expression namespace 'parent'" in error(minimal(args="${{parent.inputs.x}}"))


@pytest.mark.parametrize(("policy", "expected"), [
    ("{type: bandit}", "sweep.yml:14:20: early_termination: a bandit policy takes exactly one of slack_factor"),
    ("{type: bandit, slack_factor: 0.1, slack_amount: 0.2}", "sweep.yml:14:20: early_termination: a bandit"),
    ("{type: truncation_selection, truncation_percentage: 100}",
     "sweep.yml:14:72: early_termination.truncation_percentage: Input should be less than or equal to 99"),
    ("{type: truncation_selection}",
     "sweep.yml:14:1: missing required key 'truncation_percentage' in early_termination"),
    ("{type: median_stopping, evaluation_interval: -1}",
     "sweep.yml:14:65: early_termination.evaluation_interval: Input should be greater than or equal to 0"),
    ("{type: hyperband}", "sweep.yml:14:27: early_termination.type: 'hyperband' is not one of bandit, "
                          "median_stopping, truncation_selection"),
])
def test_bad_early_termination(error, policy, expected):
    assert error(minimal(extra=f"early_termination: {policy}")).startswith(expected)


@pytest.mark.parametrize(("space", "expected"), [
    ("  lr: {type: uniform, min_value: 0.5, max_value: 0.5}",
     "sweep.yml:4:50: search_space.lr.max_value: max_value (0.5) must be greater than min_value (0.5)"),
    ("  lr: {type: randint, upper: 0}",
     "sweep.yml:4:30: search_space.lr.upper: Input should be greater than or equal to 1"),
    ("  lr: {type: choice, values: []}", "sweep.yml:4:30: search_space.lr.values: Value should have at least 1 item"),
    ("  lr: {type: choice, values: [1, {a: 2}]}",
     "sweep.yml:4:30: search_space.lr.values: choice values are strings, numbers or booleans, not a dict"),
    ("  lr: {type: normal, mu: 0, sigma: 0}",
     "sweep.yml:4:36: search_space.lr.sigma: Input should be greater than 0"),
    ("  lr: {type: quniform, min_value: 0, max_value: 1, q: 0}",
     "sweep.yml:4:55: search_space.lr.q: Input should be greater than 0"),
    ("  lr: {type: loguniform, min_value: 0, max_value: 800}",
     "sweep.yml:4:51: search_space.lr.max_value: Input should be less than or equal to 700"),
    ("  lr: {type: lognormal, mu: 600, sigma: 30}",
     "sweep.yml:4:41: search_space.lr.sigma: exp(mu ± 8·sigma) must stay within exp(±700)"),
    ("  lr: {type: gaussian, mu: 0, sigma: 1}",
     "sweep.yml:4:14: search_space.lr.type: 'gaussian' is not one of choice, randint, uniform, loguniform"),
    ("  lr: {type: uniform, min: 0, max_value: 1}", "sweep.yml:4:3: missing required key 'min_value' in search_space.lr\n"
     "sweep.yml:4:23: unknown key 'min' in search_space.lr; allowed keys: max_value, min_value, type"),
    ("  2lr: {type: uniform, min_value: 0, max_value: 1}",
     "sweep.yml:4:3: search_space: '2lr' is not a hyperparameter name"),
])
def test_bad_search_space(error, space, expected):
    assert error(minimal(space=space, args="")).startswith(expected)


def test_objective_and_sampling_errors(error):
    assert error(minimal(algorithm="hyperopt")) == (
        "sweep.yml:2:21: sampling_algorithm: 'hyperopt' is not a sampling algorithm; one of random, grid, bayesian")
    text = minimal().replace("  goal: maximize\n", "  goal: best\n")
    assert error(text) == "sweep.yml:9:9: objective.goal: 'best' is not one of minimize, maximize"
    text = minimal().replace("  primary_metric: accuracy\n", "")
    assert error(text) == "sweep.yml:8:1: missing required key 'primary_metric' in objective"
    assert "missing required key 'sampling_algorithm' in sweep job" in error(
        minimal().replace("sampling_algorithm: random\n", ""))
    assert "sweep.yml:15:26: limits.max_concurrent_trials: Input should be greater than or equal to 1" in error(
        minimal(extra="limits:\n  max_concurrent_trials: 0"))


def test_limits_cap_concurrency_at_the_total(load):
    sweep = load(minimal(extra="limits: {max_total_trials: 3, max_concurrent_trials: 8, trial_timeout: 60}")).entity
    assert (sweep.limits.concurrent_trials, sweep.limits.trial_timeout) == (3, 60)


def test_trial_environment_file_and_paths_resolve_against_the_yaml(load, tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "env.yml").write_text("image: python:3.11\nconda_file: conda.yml\nos_type: Windows\n")
    (tmp_path / "env" / "conda.yml").write_text("dependencies: [python=3.11]\n")
    (tmp_path / "deps.yml").write_text("dependencies: [python=3.11]\n")
    loaded = load(LIGHTGBM.replace("environment: azureml:AzureML-lightgbm-3.3@latest",
                                   "environment: file:env/env.yml"))
    env = loaded.entity.trial.environment
    assert isinstance(env, Environment)
    assert env.conda_file == str((tmp_path / "env" / "conda.yml").resolve())
    assert loaded.warnings == ["'trial.environment.os_type: windows' is accepted but not acted on by cible yet"]

    inline = LIGHTGBM.replace("environment: azureml:AzureML-lightgbm-3.3@latest",
                              "environment:\n    image: python:3.11\n    conda_file: deps.yml")
    assert load(inline).entity.trial.environment.conda_file == str((tmp_path / "deps.yml").resolve())


def test_missing_local_paths_are_errors_at_their_keys(error):
    assert error(LIGHTGBM.replace("code: src", "code: nowhere")).startswith(
        "sweep.yml:4:9: trial.code: code folder 'nowhere' does not exist")
    assert error(LIGHTGBM.replace("azureml:AzureML-lightgbm-3.3@latest", "file:missing.yml")).startswith(
        "sweep.yml:10:16: trial.environment: environment file 'file:missing.yml' not found")


def test_ignored_trial_keys_warn_with_their_place(load):
    loaded = load(minimal().replace("  environment:", "  resources: {instance_count: 2, shm_size: 4g}\n"
                                                      "  environment:"))
    assert loaded.warnings == ["'trial.resources.shm_size' is accepted but not acted on by cible yet"]
    assert loaded.locations[loaded.warnings[0]] == "sweep.yml:13:34"


# In pipelines `trial: ./train.yml` arrives inlined: a command component whose inputs carry the
# hyperparameters (Azure's pipeline_with_hyperparameter_sweep).
COMPONENT_TRIAL = {
    "$schema": "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json",
    "type": "command", "name": "train_model", "display_name": "train_model", "version": 1,
    "description": "trains", "tags": {"a": 1}, "is_deterministic": False, "additional_includes": ["../lib"],
    "inputs": {"data": {"type": "uri_folder"}, "c_value": {"type": "number", "default": 1.0},
               "kernel": {"type": "string", "default": "rbf"}, "degree": {"type": "integer", "default": 3},
               "seed": {"type": "integer", "optional": True}, "tol": {"type": "number"}},
    "outputs": {"model_output": {"type": "mlflow_model"}},
    "code": "./train-src",
    "environment": "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
    "command": "python train.py --data ${{inputs.data}} --C ${{inputs.c_value}} --kernel ${{inputs.kernel}} "
               "--degree ${{inputs.degree}} $[[--seed ${{inputs.seed}}]] --tol ${{inputs.tol}} "
               "--model ${{outputs.model_output}}",
}


def component_sweep(**trial_changes) -> dict:
    return {
        "type": "sweep", "sampling_algorithm": "random",
        "inputs": {"data": {"type": "uri_folder", "path": "azureml://jobs/prep/outputs/out"}},
        "outputs": {"model_output": None},
        "search_space": {"c_value": {"type": "uniform", "min_value": 0.5, "max_value": 0.9},
                         "tol": {"type": "choice", "values": [0.001, 0.01]}},
        "objective": {"goal": "minimize", "primary_metric": "training_f1_score"},
        "limits": {"max_total_trials": 5, "max_concurrent_trials": 3, "timeout": 3600, "trial_timeout": 720},
        "trial": {**COMPONENT_TRIAL, **trial_changes},
    }


def test_component_trial_keeps_its_fields_and_its_inputs_count_as_defined():
    data = component_sweep()
    sweep = load_spec_dict(data, "job").entity
    trial = sweep.trial
    assert (trial.type, trial.name, trial.version, trial.is_deterministic) == ("command", "train_model", "1", False)
    assert trial.additional_includes == ["../lib"]
    assert trial.inputs["c_value"].default == 1.0 and trial.inputs["seed"].optional
    assert data["trial"] is not None and data["trial"]["environment"] == COMPONENT_TRIAL["environment"]


def test_component_trial_input_without_value_is_an_error():
    space = {"c_value": {"type": "uniform", "min_value": 0.5, "max_value": 0.9}}
    with pytest.raises(InvalidSpecError) as info:
        load_spec_dict({**component_sweep(), "search_space": space}, "job")
    assert info.value.message == ("<dict>: trial.command: the command refers to input 'tol' which is not defined; "
                                  "defined inputs: c_value, data, degree, kernel, seed")


def test_loading_leaves_the_callers_mapping_alone():
    data = component_sweep(environment="file:env.yml")
    with pytest.raises(InvalidSpecError):
        load_spec_dict(data, "job")  # no such file next to the working directory
    assert data["trial"]["environment"] == "file:env.yml"


def test_a_loaded_sweep_round_trips_through_json(load):
    extra = "early_termination: {type: bandit, slack_factor: 0.1, delay_evaluation: 2}\nlimits: {trial_timeout: 30}"
    first = load(minimal(algorithm="{type: random, seed: 1, rule: sobol}", extra=extra)).entity
    body = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert body["sampling_algorithm"] == {"type": "random", "seed": 1, "rule": "sobol"}
    again = load_spec_dict(body, "job").entity
    assert again == first
