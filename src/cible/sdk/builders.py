"""load_job and command(): building jobs as azure-ai-ml does."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cible.core.models import CommandJob, JobInput, JobOutput
from cible.core.specs.azureml.loader import load_spec, load_spec_dict

Input = JobInput
Output = JobOutput


def load_job(source: str | Path, *, params_override: Sequence[dict[str, Any]] | None = None,
             set_overrides: Sequence[str] = ()) -> CommandJob:
    """Read an Azure ML job YAML. `params_override` takes azure-ai-ml's [{"a.b": value}] form."""
    assignments = list(set_overrides)
    for override in params_override or ():
        assignments += [f"{k}={_yaml_scalar(v)}" for k, v in override.items()]
    return load_spec(source, "job", set_overrides=assignments).entity


def _yaml_scalar(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value


def command(*, command: str, code: str | Path | None = None, inputs: dict[str, Any] | None = None,
            outputs: dict[str, Any] | None = None, **fields: Any) -> CommandJob:
    """Build a command job from keyword arguments (environment, compute, display_name …)."""
    data: dict[str, Any] = {"command": command, **{k: v for k, v in fields.items() if v is not None}}
    if code is not None:
        data["code"] = str(Path(code).expanduser().resolve())
    if inputs:
        data["inputs"] = {k: _dump(v) for k, v in inputs.items()}
    if outputs:
        data["outputs"] = {k: _dump(v) for k, v in outputs.items()}
    return load_spec_dict(data, "job", base_dir=Path.cwd(), source="command()").entity


def _dump(value: Any) -> Any:
    if isinstance(value, (JobInput, JobOutput)):
        return value.model_dump(exclude_none=True)
    return value
