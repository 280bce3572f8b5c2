"""Turning a validated command job into the launcher's plan.

Everything that can be checked on the server is checked here, at submit time,
so bad input is a 4xx now rather than a failed job later.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from cible.core.environments import plan_environment, resolve_curated
from cible.core.errors import InvalidRequestError, InvalidSpecError, NotFoundError
from cible.core.models import CommandJob, JobInput, JobOutput
from cible.core.safepaths import components, inside, normalise, under
from cible.core.specs.azureml import refs
from cible.core.specs.azureml.expressions import check_command, format_literal, resolve_output_path
from cible.server.services.blobs import SHA256
from cible.workspace import DEFAULT_DATASTORE, WorkspacePaths, env_cache_root

SNAPSHOT_SCHEME = "cible://snapshots/"
LITERAL_INPUT_TYPES = {"number", "integer", "boolean", "string"}
MODEL_INPUT_TYPES = {"mlflow_model", "custom_model", "triton_model"}
PLAN_VERSION = 1
DEFAULT_ARTIFACTS = "artifacts"


def parse_snapshot_uri(uri: str, *, field: str = "path") -> tuple[str, str]:
    """cible://snapshots/<id>[/<subpath>] -> (id, subpath): the id a sha256 digest, the subpath
    normalised and inside the snapshot (both become file paths)."""
    rest = uri[len(SNAPSHOT_SCHEME):]
    snapshot, _, subpath = rest.partition("/")
    if not SHA256.fullmatch(snapshot):
        raise InvalidRequestError(f"{field}: '{uri}' names no snapshot; upload the files first and use the "
                                  f"{SNAPSHOT_SCHEME}<sha256> URI the upload returns", details={"field": field})
    return snapshot, normalise(subpath, field=field, within="its snapshot")


class PlanBuilder:
    def __init__(self, paths: WorkspacePaths, job_lookup, asset_lookup, strict_python: bool = False,  # noqa: ANN001
                 tracking: dict[str, str] | None = None, experiment_lookup=None,  # noqa: ANN001
                 api_url: str | None = None) -> None:
        self.paths = paths
        self.api_url = api_url  # where a job's own processes reach this server's API (batch runners)
        self.tracking = tracking  # {"uri", "token"} of the workspace's MLflow, when it has one
        # experiment_lookup(name) -> MLflow experiment id, or None: saves the launcher a lookup per job
        self.experiment_lookup = experiment_lookup or (lambda name: None)
        self.strict_python = strict_python  # a conda file's python=X.Y must be had exactly
        # job_lookup(name) -> the launch plan of an existing job, or None.
        self.job_lookup = job_lookup
        # asset_lookup(kind, name, version) -> the registered asset (raises NotFoundError).
        self.asset_lookup = asset_lookup

    def build(self, job: CommandJob, *, name: str, experiment_name: str, target: str) -> dict[str, Any]:
        for kind, keys in (("inputs", job.inputs or {}), ("outputs", job.outputs or {})):
            for key in keys:  # each becomes a folder of the run (inputs/<name>, outputs/<name>)
                if len(components(key, field=f"{kind}.{key}")) != 1:
                    raise InvalidRequestError(f"{kind}.{key}: an {kind[:-1]} name cannot hold '/'; rename it",
                                              details={"field": f"{kind}.{key}"})
        inputs = {k: self._input(k, v) for k, v in (job.inputs or {}).items()}
        outputs = {k: self._output(k, v, name) for k, v in (job.outputs or {}).items()}
        try:
            check_command(job.command, inputs=inputs.keys(), outputs=outputs.keys())
        except InvalidSpecError as exc:
            raise InvalidSpecError(f"command: {exc.message}", details={"field": "command"}) from None
        instance_count = job.resources.instance_count if job.resources else 1
        if target == "local" and instance_count > 1:
            raise InvalidRequestError(
                f"resources.instance_count: {instance_count} nodes asked on compute local; local is one node; "
                "multi-node jobs need a cluster", details={"field": "resources.instance_count"},
            )
        code = None
        if job.code:
            code = {"snapshot": self._snapshot("code", job.code)[0]}
        environment = self._environment(job)
        return {
            "version": PLAN_VERSION,
            "job_name": name,
            "experiment_name": experiment_name,
            "workspace": "local",
            "compute": target,
            "command": job.command,
            "code": code,
            "inputs": inputs,
            "outputs": outputs,
            "environment_variables": dict(job.environment_variables or {}),
            "timeout": job.limits.timeout if job.limits else None,
            "distribution": job.distribution.model_dump(mode="json") if job.distribution else None,
            "instance_count": instance_count,
            # What a Slurm compute maps to sbatch options (its size, `properties.slurm`: partition, qos…).
            "resources": ({"instance_type": job.resources.instance_type,
                           "properties": dict(job.resources.properties or {})} if job.resources else None),
            "blob_root": str(self.paths.blob_root),
            "environment": environment,
            "env_cache": str(env_cache_root()),
            "strict_python": self.strict_python,
            "tracking": self.tracking and {**self.tracking, "experiment_id": self.experiment_lookup(experiment_name)},
            # What the command may not see (launch/sandbox.py): the workspace, but for its run and the data.
            "sandbox": {"hide": str(self.paths.home), "readable": [str(self.paths.datastores)]},
            # Which submission of this name: part of its run token (server/tokens.py), not a secret.
            "token_salt": secrets.token_urlsafe(9),
        }

    def _environment(self, job: CommandJob) -> dict[str, Any]:
        """The launcher's environment block: host Python, a uv venv, or a container (which fails)."""
        env = job.environment
        registered = None
        if isinstance(env, str) and resolve_curated(env) is None:
            ref = refs.parse_asset_ref(env)
            if ref is not None and not ref.registry:
                try:
                    registered = self.asset_lookup("environments", ref.name, ref.version or ref.label or "latest")
                except NotFoundError as exc:
                    raise NotFoundError(f"environment: {exc.message}", details={"field": "environment"}) from None
        try:
            return plan_environment(env if isinstance(env, str) or env is None else env.model_dump(mode="json",
                                    exclude_none=True), registered=registered)
        except InvalidSpecError as exc:
            message = exc.message if exc.message.startswith("environment") else f"environment: {exc.message}"
            raise InvalidSpecError(message, details=exc.details) from None

    def _snapshot(self, field: str, uri: str) -> tuple[str, str]:
        if not uri.startswith(SNAPSHOT_SCHEME):
            raise InvalidRequestError(
                f"{field}: '{uri}' is a local path; upload it first (the cible CLI and SDK do this "
                "for you) and pass the cible://snapshots/... URI the upload returns",
                details={"field": field},
            )
        snapshot, subpath = parse_snapshot_uri(uri, field=field)
        if not under(self.paths.blob_root, snapshot[:2], snapshot).is_file():
            raise NotFoundError(f"{field}: snapshot {snapshot} was not uploaded to this workspace", details={"field": field})
        return snapshot, subpath

    def _input(self, name: str, spec: JobInput | str | int | float | bool) -> dict[str, Any]:
        field = f"inputs.{name}"
        if not isinstance(spec, JobInput):
            return {"kind": "literal", "value": format_literal(spec)}
        if spec.type in LITERAL_INPUT_TYPES:
            return {"kind": "literal", "value": format_literal(spec.default if spec.path is None else spec.path)}
        if not spec.path:
            raise InvalidSpecError(f"{field}.path: a {spec.type} input needs a path", details={"field": field})
        uri = spec.path
        entry: dict[str, Any] = {"kind": "data", "type": spec.type, "mode": spec.mode or "ro_mount", "uri": uri}
        if uri.startswith(SNAPSHOT_SCHEME):
            snapshot, subpath = self._snapshot(field, uri)
            entry["source"] = {"snapshot": snapshot, "subpath": subpath}
            return entry
        kind = refs.classify_path(uri)
        if kind == "asset":
            uri = self._asset_path(field, spec.type, uri)
            entry["asset"], entry["uri"] = spec.path, uri
            kind = refs.classify_path(uri)
        if kind == "http":
            entry["source"] = {"url": uri}
        elif kind == "wasbs":
            entry["source"] = {"url": refs.wasbs_to_https(uri)}
        elif kind == "datastore":
            datastore, rel = refs.parse_datastore_uri(uri, field=f"{field}.path")
            entry["source"] = {"local_path": str(inside(self._datastore_root(field, datastore), rel,
                                                        field=f"{field}.path"))}
        elif kind == "job_output":
            job_name, output, rel = refs.parse_job_output_uri(uri, field=f"{field}.path")
            entry["source"] = {"local_path": str(inside(self._job_output_path(field, job_name, output), rel,
                                                        field=f"{field}.path", within="the job's output"))}
        elif kind == "local":
            self._snapshot(field, uri)  # raises: local paths must be uploaded first
        else:
            raise InvalidRequestError(
                f"{field}.path: '{uri}' ({kind}) inputs are not supported yet; use a local path, "
                "an http(s) URL, a public wasbs:// blob or an azureml://datastores/... path",
                details={"field": field},
            )
        return entry

    def _asset_path(self, field: str, input_type: str, uri: str) -> str:
        """`azureml:<name>:<version>` or `@latest` -> where that data or model lives."""
        ref = refs.parse_asset_ref(uri)
        if ref is None or ref.registry:
            raise InvalidRequestError(f"{field}.path: '{uri}' is not a workspace asset reference", details={"field": field})
        kind = "models" if input_type in MODEL_INPUT_TYPES else "data"
        version = ref.version or ref.label or "latest"
        try:
            return self.asset_lookup(kind, ref.name, version)["path"]
        except NotFoundError as exc:
            raise NotFoundError(f"{field}.path: {exc.message}", details={"field": field}) from None

    def _output(self, name: str, spec: JobOutput | None, job_name: str) -> dict[str, Any]:
        field = f"outputs.{name}"
        if name == DEFAULT_ARTIFACTS and (spec is None or spec.path is None):
            # Azure's pipelines: an output named `artifacts` with no path is the job's default artifacts
            # folder (where ./outputs and ./logs land); a later step reads it as an input.
            return {"type": "uri_folder", "mode": "rw_mount", "uri": f"azureml://jobs/{job_name}/outputs/{name}",
                    "local_path": str(self.paths.run_dir(job_name) / DEFAULT_ARTIFACTS)}
        spec = spec or JobOutput()
        path = spec.path or "azureml://datastores/${{default_datastore}}/paths/azureml/${{name}}/${{output_name}}/"
        uri = resolve_output_path(path, job_name=job_name, output_name=name, default_datastore=DEFAULT_DATASTORE)
        if refs.classify_path(uri) != "datastore":
            raise InvalidRequestError(
                f"{field}.path: outputs go to a datastore path (azureml://datastores/<name>/paths/<path>); got '{uri}'",
                details={"field": field},
            )
        datastore, rel = refs.parse_datastore_uri(uri, field=f"{field}.path")
        local = inside(self._datastore_root(field, datastore), rel, field=f"{field}.path")
        return {"type": spec.type, "mode": spec.mode or "rw_mount", "uri": uri, "local_path": str(local)}

    def _datastore_root(self, field: str, datastore: str) -> Path:
        if datastore != DEFAULT_DATASTORE:
            raise NotFoundError(
                f"{field}: datastore '{datastore}' does not exist in this workspace; the workspace has "
                f"'{DEFAULT_DATASTORE}'",
                details={"field": field},
            )
        return self.paths.datastore(datastore)

    def _job_output_path(self, field: str, job_name: str, output: str) -> Path:
        plan = self.job_lookup(job_name)
        if plan is None:
            raise NotFoundError(f"{field}: job '{job_name}' does not exist", details={"field": field})
        if output not in plan.get("outputs", {}):
            known = ", ".join(plan.get("outputs", {})) or "none"
            raise NotFoundError(
                f"{field}: job '{job_name}' has no output '{output}' (its outputs: {known})", details={"field": field}
            )
        return Path(plan["outputs"][output]["local_path"])
