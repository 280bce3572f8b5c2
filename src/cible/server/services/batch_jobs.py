"""An invocation of a batch deployment as a job: the command job that runs cible's batch runner.

`batch-endpoint invoke` makes one command job on the deployment's compute cluster:
`python -m cible.serving.batch` on each of its `instance_count` nodes, the input folder (or file)
and the model staged as inputs, the named output `score` the runner writes its results to (so
`job download --output-name score` gives `named-outputs/score/predictions.csv`, as on Azure). The
deployment's settings travel in the plan's `batch` block (`batch_block`), which the runner reads
from the server: how many workers per node, the mini-batch size, retries, timeout and the
error threshold. The job is otherwise a job like any other (environment, code snapshot, limits, logs).
"""

from __future__ import annotations

import posixpath
import shlex
from pathlib import Path
from typing import Any

from cible.server.services.replica_jobs import MODEL_INPUT, ModelSource, model_environment

INPUT = "input_data"  # Azure's name for a batch job's input (pipeline deployments take it too)
OUTPUT = "score"  # Azure's name for a model deployment's named output
RUNNER = "cible.serving.batch"
# Job fields in a submit's error -> the deployment's (or the invocation's) fields they come from.
DEPLOYMENT_FIELDS = ((f"inputs.{MODEL_INPUT}.path", "model"), (f"inputs.{MODEL_INPUT}", "model"), ("code", "code_configuration.code"),
                     ("environment_variables", "settings.environment_variables"))
INVOKE_FIELDS = ((f"inputs.{INPUT}.path", "input"), (f"inputs.{INPUT}", "input"), (f"outputs.{OUTPUT}.path", "output_path"),
                 (f"outputs.{OUTPUT}", "output_path"), ("experiment_name", "experiment_name"))


def batch_block(endpoint: str, deployment: str, settings: dict[str, Any], *, mlflow: bool) -> dict[str, Any]:
    """The plan's `batch` block: the deployment's settings (invoke's overrides applied) as the runner reads them.
    `mlflow`: no scoring script, the MLflow model is scored from its flavour (Azure's generated driver)."""
    retry = settings.get("retry_settings") or {}
    return {
        "endpoint": endpoint,
        "deployment": deployment,
        "mini_batch_size": int(settings.get("mini_batch_size", 10)),
        "max_concurrency_per_instance": int(settings.get("max_concurrency_per_instance", 1)),
        "output_action": str(settings.get("output_action", "append_row")),
        "output_file_name": str(settings.get("output_file_name", "predictions.csv")),
        "max_retries": int(retry.get("max_retries", 3)),
        "timeout": int(retry.get("timeout", 30)),
        "error_threshold": int(settings.get("error_threshold", -1)),
        "logging_level": str(settings.get("logging_level", "info")),
        "input": INPUT,
        "output": OUTPUT,
        "mlflow": bool(mlflow),
    }


def batch_job(spec: dict[str, Any], *, endpoint: str, model: ModelSource | None, instance_count: int,
              input_data: dict[str, Any] | None, output_path: str | None = None, experiment_name: str | None = None,
              blob_root: Path | None = None) -> dict[str, Any]:
    """The command job body of one invocation of model deployment `spec`. Without `input_data` (a
    deployment's create, checked as its first invocation would be) the job has no input."""
    code_configuration = spec.get("code_configuration") or {}
    settings = spec.get("settings") or {}
    args = ["python", "-m", RUNNER]
    inputs: dict[str, Any] = {}
    if input_data is not None:
        inputs[INPUT] = dict(input_data)
        args += ["--input", "${{inputs.%s}}" % INPUT]
    args += ["--output", "${{outputs.%s}}" % OUTPUT]
    if model is not None:
        kind = "mlflow_model" if model.mlflow else "custom_model"
        inputs[MODEL_INPUT] = {"type": kind, "path": model.path, "mode": "ro_mount"}
        args += ["--model-path", "${{inputs.%s}}" % MODEL_INPUT, "--model-name", model.basename]
    code = None
    if code_configuration:
        folder, entry = posixpath.split(str(code_configuration.get("scoring_script") or ""))
        code = code_configuration["code"]
        args += ["--entry-script", entry, "--app-root", folder or "."]
    else:  # an MLflow model without a scoring script: scored from its flavour
        args.append("--mlflow-model")
    output: dict[str, Any] = {"type": "uri_folder"}
    if output_path:
        output["path"] = output_path
    body: dict[str, Any] = {
        "type": "command",
        "command": " ".join(a if a.startswith("${{") else shlex.quote(a) for a in args),
        "display_name": f"{endpoint}/{spec['name']}",
        "experiment_name": experiment_name or endpoint,
        "compute": spec["compute"],
        "resources": {"instance_count": int(instance_count)},
        "environment_variables": dict(settings.get("environment_variables") or {}),
        "inputs": inputs,
        "outputs": {OUTPUT: output},
    }
    if code is not None:
        body["code"] = code
    if spec.get("environment") is not None:
        body["environment"] = spec["environment"]
    elif model is not None and model.mlflow and blob_root is not None:
        declared = model_environment(model, blob_root)  # an MLflow model's own conda.yaml, as Azure builds it
        if declared is not None:
            body["environment"] = declared
    return body
