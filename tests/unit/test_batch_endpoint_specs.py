"""Batch endpoint and batch deployment specs: Azure's samples load unchanged (both the `settings:` form
and the older one with settings at the root), Azure's defaults are filled in, and what Azure refuses
is refused with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models.batch_endpoints import BatchDeployment, BatchEndpoint, BatchSettings, PipelineBatchSettings
from cible.core.specs.azureml.loader import LoadedSpec, load_spec, load_spec_dict

DEP = "batch-deployment"
EP = "batch-endpoint"


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """load(yaml, kind) -> LoadedSpec, from ./spec.yml beside an Azure-like sample tree (code/score.py)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "batch_driver.py").write_text("def init():\n    pass\n\ndef run(mini_batch):\n    return []\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")

    def _load(text: str, kind: str = DEP, **kwargs) -> LoadedSpec:
        (tmp_path / "spec.yml").write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return load_spec("spec.yml", kind, **kwargs)

    return _load


def _error(load, text: str, kind: str = DEP, **kwargs) -> str:  # noqa: ANN001
    with pytest.raises(InvalidSpecError) as info:
        load(text, kind, **kwargs)
    return info.value.message


# Azure's mnist-classifier sample (azureml-examples cli/endpoints/batch/deploy-models/mnist-classifier):
# the older form, without `type:`, its settings at the root.
LEGACY = """
$schema: https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json
name: mnist-torch-dpl
endpoint_name: mnist-batch
description: A deployment using Torch to solve the MNIST classification dataset.
model: azureml:mnist-classifier-torch@latest
code_configuration:
  code: code
  scoring_script: batch_driver.py
environment:
  name: batch-torch-py38
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest
compute: azureml:batch-cluster
resources:
  instance_count: 1
max_concurrency_per_instance: 2
mini_batch_size: 10
output_action: append_row
output_file_name: predictions.csv
retry_settings:
  max_retries: 3
  timeout: 30
error_threshold: -1
logging_level: info
"""

# The same deployment as Azure writes it since CLI 1.7: `type: model`, settings under `settings:`.
MODEL = """
name: mnist-torch-dpl
endpoint_name: mnist-batch
type: model
model: azureml:mnist-classifier-torch@latest
code_configuration:
  code: code
  scoring_script: batch_driver.py
environment: azureml:torch-env:1
compute: azureml:batch-cluster
resources:
  instance_count: 2
settings:
  max_concurrency_per_instance: 2
  mini_batch_size: 10
  output_action: append_row
  output_file_name: predictions.csv
  retry_settings:
    max_retries: 3
    timeout: 30
  error_threshold: -1
  logging_level: info
"""


# ---- deployments: the two forms -------------------------------------------------------------------


def test_the_older_form_with_settings_at_the_root_is_normalised_into_settings(load) -> None:  # noqa: ANN001
    deployment = load(LEGACY).entity
    assert isinstance(deployment, BatchDeployment) and deployment.type == "model"
    dumped = deployment.model_dump(mode="json", exclude_none=True)
    assert "mini_batch_size" not in dumped and "retry_settings" not in dumped  # only under settings now
    assert dumped["settings"]["max_concurrency_per_instance"] == 2
    assert dumped["settings"]["retry_settings"] == {"max_retries": 3, "timeout": 30}
    assert deployment.code_configuration.code == str(Path("code").resolve())  # resolved against the YAML
    assert deployment.compute == "azureml:batch-cluster"


def test_both_forms_say_the_same_deployment(load) -> None:  # noqa: ANN001
    legacy = load(LEGACY).entity.settings
    current = load(MODEL).entity.settings
    assert legacy == current


def test_azures_defaults_are_filled_in(load) -> None:  # noqa: ANN001
    minimal = "name: dep\nendpoint_name: ep1\nmodel: azureml:m:1\ncompute: c-cluster\n" \
              "code_configuration: {code: code, scoring_script: batch_driver.py}\nenvironment: azureml:env:1\n"
    deployment = load(minimal).entity
    assert deployment.type == "model" and deployment.resources.instance_count == 1
    assert deployment.settings == BatchSettings()
    assert deployment.settings.model_dump(exclude_none=True) == {
        "max_concurrency_per_instance": 1, "mini_batch_size": 10, "output_action": "append_row",
        "output_file_name": "predictions.csv", "retry_settings": {"max_retries": 3, "timeout": 30},
        "error_threshold": -1, "logging_level": "info", "environment_variables": {}}


def test_azures_rest_spellings_are_read_as_the_yamls(load) -> None:  # noqa: ANN001
    text = MODEL.replace("output_action: append_row", "output_action: SummaryOnly").replace(
        "logging_level: info", "logging_level: Warning")
    settings = load(text).entity.settings
    assert (settings.output_action, settings.logging_level) == ("summary_only", "warning")


def test_set_overrides_a_setting(load) -> None:  # noqa: ANN001
    deployment = load(MODEL, set_overrides=["settings.mini_batch_size=20", "resources.instance_count=3"]).entity
    assert deployment.settings.mini_batch_size == 20 and deployment.resources.instance_count == 3


# ---- deployments: what is refused -----------------------------------------------------------------


def test_a_setting_in_both_places_is_refused_at_its_line(load) -> None:  # noqa: ANN001
    text = MODEL + "mini_batch_size: 5\n"
    message = _error(load, text)
    assert "spec.yml:22:" in message and "both at the root" in message


@pytest.mark.parametrize(("old", "new", "field"), [
    ("mini_batch_size: 10", "mini_batch_size: 0", "settings.mini_batch_size"),
    ("max_concurrency_per_instance: 2", "max_concurrency_per_instance: 0", "settings.max_concurrency_per_instance"),
    ("output_action: append_row", "output_action: append", "settings.output_action"),
    ("output_file_name: predictions.csv", "output_file_name: out/p.csv", "settings.output_file_name"),
    ("timeout: 30", "timeout: 0", "settings.retry_settings.timeout"),
    ("max_retries: 3", "max_retries: -1", "settings.retry_settings.max_retries"),
    ("error_threshold: -1", "error_threshold: -2", "settings.error_threshold"),
    ("logging_level: info", "logging_level: verbose", "settings.logging_level"),
    ("instance_count: 2", "instance_count: 0", "resources.instance_count"),
    ("compute: azureml:batch-cluster", "compute: azureml:-bad", "compute"),
])
def test_a_bad_setting_is_refused_naming_its_place(load, old: str, new: str, field: str) -> None:  # noqa: ANN001
    assert old in MODEL
    message = _error(load, MODEL.replace(old, new))
    assert f"{field}:" in message and "spec.yml:" in message, message


def test_a_model_deployment_needs_a_model_and_a_compute(load) -> None:  # noqa: ANN001
    text = "\n".join(line for line in MODEL.splitlines() if not line.startswith(("model:", "compute:")))
    message = _error(load, text)
    assert "missing required key 'model'" in message and "missing required key 'compute'" in message


def test_only_an_mlflow_model_scores_without_a_script_or_runs_one_without_an_environment(load) -> None:  # noqa: ANN001
    base = "name: dep\nendpoint_name: ep1\ncompute: azureml:batch-cluster\n"
    no_code = load(base + "model: {path: model, type: mlflow_model}\n").entity
    assert no_code.is_no_code and no_code.environment is None  # Azure's generated driver, the model's conda.yaml
    script_no_env = load(base + "model: {path: model, type: mlflow_model}\n"
                                "code_configuration: {code: code, scoring_script: batch_driver.py}\n").entity
    assert not script_no_env.is_no_code
    assert "missing required key 'code_configuration'" in _error(load, base + "model: {path: model}\n")
    message = _error(load, base + "model: {path: model}\ncode_configuration: {code: code, scoring_script: "
                                  "batch_driver.py}\n")
    assert "missing required key 'environment'" in message
    # A registered model's type is known at the server: the same rule, said there.
    registered = load(base + "model: azureml:m:1\n").entity
    with pytest.raises(InvalidSpecError) as info:
        registered.check_model_type("custom_model")
    assert info.value.details["field"] == "code_configuration"
    registered.check_model_type("mlflow_model")


def test_a_missing_scoring_script_is_said_at_load(load) -> None:  # noqa: ANN001
    message = _error(load, MODEL.replace("scoring_script: batch_driver.py", "scoring_script: nope.py"))
    assert "scoring script 'nope.py' not found" in message


# ---- pipeline deployments -------------------------------------------------------------------------


def test_a_pipeline_deployment_is_accepted_and_kept_as_written(load) -> None:  # noqa: ANN001
    text = """
    name: hello-batch-dpl
    endpoint_name: hello-pipeline-batch
    type: pipeline
    component: azureml:hello_batch@latest
    settings:
        default_compute: batch-cluster
        continue_on_step_failure: false
    """
    deployment = load(text).entity
    assert deployment.type == "pipeline" and deployment.component == "azureml:hello_batch@latest"
    assert deployment.settings == PipelineBatchSettings(default_compute="batch-cluster", continue_on_step_failure=False)
    assert load(text.replace("component: azureml:hello_batch@latest", "job_definition: azureml:my-job")).entity.job_definition


def test_a_pipeline_deployment_names_what_it_runs_and_nothing_of_a_models(load) -> None:  # noqa: ANN001
    base = "name: dep\nendpoint_name: ep1\ntype: pipeline\n"
    assert "names one of 'component'" in _error(load, base)
    message = _error(load, base + "component: azureml:c@latest\nmodel: azureml:m:1\nmini_batch_size: 3\n")
    assert "'model' is for model deployments" in message and "Azure's older form" in message
    assert "settings.mini_batch_size: 'mini_batch_size' is not a setting of a pipeline deployment" in _error(load, base + "component: azureml:c@latest\n"
                                                             "settings: {mini_batch_size: 3}\n")
    model = "name: dep\nendpoint_name: ep1\nmodel: azureml:m:1\ncompute: c-cluster\ncomponent: azureml:c@latest\n"
    assert "'component' is for pipeline deployments" in _error(load, model)


# ---- endpoints ------------------------------------------------------------------------------------


def test_an_endpoint_has_azures_fields_and_default_deployment(load) -> None:  # noqa: ANN001
    text = """
    $schema: https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json
    name: heart-classifier-batch
    description: A heart condition classifier for batch inference
    auth_mode: aad_token
    defaults:
      deployment_name: classifier-xgboost-mlflow
    """
    endpoint = load(text, EP).entity
    assert isinstance(endpoint, BatchEndpoint)
    assert endpoint.defaults.deployment_name == "classifier-xgboost-mlflow" and endpoint.auth_mode == "aad_token"
    assert load("name: ep1\nauth_mode: AADToken\n", EP).entity.auth_mode == "aad_token"
    assert load("name: ep1\n", EP).entity.defaults.deployment_name is None


def test_an_endpoint_refuses_other_auth_modes_and_warns_of_read_only_fields(load) -> None:  # noqa: ANN001
    message = _error(load, "name: ep1\nauth_mode: key\n", EP)
    assert "spec.yml:2:" in message and "aad_token" in message
    loaded = load("name: ep1\nscoring_uri: https://x/y\nprovisioning_state: Succeeded\n", EP)
    assert len(loaded.warnings) == 2
    assert all(loaded.located(w).startswith("spec.yml:") for w in loaded.warnings)


def test_set_changes_the_default_deployment(load) -> None:  # noqa: ANN001
    loaded = load("name: ep1\n", EP, set_overrides=["defaults.deployment_name=blue"])
    assert loaded.entity.defaults.deployment_name == "blue"


def test_a_dict_spec_loads_as_a_file_does() -> None:
    deployment = load_spec_dict({"name": "dep", "endpoint_name": "ep1", "model": "azureml:m:1", "compute": "c-cluster",
                                 "mini_batch_size": 4}, DEP).entity
    assert deployment.settings.mini_batch_size == 4 and deployment.mini_batch_size is None
