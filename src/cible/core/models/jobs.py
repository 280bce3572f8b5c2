"""Command job spec (Azure reference §3.1-3.3).

Other job types (sweep, pipeline, ...) are rejected by the loader for now.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cible.core.naming import AssetName, ExperimentName, JobName

from .assets import Environment, Version
from .common import LowerStr, SpecModel, StrMap

InputType = Literal[
    "uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model", "triton_model",
    "number", "integer", "boolean", "string",
]
OutputType = Literal["uri_folder", "uri_file", "mltable", "mlflow_model", "custom_model", "triton_model"]


class JobInput(SpecModel):
    """An input given as an object; literal inputs stay plain scalars."""

    type: InputType = "uri_folder"
    path: str | None = None
    # None means "Azure's default", which is ro_mount at run time.
    mode: Literal["ro_mount", "download", "direct", "eval_mount", "eval_download", "mount"] | None = None
    # The following only mean something in component input definitions.
    optional: bool | None = None
    default: Any = None
    description: str | None = None
    min: float | None = None
    max: float | None = None
    enum: list[Any] | None = None


class JobOutput(SpecModel):
    """An output; ``outputs: {x: }`` (None) means a default uri_folder output."""

    type: OutputType = "uri_folder"
    mode: Literal["rw_mount", "upload", "direct"] | None = None
    path: str | None = None
    name: AssetName | None = None  # register the output as this data or model asset
    version: Version = None
    description: str | None = None


_SHM_SIZE = re.compile(r"^\d+[bkmg]$", re.IGNORECASE)


# Counts and durations have bounds that arithmetic, SQL and process tables hold (a 422, not a
# crash or a process per unit of a 2**70 count later).
MAX_NODES = 10_000
MAX_PROCESSES_PER_NODE = 1024
MAX_TIMEOUT_S = 2**31 - 1


class JobResources(SpecModel):
    instance_count: int = Field(1, ge=1, le=MAX_NODES)
    instance_type: str | None = None
    shm_size: str | None = None
    docker_args: str | list[str] | None = None
    locations: list[str] | None = None
    max_instance_count: int | None = Field(None, ge=1, le=MAX_NODES)
    properties: dict[str, Any] | None = None

    @field_validator("shm_size")
    @classmethod
    def _shm_size_format(cls, value: str | None) -> str | None:
        if value is not None and not _SHM_SIZE.fullmatch(value):
            raise ValueError(f"{value!r} is not a size like '2g' (<number><b|k|m|g>)")
        return value


class JobLimits(SpecModel):
    timeout: int | None = Field(None, gt=0, le=MAX_TIMEOUT_S)  # seconds


class PyTorchDistribution(SpecModel):
    type: Literal["pytorch"] = "pytorch"
    process_count_per_instance: int = Field(1, ge=1, le=MAX_PROCESSES_PER_NODE)


class MpiDistribution(SpecModel):
    type: Literal["mpi"] = "mpi"
    process_count_per_instance: int = Field(1, ge=1, le=MAX_PROCESSES_PER_NODE)


class TensorFlowDistribution(SpecModel):
    type: Literal["tensorflow"] = "tensorflow"
    worker_count: int | None = Field(None, ge=1, le=MAX_NODES * MAX_PROCESSES_PER_NODE)  # None: one per instance
    parameter_server_count: int = Field(0, ge=0, le=MAX_NODES * MAX_PROCESSES_PER_NODE)


class RayDistribution(SpecModel):
    type: Literal["ray"] = "ray"
    address: str | None = None
    port: int | None = None
    include_dashboard: bool | None = None
    dashboard_port: int | None = None
    head_node_additional_args: str | None = None
    worker_node_additional_args: str | None = None


Distribution = Annotated[
    Union[PyTorchDistribution, MpiDistribution, TensorFlowDistribution, RayDistribution],
    Field(discriminator="type"),
]


class QueueSettings(SpecModel):
    # Docs examples write "Standard"/"Spot"; the SDK maps case, so do we.
    job_tier: Annotated[Literal["spot", "basic", "standard", "premium"] | None, LowerStr] = None
    priority: Annotated[Literal["low", "medium", "high"] | None, LowerStr] = None


def _literal_input(value: Any) -> Any:
    """Check a literal input before the scalar union sees it (one clear error, not four)."""
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (list, dict)):
        raise ValueError("an input must be a literal (string, number, boolean) or a mapping")
    return value


def _input_tag(value: Any) -> str:
    # A mapping is always an input object, so its errors are reported against
    # JobInput's fields instead of a noisy "not a str / not an int" union list.
    return "object" if isinstance(value, (dict, JobInput)) else "literal"


LiteralInput = Annotated[Union[StrictBool, StrictInt, StrictFloat, StrictStr], BeforeValidator(_literal_input)]
InputValue = Annotated[
    Union[Annotated[JobInput, Tag("object")], Annotated[LiteralInput, Tag("literal")]],
    Discriminator(_input_tag),
]


def _environment_tag(value: Any) -> str:
    return "inline" if isinstance(value, (dict, Environment)) else "reference"


EnvironmentValue = Annotated[
    Union[Annotated[StrictStr, Tag("reference")], Annotated[Environment, Tag("inline")]],
    Discriminator(_environment_tag),
]


# Free text has sane sizes: a job's spec is stored, listed (GET /jobs) and sent to its nodes.
# The command runs as `bash -c <command>` and Linux caps one argument at 128 KiB (inputs are
# substituted into it); environment values are exec'd too. Tags become the MLflow run's (250/8000).
MAX_COMMAND_BYTES = 64 << 10
MAX_ENV_VALUE_BYTES = 32 << 10
MAX_NAME_KEY_CHARS = 250
MAX_DISPLAY_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 16 << 10
MAX_TAG_VALUE_CHARS = 8000
# The whole spec, as stored: what one job adds to a page of GET /jobs (up to 1000 of them).
MAX_SPEC_BYTES = 512 << 10


def _check_size(what: str, text: str, limit: int, unit: str = "characters", hint: str = "") -> None:
    size = len(text.encode()) if unit == "bytes" else len(text)
    if size > limit:
        raise ValueError(f"{what} is {size} {unit}; at most {limit} are allowed{hint}")


def _command_text(value: str) -> str:
    if not value.strip():
        raise ValueError("'command' must not be empty")
    _check_size("it", value, MAX_COMMAND_BYTES, "bytes", "; run a long script from a file under `code`")
    return value


def _tag_sizes(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        _check_size(f"tag name {key[:40]!r}", key, MAX_NAME_KEY_CHARS)
        _check_size(f"tag {key[:40]!r}", item, MAX_TAG_VALUE_CHARS)
    return value


def _env_vars(value: Any) -> Any:
    """Environment variables are text; YAML scalars are stringified, anything else is an error."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (list, dict)):
                raise ValueError(f"environment variable {key!r} must be a scalar, not a {type(item).__name__}")
    return value


def _env_sizes(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        _check_size(f"environment variable name {key[:40]!r}", key, MAX_NAME_KEY_CHARS)
        _check_size(f"environment variable {key[:40]!r}", item, MAX_ENV_VALUE_BYTES, "bytes")
    return value


def check_spec_size(spec: SpecModel) -> None:
    """The whole spec, as stored, within MAX_SPEC_BYTES (a model validator's last check)."""
    size = len(spec.model_dump_json(exclude_none=True).encode())
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"the job spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES} are allowed "
                         "(keep long texts and data in files: `code`, inputs)")


# One set of checks and messages for what a command job, a component and a sweep's trial share
# (tags: a command job and a sweep).
CommandText = Annotated[str, AfterValidator(_command_text)]
Tags = Annotated[StrMap, AfterValidator(_tag_sizes)]
EnvironmentVariables = Annotated[StrMap, BeforeValidator(_env_vars), AfterValidator(_env_sizes)]


class CommandJob(SpecModel):
    """A ``type: command`` job (the default job type)."""

    type: Literal["command"] = "command"
    name: JobName | None = None
    display_name: str | None = None
    experiment_name: ExperimentName | None = None
    description: str | None = None
    tags: Tags = Field(default_factory=dict)
    command: CommandText
    code: str | None = None
    environment: EnvironmentValue | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    compute: str | None = None
    resources: JobResources | None = None
    distribution: Distribution | None = None
    limits: JobLimits | None = None
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    outputs: dict[str, JobOutput | None] = Field(default_factory=dict)
    queue_settings: QueueSettings | None = None
    services: dict[str, dict[str, Any]] | None = None
    identity: dict[str, Any] | None = None
    # Read-only, server-populated: present in `az ml job show` output, ignored on create.
    status: str | None = None
    id: str | None = None
    creation_context: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @field_validator("display_name", "description")
    @classmethod
    def _text_size(cls, value: str | None, info: ValidationInfo) -> str | None:
        limit = MAX_DISPLAY_NAME_CHARS if info.field_name == "display_name" else MAX_DESCRIPTION_CHARS
        if value is not None:
            _check_size("it", value, limit)
        return value

    @model_validator(mode="after")
    def _spec_size(self) -> CommandJob:
        check_spec_size(self)
        return self

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _empty_map(cls, value: Any) -> Any:
        # `inputs:` with nothing under it parses as None.
        return {} if value is None else value
