"""Batch endpoint and batch deployment specs (Azure reference §6.1-6.2).

Field names, defaults and bounds are Azure's (the CLI v2 YAML schemas `batchEndpoint`,
`modelBatchDeployment`, `pipelineComponentBatchDeployment`). A deployment without `type:` is
Azure's older form, a model deployment whose settings sit at the YAML root: both forms are
accepted and normalised into `settings`, so the rest of cible reads one shape.

A registered model's type (MLflow or not) is known only once it is looked up, so the rules that
need it are said again by the server (`check_model_type`) with the same messages.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictStr, ValidationInfo, field_validator, model_validator

from cible.core.errors import InvalidSpecError
from cible.core.naming import DeploymentName, EndpointName
from cible.core.safepaths import MAX_COMPONENT_BYTES

from .common import LowerStr, OptStr, SpecModel
from .components import Problem, raise_at
from .endpoints import CodeConfiguration, DeploymentModel, ModelValue, _compute_ref, _model_ref
from .jobs import MAX_NODES, MAX_PROCESSES_PER_NODE, MAX_TIMEOUT_S, EnvironmentValue, EnvironmentVariables, Tags

# Sane bounds that keep the runner's arithmetic finite (far above any real setting).
MAX_MINI_BATCH_SIZE = 1_000_000
MAX_RETRIES = 1_000
# Azure's REST and SDK spellings of the one mode batch endpoints have (`AADToken`).
_AUTH_MODES = {"aad_token": "aad_token", "aadtoken": "aad_token"}


def _auth_mode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    mode = _AUTH_MODES.get(value.strip().lower())
    if mode is None:
        raise ValueError(f"{value!r}: a batch endpoint's auth_mode is aad_token (Azure's only mode for batch "
                         "endpoints); cible invokes it through the workspace API with the workspace's token")
    return mode


def _snake(value: Any) -> Any:
    """Azure's REST spellings (`AppendRow`, `SummaryOnly`, `Info`) as the YAML's (`append_row`)."""
    if not isinstance(value, str):
        return value
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", value.strip()).lower()


def _empty_object(value: Any) -> Any:
    return {} if value is None else value  # `settings:` with nothing under it means Azure's defaults


# ---- the endpoint ---------------------------------------------------------------------------


class BatchEndpointDefaults(SpecModel):
    deployment_name: DeploymentName | None = None  # what `invoke` uses when it names no deployment


class BatchEndpoint(SpecModel):
    """A batch endpoint (``az ml batch-endpoint create -f``): a name and its default deployment."""

    name: EndpointName
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    auth_mode: Annotated[Literal["aad_token"], BeforeValidator(_auth_mode)] = "aad_token"
    defaults: Annotated[BatchEndpointDefaults, BeforeValidator(_empty_object)] = Field(
        default_factory=BatchEndpointDefaults)
    # Read-only, server-populated: `show` prints them; written in a spec they are ignored (with a warning).
    id: str | None = None
    scoring_uri: str | None = None
    provisioning_state: str | None = None


# ---- a deployment's settings ------------------------------------------------------------------


class RetrySettings(SpecModel):
    max_retries: int = Field(3, ge=0, le=MAX_RETRIES)  # tries again of a mini-batch that failed or timed out
    timeout: int = Field(30, ge=1, le=MAX_TIMEOUT_S)  # seconds one mini-batch's run() may take


# The runner's own folder in the output (serving/batch/output.py PARTS_DIR): the joined file cannot take its name.
RESERVED_OUTPUT_PREFIX = ".cible-batch"


def _output_file_name(value: str) -> str:
    if not value.strip() or "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
        raise ValueError(f"{value!r} is not a file name; output_file_name is the name of one file in the output "
                         "folder, e.g. 'predictions.csv'")
    if value.startswith(RESERVED_OUTPUT_PREFIX):
        raise ValueError(f"{value!r}: names starting with '{RESERVED_OUTPUT_PREFIX}' are the batch runner's own "
                         "(its parts folder); choose another name, e.g. 'predictions.csv'")
    size = len(value.encode("utf-8", "surrogateescape"))
    if size > MAX_COMPONENT_BYTES:
        raise ValueError(f"output_file_name is {size} bytes long; a file name holds at most {MAX_COMPONENT_BYTES} "
                         "bytes: shorten it")
    return value


class BatchSettings(SpecModel):
    """A model deployment's settings (``settings:``, or the YAML root in Azure's older form)."""

    max_concurrency_per_instance: int = Field(1, ge=1, le=MAX_PROCESSES_PER_NODE)
    mini_batch_size: int = Field(10, ge=1, le=MAX_MINI_BATCH_SIZE)  # files per run() call
    output_action: Annotated[Literal["append_row", "summary_only"], BeforeValidator(_snake)] = "append_row"
    output_file_name: str = "predictions.csv"
    retry_settings: Annotated[RetrySettings, BeforeValidator(_empty_object)] = Field(default_factory=RetrySettings)
    # Failed *files* tolerated over the whole input; -1: any number.
    error_threshold: int = Field(-1, ge=-1)
    logging_level: Annotated[Literal["debug", "info", "warning"], BeforeValidator(_snake)] = "info"
    environment_variables: EnvironmentVariables = Field(default_factory=dict)

    @field_validator("output_file_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        return _output_file_name(value)


# Keys of BatchSettings that Azure's older form writes at the YAML root.
LEGACY_ROOT_SETTINGS = tuple(name for name in BatchSettings.model_fields if name != "schema_")


class PipelineBatchSettings(SpecModel):
    """A pipeline deployment's settings: the pipeline's own (``settings:`` of a pipeline job)."""

    default_compute: OptStr = None
    default_datastore: OptStr = None
    continue_on_step_failure: bool | None = None
    force_rerun: bool | None = None


# ---- the deployment ---------------------------------------------------------------------------


class BatchResources(SpecModel):
    instance_count: int = Field(1, ge=1, le=MAX_NODES)  # nodes of the compute each invocation's job uses


class BatchDeployment(SpecModel):
    """A batch deployment (``az ml batch-deployment create -f``): a model (with a scoring script, or an
    MLflow model without one) or a pipeline, and how invocations run on the compute cluster."""

    name: DeploymentName
    endpoint_name: EndpointName
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    # Left out: Azure's older form, a model deployment (its settings may sit at the root).
    type: Annotated[Literal["model", "pipeline"], LowerStr] = "model"
    model: ModelValue | None = None
    code_configuration: CodeConfiguration | None = None
    environment: EnvironmentValue | None = None
    compute: str | None = None
    resources: Annotated[BatchResources, BeforeValidator(_empty_object)] = Field(default_factory=BatchResources)
    settings: BatchSettings | PipelineBatchSettings | None = None
    # type: pipeline: a component (azureml:<name>@latest, a local YAML, or inline), or a pipeline job's name.
    component: StrictStr | dict[str, Any] | None = None
    job_definition: StrictStr | dict[str, Any] | None = None
    # Azure's older form: settings at the root, moved into `settings` once checked.
    max_concurrency_per_instance: int | None = Field(None, ge=1, le=MAX_PROCESSES_PER_NODE)
    mini_batch_size: int | None = Field(None, ge=1, le=MAX_MINI_BATCH_SIZE)
    output_action: Annotated[Literal["append_row", "summary_only"] | None, BeforeValidator(_snake)] = None
    output_file_name: str | None = None
    retry_settings: RetrySettings | None = None
    error_threshold: int | None = Field(None, ge=-1)
    logging_level: Annotated[Literal["debug", "info", "warning"] | None, BeforeValidator(_snake)] = None
    environment_variables: EnvironmentVariables | None = None
    # Read-only, server-populated: ignored (with a warning) when written.
    id: str | None = None
    provisioning_state: str | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: Any) -> Any:
        return _model_ref(value) if isinstance(value, str) else value

    @field_validator("compute")
    @classmethod
    def _compute(cls, value: str | None) -> str | None:
        return _compute_ref(value)

    @field_validator("output_file_name")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        return None if value is None else _output_file_name(value)

    @field_validator("settings", mode="before")
    @classmethod
    def _settings_of_its_type(cls, value: Any, info: ValidationInfo) -> Any:
        # Which settings a deployment has depends on its type (validated before this field).
        value = _empty_object(value)
        if not isinstance(value, dict):
            return value
        if info.data.get("type") != "pipeline":
            return BatchSettings.model_validate(value)
        known = [name for name in PipelineBatchSettings.model_fields if name != "schema_"]
        raise_at("PipelineBatchSettings", [
            ((key,), f"'{key}' is not a setting of a pipeline deployment (type: pipeline), whose settings are the "
             f"pipeline's: {', '.join(known)}" + (" (a model deployment's settings are for type: model)"
                                                   if key in LEGACY_ROOT_SETTINGS else ""), value[key])
            for key in value if key not in PipelineBatchSettings.model_fields and key != "$schema"])
        return PipelineBatchSettings.model_validate(value)

    @model_validator(mode="after")
    def _consistent(self) -> BatchDeployment:
        problems: list[Problem] = []
        at_root = {key: getattr(self, key) for key in LEGACY_ROOT_SETTINGS if getattr(self, key) is not None}
        if self.type == "pipeline":
            problems += self._pipeline_problems(at_root)
        else:
            problems += self._model_problems(at_root)
        raise_at("BatchDeployment", problems)
        if self.type == "model":
            self._normalise_settings(at_root)
        return self

    def _normalise_settings(self, at_root: dict[str, Any]) -> None:
        """Azure's older form (settings at the root) into `settings`, so one shape is stored."""
        settings = self.settings if isinstance(self.settings, BatchSettings) else BatchSettings()
        if at_root:
            settings = settings.model_copy(update=at_root)
            for key in at_root:
                setattr(self, key, None)
        self.settings = settings

    def _model_problems(self, at_root: dict[str, Any]) -> list[Problem]:
        problems: list[Problem] = []
        if self.settings is not None:
            both = sorted(set(at_root) & self.settings.model_fields_set)
            problems += [((key,), f"'{key}' is set both at the root (Azure's older form) and under settings; keep "
                          "one", at_root[key]) for key in both]
        if self.model is None:
            problems.append(((), "missing required key 'model' in batch deployment: 'azureml:<name>:<version>', "
                             "'azureml:<name>@latest', or inline {path: ./model, type: mlflow_model}", None))
        if not self.compute:
            problems.append(((), "missing required key 'compute' in batch deployment: the cluster its jobs run on, "
                             "e.g. 'compute: azureml:batch-cluster'", None))
        for key in ("component", "job_definition"):
            if getattr(self, key) is not None:
                problems.append(((key,), f"'{key}' is for pipeline deployments (type: pipeline); a model deployment "
                                 "scores with its model", getattr(self, key)))
        model_type = self.model.type if isinstance(self.model, DeploymentModel) else None
        if self.model is not None and model_type is not None:
            problem = model_type_problem(self.code_configuration is not None, self.environment is not None, model_type)
            if problem:
                problems.append(((), problem, None))
        return problems

    def _pipeline_problems(self, at_root: dict[str, Any]) -> list[Problem]:
        problems: list[Problem] = [((key,), f"'{key}' at the root is Azure's older form of a model deployment; a "
                                    "pipeline deployment's settings are the pipeline's (settings.default_compute …)",
                                    value) for key, value in at_root.items()]
        if (self.component is None) == (self.job_definition is None):
            problems.append(((), "a pipeline deployment (type: pipeline) names one of 'component' (azureml:<name>@latest, "
                             "a local pipeline YAML, or inline) or 'job_definition' (azureml:<pipeline job>)", None))
        for key in ("model", "code_configuration", "environment"):
            if getattr(self, key) is not None:
                problems.append(((key,), f"'{key}' is for model deployments (type: model); a pipeline deployment runs "
                                 "its component", None))
        return problems

    @property
    def is_no_code(self) -> bool:
        """No scoring script: an MLflow model scored from its own flavour (Azure's generated driver)."""
        return self.code_configuration is None

    def check_model_type(self, model_type: str) -> None:
        """For a registered model (its type known only once looked up): the rules `model_type_problem` says."""
        problem = model_type_problem(self.code_configuration is not None, self.environment is not None, model_type)
        if problem:
            field = "environment" if self.code_configuration is not None else "code_configuration"
            raise InvalidSpecError(f"batch deployment '{self.name}': {problem}", details={"field": field})


def model_type_problem(has_code: bool, has_environment: bool, model_type: str | None) -> str | None:
    """Why a model deployment cannot score with a model of `model_type`, or None (Azure's rules: only an
    MLflow model scores without a scoring script, or runs a script without an environment, its own
    conda.yaml being the environment)."""
    if model_type == "mlflow_model":
        return None
    kind = model_type or "model of unknown type"
    if not has_code:
        return (f"missing required key 'code_configuration' in batch deployment (code and scoring_script): the model "
                f"is a {kind}, and only an MLflow model (type: mlflow_model) is scored without a scoring script")
    if not has_environment:
        return (f"missing required key 'environment' in batch deployment: a scoring script runs in an environment "
                f"('azureml:<name>:<version>', or inline: image and conda_file); the model is a {kind}, and only "
                "an MLflow model brings its own (its conda.yaml)")
    return None
