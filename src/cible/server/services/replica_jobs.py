"""A deployment's replica as a job: the command job that runs cible's scoring server for it.

A replica is an ordinary command job (type `replica`, not listed among jobs), so it gets what
every job gets: its environment materialised on its node (with the scoring server's packages:
core/environments/serving.py), its code snapshot, its model staged as an input, the node's size
limits, and its log shipped to the workspace (`get-logs`). Its compute:

- a workspace endpoint: `serverless` nodes of the deployment's `instance_type`, one per replica
  (Azure's managed deployments: one VM per instance), or the cluster the endpoint names
  (`compute: azureml:<cluster>`, as Kubernetes endpoints do);
- a local endpoint (`--local`): `local`, with the code folder and the model read in place from
  the user's disk (nothing uploaded), so the server reloads the script when it is edited.

The port is chosen by the server, so it knows where the replica listens without asking it:
http://<node address>:<port>.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cible.core.environments.plan import HOST_IMAGE_EXAMPLE
from cible.core.errors import CibleError, InvalidRequestError
from cible.core.specs.azureml import refs
from cible.runfiles import blob_path, read_manifest
from cible.server.services.job_plans import SNAPSHOT_SCHEME, parse_snapshot_uri

STATE_FILE = ".cible-serving.json"
MLFLOW_CONDA_FILE = "conda.yaml"  # what mlflow's save_model writes beside MLmodel
MODEL_INPUT = "model"
# Job fields in a submit's errors -> the deployment's fields they come from.
_FIELDS = (("resources.instance_type", "instance_type"), ("resources.instance_count", "instance_count"),
           (f"inputs.{MODEL_INPUT}.path", "model"), (f"inputs.{MODEL_INPUT}", "model"),
           ("code", "code_configuration.code"))


@dataclass(frozen=True)
class ModelSource:
    """Where a deployment's model comes from and the name of its folder under AZUREML_MODEL_DIR."""

    path: str  # an azureml: reference, a cible://snapshots/ URI, or (local) an absolute path
    basename: str
    mlflow: bool
    stored: str = ""  # where its files are: a cible://snapshots/ URI, or (local) an absolute path


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on this machine now (its replica binds it shortly; a clash fails that replica alone)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def model_source(spec: dict[str, Any], asset_lookup) -> ModelSource | None:  # noqa: ANN001
    """The deployment's model: inline ({path, type}) or a registered `azureml:name:version`."""
    model = spec.get("model")
    if model is None:
        return None
    if isinstance(model, str):
        ref = refs.parse_asset_ref(model)
        if ref is None or ref.registry:
            raise InvalidRequestError(f"model: '{model}' is not a model of this workspace (azureml:<name>:<version>)",
                                      details={"field": "model"})
        try:
            asset = asset_lookup("models", ref.name, ref.version or ref.label or "latest")
        except CibleError as exc:
            raise type(exc)(f"model: {exc.message}", details={"field": "model"}) from None
        return ModelSource(path=model, basename=_basename(asset["path"]), stored=str(asset["path"]),
                           mlflow=str(asset.get("type", "")).lower() == "mlflow_model")
    path = str(model.get("path") or "")
    if not path:
        raise InvalidRequestError("model.path: an inline model needs a path", details={"field": "model.path"})
    return ModelSource(path=path, basename=_basename(path), stored=path,
                       mlflow=str(model.get("type", "")).lower() == "mlflow_model")


def _basename(path: str) -> str:
    """The model's folder name under AZUREML_MODEL_DIR: its path's last part, if that is a plain name."""
    name = posixpath.basename(posixpath.normpath(path.rstrip("/")))
    return name if name not in ("", ".", "..") and "\x00" not in name else "model"


def model_environment(model: ModelSource, blob_root: Path) -> dict[str, Any] | None:
    """The environment an MLflow model declares (its conda.yaml), for a no-code deployment that names none:
    Azure builds that one from the model's own files. None when the model has no readable conda.yaml."""
    text = _model_file(model, MLFLOW_CONDA_FILE, blob_root)
    try:
        conda = yaml.safe_load(text) if text is not None else None
    except yaml.YAMLError:
        return None
    return {"image": HOST_IMAGE_EXAMPLE, "conda_file": conda} if isinstance(conda, dict) else None


def _model_file(model: ModelSource, rel: str, blob_root: Path) -> str | None:
    stored = model.stored or model.path
    try:
        if stored.startswith(SNAPSHOT_SCHEME):
            snapshot, subpath = parse_snapshot_uri(stored)
            entry = read_manifest(blob_root, snapshot)["files"].get(f"{subpath}/{rel}" if subpath else rel)
            return None if entry is None else blob_path(blob_root, entry["sha256"]).read_text(encoding="utf-8")
        path = Path(stored) / rel
        return path.read_text(encoding="utf-8") if path.is_absolute() and path.is_file() else None
    except (OSError, ValueError, KeyError, CibleError):  # unreadable: the deployment runs on the host Python
        return None


def replica_job(spec: dict[str, Any], *, endpoint: str, endpoint_compute: str | None, local: bool, port: int,
                model: ModelSource | None, reload: bool = False, blob_root: Path | None = None) -> dict[str, Any]:
    """The command job body of one replica of deployment `spec`."""
    code_configuration = spec.get("code_configuration") or {}
    args = ["python", "-m", "cible.serving", "--port", str(port), "--state-file", STATE_FILE]
    variables = spec.get("environment_variables") or {}
    if "SCORING_TIMEOUT_MS" not in variables:  # run() interrupted when the gateway gives up (408), not an hour later
        timeout_ms = (spec.get("request_settings") or {}).get("request_timeout_ms") or 5000
        args += ["--request-timeout-ms", str(timeout_ms)]
    inputs: dict[str, Any] = {}
    if model is not None:
        if local:
            args += ["--model-path", model.path]
        else:
            kind = "mlflow_model" if model.mlflow else "custom_model"
            inputs[MODEL_INPUT] = {"type": kind, "path": model.path, "mode": "ro_mount"}
            args += ["--model-path", "${{inputs.%s}}" % MODEL_INPUT]
        args += ["--model-name", model.basename]
    code = None
    if code_configuration:
        script = str(code_configuration.get("scoring_script") or "")
        folder, entry = posixpath.split(script)
        if local:
            app_root = str(Path(code_configuration["code"]) / folder)
        else:
            code, app_root = code_configuration["code"], folder or "."
        args += ["--entry-script", entry, "--app-root", app_root]
        if reload:
            args.append("--reload")
    else:  # an MLflow model without a scoring script: served from its flavour
        args.append("--mlflow-model")
    body: dict[str, Any] = {
        "type": "command",
        "command": " ".join(a if a.startswith("${{") else shlex.quote(a) for a in args),
        "display_name": f"{endpoint}/{spec['name']} replica",
        "experiment_name": f"online-endpoint-{endpoint}",
        "environment_variables": dict(spec.get("environment_variables") or {}),
        "inputs": inputs,
    }
    if code is not None:
        body["code"] = code
    if spec.get("environment") is not None:
        body["environment"] = spec["environment"]
    elif model is not None and model.mlflow and not code_configuration and blob_root is not None:
        declared = model_environment(model, blob_root)  # no-code MLflow: the model's own environment
        if declared is not None:
            body["environment"] = declared
    if local:
        body["compute"] = "local"
    elif endpoint_compute:
        body["compute"] = endpoint_compute
        if spec.get("type") == "kubernetes" and spec.get("instance_type"):  # its pods' InstanceType
            body["resources"] = {"instance_type": spec["instance_type"]}
    else:
        body["compute"] = "serverless"
        if spec.get("instance_type"):
            body["resources"] = {"instance_type": spec["instance_type"]}
    return body


def as_deployment_error(exc: CibleError, fields: tuple[tuple[str, str], ...] = _FIELDS) -> CibleError:
    """A job's submit error said in the fields of the deployment (or invocation) it was made from: a replica's
    (services/deployments.py) or a batch invocation's (services/batch_jobs.py)."""
    message = exc.message
    for job_field, own_field in fields:  # a field named in the text: `inputs.model.path: ...`, `code.`
        message = re.sub(rf"(?<![\w.]){re.escape(job_field)}(?=[:.])", own_field, message)
    field = (exc.details or {}).get("field")
    for job_field, own_field in fields:
        if isinstance(field, str) and field.startswith(job_field):
            field = own_field
            break
    return type(exc)(message, details={**(exc.details or {}), **({"field": field} if field else {})})
