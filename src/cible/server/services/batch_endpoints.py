"""Batch endpoints and deployments: create, update, show, list, delete, invoke and their jobs.

Nothing runs until an invocation, so an endpoint or a deployment is Succeeded as soon as it is
stored. A deployment's create is checked as its first invocation's job would be (compute, model,
environment, code) before anything is stored, so a deployment that could never run is a 4xx now.

`invoke` makes one command job (services/batch_jobs.py) marked as the deployment's
(`batch_of`, `plan["batch"]`); the job reconciler runs it like any other. As on Azure, an
endpoint's first deployment does not become its default by itself: `--set-default` on a
deployment's create, or `update --set defaults.deployment_name=D` on the endpoint, makes it so;
the default deployment cannot be deleted until another is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core import naming
from cible.core.clock import Clock
from cible.core.errors import CibleError, ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.endpoints import ProvisioningState
from cible.core.models.batch_endpoints import BatchSettings, model_type_problem
from cible.core.models.jobs import MAX_NODES
from cible.core.names import job_name
from cible.core.specs.azureml import refs
from cible.core.specs.azureml.loader import load_spec_dict
from cible.core.specs.azureml.overrides import parse_assignment, set_path
from cible.server.services.batch_jobs import (
    DEPLOYMENT_FIELDS,
    INVOKE_FIELDS,
    batch_block,
    batch_job,
)
from cible.server.services.jobs import JobService, Lineage
from cible.server.services.paging import page
from cible.server.services.replica_jobs import as_deployment_error, model_source
from cible.server.services.unreadable import fetch_items
from cible.server.store.db import Store
from cible.server.store.rows import BatchDeploymentRow, BatchEndpointRow, JobRow

READ_ONLY = {"id", "scoring_uri", "provisioning_state", "schema_"}  # set by the server, never stored as the spec
VALIDATION_NAME = "batch-deployment-check"
INPUT_TYPES = ("uri_folder", "uri_file")
SUCCEEDED = ProvisioningState.SUCCEEDED.value
DEFAULT_TOP = 100


def invoke_path(endpoint: str) -> str:
    """Where an endpoint is invoked (its scoring_uri is the server's URL + this)."""
    return f"/api/v1/batch-endpoints/{endpoint}:invoke"


class BatchEndpointService:
    def __init__(self, store: Store, clock: Clock, jobs: JobService, asset_lookup, *,  # noqa: ANN001
                 blob_root: Path, url: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.jobs = jobs
        self.asset_lookup = asset_lookup  # (kind, name, version) -> the registered asset
        self.blob_root = blob_root
        self.url = url  # the server's, for scoring_uri (None in-process)

    # ---- endpoints ----------------------------------------------------------
    def create_endpoint(self, name: str, body: dict[str, Any], *, update: bool = False,
                        user: str | None = None) -> dict[str, Any]:
        naming.ENDPOINT.check(name)
        raw = _spec_of(body, "endpoint")
        spec = self._endpoint_spec(name, raw)

        def write(session: Session) -> None:
            row = session.get(BatchEndpointRow, name)
            now = self.clock.now()
            if row is not None and not update:
                raise ConflictError(f"batch endpoint '{name}' already exists; update it with "
                                    f"`cible batch-endpoint update -n {name} ...`", details={"field": "name"})
            # A spec that does not mention a default keeps the endpoint's (as an online endpoint's traffic is kept).
            stored = spec if row is None or "defaults" in raw else {**spec, "defaults": dict(row.spec.get("defaults") or {})}
            self._check_default(session, name, stored)
            if row is None:
                session.add(BatchEndpointRow(name=name, spec=stored, provisioning_state=SUCCEEDED, created_at=now,
                                             updated_at=now, created_by=user))
            else:
                row.spec, row.updated_at = stored, now

        self.store.transact(write)
        return self.get_endpoint(name)

    def update_endpoint(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """`batch-endpoint update`: a whole new spec (`-f`), or `set` assignments on the stored one
        (`--set defaults.deployment_name=D`)."""
        if isinstance(body.get("spec"), dict):
            spec = body["spec"]
        else:
            spec = _assigned(self._public_spec(self.get_endpoint(name), "endpoint"), body.get("set"))
        return self.create_endpoint(name, {"spec": spec}, update=True)

    def delete_endpoint(self, name: str) -> dict[str, Any]:
        """Gone at once with its deployments (nothing of theirs runs between invocations); their jobs stay."""
        def delete(session: Session) -> list[str]:
            row = self._endpoint_row(session, name)
            deployments = list(session.scalars(select(BatchDeploymentRow).where(BatchDeploymentRow.endpoint == name)))
            for deployment in deployments:
                session.delete(deployment)
            session.delete(row)
            return [d.name for d in deployments]

        gone = self.store.transact(delete)
        return {"name": name, "deleted": True, "deployments": gone}

    def get_endpoint(self, name: str) -> dict[str, Any]:
        with self.store.session() as session:
            return self._endpoint_resource(session, self._endpoint_row(session, name))

    def list_endpoints(self) -> dict[str, Any]:
        with self.store.session() as session:
            rows = session.scalars(select(BatchEndpointRow).order_by(BatchEndpointRow.name)).all()
            items = [self._endpoint_resource(session, row) for row in rows]
        return {"value": items, "count": len(items)}

    # ---- deployments --------------------------------------------------------
    def create_deployment(self, endpoint: str, name: str, body: dict[str, Any], *, update: bool = False,
                          user: str | None = None) -> dict[str, Any]:
        naming.DEPLOYMENT.check(name)
        spec = self._deployment_spec(endpoint, name, _spec_of(body, "deployment"))
        with self.store.session() as session:
            self._endpoint_row(session, endpoint)  # a 404 naming the endpoint before any other check
        self._check_runnable(endpoint, spec)
        set_default = bool(body.get("set_default"))

        def write(session: Session) -> None:
            ep = self._endpoint_row(session, endpoint)
            row = session.get(BatchDeploymentRow, (endpoint, name))
            now = self.clock.now()
            if row is None:
                session.add(BatchDeploymentRow(endpoint=endpoint, name=name, spec=spec, provisioning_state=SUCCEEDED,
                                               created_at=now, updated_at=now, created_by=user))
            elif not update:
                raise ConflictError(f"deployment '{name}' of batch endpoint '{endpoint}' already exists; update it "
                                    f"with `cible batch-deployment update -n {name} -e {endpoint} ...`",
                                    details={"field": "name"})
            else:
                row.spec, row.updated_at = spec, now
            if set_default:
                ep.spec = {**ep.spec, "defaults": {**(ep.spec.get("defaults") or {}), "deployment_name": name}}
                ep.updated_at = now

        self.store.transact(write)
        return self.get_deployment(endpoint, name)

    def update_deployment(self, endpoint: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """`batch-deployment update`: a whole new spec (`-f`), or `set` assignments on the stored one."""
        if isinstance(body.get("spec"), dict):
            spec = body["spec"]
        else:
            spec = _assigned(self._public_spec(self.get_deployment(endpoint, name), "deployment"),
                             _legacy_settings_under_settings(body.get("set")))
        return self.create_deployment(endpoint, name, {"spec": spec, "set_default": body.get("set_default")},
                                      update=True)

    def delete_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        def delete(session: Session) -> None:
            ep = self._endpoint_row(session, endpoint)
            row = self._deployment_row(session, endpoint, name)
            if _default_of(ep.spec) == name:  # as Azure: the endpoint would be left pointing at nothing
                raise ConflictError(
                    f"deployment '{name}' is the default of batch endpoint '{endpoint}'; make another deployment the "
                    f"default first (`cible batch-endpoint update -n {endpoint} --set defaults.deployment_name=OTHER`), "
                    f"or delete the endpoint", details={"field": "defaults.deployment_name"})
            session.delete(row)

        self.store.transact(delete)
        return {"name": name, "endpoint_name": endpoint, "deleted": True}

    def get_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        with self.store.session() as session:
            ep = self._endpoint_row(session, endpoint)
            return _deployment_resource(self._deployment_row(session, endpoint, name), _default_of(ep.spec))

    def list_deployments(self, endpoint: str) -> dict[str, Any]:
        with self.store.session() as session:
            ep = self._endpoint_row(session, endpoint)
            rows = session.scalars(select(BatchDeploymentRow).where(BatchDeploymentRow.endpoint == endpoint)
                                   .order_by(BatchDeploymentRow.name)).all()
            items = [_deployment_resource(row, _default_of(ep.spec)) for row in rows]
        return {"value": items, "count": len(items)}

    # ---- invocations --------------------------------------------------------
    def invoke(self, endpoint: str, body: dict[str, Any], *, user: str | None = None) -> dict[str, Any]:
        """A job that scores the input with the deployment named (else the endpoint's default): the job,
        as `job show` gives it."""
        if not isinstance(body, dict):
            raise InvalidRequestError("the request body is {\"input\": ..., \"deployment_name\": ...}",
                                      details={"field": "input"})
        with self.store.session() as session:
            ep = self._endpoint_row(session, endpoint)
            deployment = body.get("deployment_name") or _default_of(ep.spec)
            if not deployment:
                raise InvalidRequestError(
                    f"deployment_name: batch endpoint '{endpoint}' has no default deployment; name one with "
                    f"--deployment-name, or make one the default (`cible batch-endpoint update -n {endpoint} --set "
                    "defaults.deployment_name=D`)", details={"field": "deployment_name"})
            spec = dict(self._deployment_row(session, endpoint, str(deployment)).spec)
        if spec.get("type") == "pipeline":
            raise InvalidRequestError(
                f"deployment_name: deployment '{deployment}' is a pipeline deployment (type: pipeline); invoking one "
                "needs pipelines run as batch jobs, which cible does not support yet; invoke a model deployment",
                details={"field": "deployment_name"})
        name = _job_name(body.get("job_name"))
        input_data = self._input(body)
        settings = _settings_with(spec.get("settings") or {}, body)
        instance_count = _instance_count(body.get("instance_count"),
                                         (spec.get("resources") or {}).get("instance_count", 1))
        experiment = body.get("experiment_name")
        if experiment is not None and not isinstance(experiment, str):
            raise InvalidRequestError("experiment_name: a name", details={"field": "experiment_name"})
        model = self._model(spec)
        job = batch_job({**spec, "settings": settings}, endpoint=endpoint, model=model, instance_count=instance_count,
                        input_data=input_data, output_path=_optional_text(body, "output_path"),
                        experiment_name=experiment, blob_root=self.blob_root)
        block = batch_block(endpoint, str(deployment), settings, mlflow=not spec.get("code_configuration"))
        with self.store.session() as session:
            if session.get(JobRow, name) is not None:
                raise ConflictError(f"job_name: job '{name}' already exists; give another --job-name (or none)",
                                    details={"field": "job_name"})
        try:
            return self.jobs.create_child(name, job, Lineage(batch_of=f"{endpoint}/{deployment}", batch=block),
                                          user=user)
        except CibleError as exc:
            raise as_deployment_error(exc, INVOKE_FIELDS + DEPLOYMENT_FIELDS) from None

    def list_jobs(self, endpoint: str, deployment: str | None = None, *, skip: int = 0,
                  top: int = DEFAULT_TOP) -> dict[str, Any]:
        """The jobs invocations made, newest first (a page): the endpoint's, or one deployment's."""
        with self.store.session() as session:
            self._endpoint_row(session, endpoint)
            if deployment is not None:
                self._deployment_row(session, endpoint, deployment)
                where = JobRow.batch_of == f"{endpoint}/{deployment}"
            else:
                where = JobRow.batch_of.startswith(f"{endpoint}/", autoescape=True)
            query = select(JobRow).where(where).order_by(JobRow.created_at.desc(), JobRow.name)
            items, total = fetch_items(session, query, skip, top,
                                       lambda row: self.jobs.views.resource(session, row, history=False))
            return page(items, total, skip)

    # ---- checks -------------------------------------------------------------
    def _endpoint_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {**spec, "name": spec.get("name") or name}
        if spec["name"] != name:
            raise InvalidRequestError(f"name: the spec names endpoint '{spec['name']}', the request '{name}'; they "
                                      "must be the same", details={"field": "name"})
        entity = load_spec_dict(spec, "batch-endpoint", source="request body").entity
        return entity.model_dump(mode="json", exclude_none=True, exclude=READ_ONLY)

    def _deployment_spec(self, endpoint: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {**spec, "name": spec.get("name") or name, "endpoint_name": spec.get("endpoint_name") or endpoint}
        for field, want in (("name", name), ("endpoint_name", endpoint)):
            if spec[field] != want:
                raise InvalidRequestError(f"{field}: the spec says '{spec[field]}', the request '{want}'; they must "
                                          "be the same", details={"field": field})
        for field in ("environment",):
            value = spec.get(field)
            if isinstance(value, str) and (value.lower().startswith("file:") or value.lower().endswith((".yml", ".yaml"))):
                raise InvalidRequestError(f"{field}: a YAML file reference names a file on the client; send the "
                                          "environment itself (the CLI and SDK do)", details={"field": field})
        entity = load_spec_dict(spec, "batch-deployment", source="request body").entity
        return entity.model_dump(mode="json", exclude_none=True, exclude=READ_ONLY)

    def _check_default(self, session: Session, endpoint: str, spec: dict[str, Any]) -> None:
        default = _default_of(spec)
        if default and session.get(BatchDeploymentRow, (endpoint, default)) is None:
            names = session.scalars(select(BatchDeploymentRow.name).where(BatchDeploymentRow.endpoint == endpoint)).all()
            raise InvalidRequestError(f"defaults.deployment_name: batch endpoint '{endpoint}' has no deployment "
                                      f"'{default}' (its deployments: {', '.join(names) or 'none'}); create it first "
                                      "(`cible batch-deployment create --set-default` makes it the default)",
                                      details={"field": "defaults.deployment_name"})

    def _model(self, spec: dict[str, Any]):  # noqa: ANN202 (a ModelSource or None)
        return model_source(spec, self.asset_lookup)

    def _check_runnable(self, endpoint: str, spec: dict[str, Any]) -> None:
        """Every check an invocation's submit makes that needs no input, now."""
        if spec.get("type") == "pipeline":
            return  # stored: invoking one is refused until pipelines run as batch jobs
        model = self._model(spec)
        if model is not None:
            problem = model_type_problem(bool(spec.get("code_configuration")), spec.get("environment") is not None,
                                         "mlflow_model" if model.mlflow else "custom_model")
            if problem:
                field = "environment" if spec.get("code_configuration") else "code_configuration"
                raise InvalidRequestError(f"{field}: {problem}", details={"field": field})
        body = batch_job(spec, endpoint=endpoint, model=model,
                         instance_count=(spec.get("resources") or {}).get("instance_count", 1), input_data=None,
                         blob_root=self.blob_root)
        try:
            self.jobs.validate(VALIDATION_NAME, body)
        except CibleError as exc:
            raise as_deployment_error(exc, DEPLOYMENT_FIELDS) from None

    def _input(self, body: dict[str, Any]) -> dict[str, Any]:
        """The invocation's input as the job's `input_data`: a type and a path the job can read."""
        path = body.get("input")
        if not isinstance(path, str) or not path.strip():
            raise InvalidRequestError("input: give the data to score: a folder or file (the CLI uploads it), "
                                      "azureml:<data>@latest, azureml:<data>:<version> or "
                                      "azureml://datastores/<datastore>/paths/<path>", details={"field": "input"})
        input_type = body.get("input_type")
        if input_type is not None and input_type not in INPUT_TYPES:
            raise InvalidRequestError(f"input_type: '{input_type}' is not one of {', '.join(INPUT_TYPES)}",
                                      details={"field": "input_type"})
        try:
            kind = refs.classify_path(path)
        except CibleError as exc:
            raise InvalidRequestError(f"input: {exc.message}", details={"field": "input"}) from None
        if kind == "local":
            raise InvalidRequestError(f"input: '{path}' is a path on the client; the CLI and SDK upload it (send "
                                      "the cible://snapshots/ URI they get)", details={"field": "input"})
        if kind == "asset" and input_type is None:  # a registered data asset says what it is
            input_type = self._asset_type(path)
        return {"type": input_type or "uri_folder", "path": path}

    def _asset_type(self, path: str) -> str:
        ref = refs.parse_asset_ref(path)
        if ref is None or ref.registry:
            raise InvalidRequestError(f"input: '{path}' is not a data asset of this workspace "
                                      "(azureml:<name>:<version> or azureml:<name>@latest)", details={"field": "input"})
        try:
            asset = self.asset_lookup("data", ref.name, ref.version or ref.label or "latest")
        except NotFoundError as exc:
            raise NotFoundError(f"input: {exc.message}", details={"field": "input"}) from None
        kind = str(asset.get("type") or "uri_folder").lower()
        if kind not in INPUT_TYPES:
            raise InvalidRequestError(f"input: data asset '{ref.name}' is {kind}; a batch deployment scores a "
                                      "uri_folder (its files) or a uri_file", details={"field": "input"})
        return kind

    # ---- rows and resources -------------------------------------------------
    def _endpoint_row(self, session: Session, name: str) -> BatchEndpointRow:
        row = session.get(BatchEndpointRow, name)
        if row is None:
            names = session.scalars(select(BatchEndpointRow.name).order_by(BatchEndpointRow.name)).all()
            raise NotFoundError(f"batch endpoint '{name}' does not exist (there are: {', '.join(names) or 'none'})",
                                details={"name": name})
        return row

    def _deployment_row(self, session: Session, endpoint: str, name: str) -> BatchDeploymentRow:
        row = session.get(BatchDeploymentRow, (endpoint, name))
        if row is None:
            names = session.scalars(select(BatchDeploymentRow.name).where(BatchDeploymentRow.endpoint == endpoint)
                                    .order_by(BatchDeploymentRow.name)).all()
            raise NotFoundError(f"deployment '{name}' of batch endpoint '{endpoint}' does not exist (its deployments: "
                                f"{', '.join(names) or 'none'})", details={"name": name})
        return row

    def _endpoint_resource(self, session: Session, row: BatchEndpointRow) -> dict[str, Any]:
        deployments = session.scalars(select(BatchDeploymentRow.name).where(BatchDeploymentRow.endpoint == row.name)
                                      .order_by(BatchDeploymentRow.name)).all()
        return {**row.spec, "name": row.name, "auth_mode": row.spec.get("auth_mode", "aad_token"),
                "defaults": {"deployment_name": _default_of(row.spec)}, "provisioning_state": row.provisioning_state,
                "scoring_uri": f"{self.url or ''}{invoke_path(row.name)}", "deployments": list(deployments),
                "created_at": row.created_at, "created_by": row.created_by}

    @staticmethod
    def _public_spec(resource: dict[str, Any], kind: str) -> dict[str, Any]:
        """A resource as `show` gives it, less what the server adds: the spec `--set` applies to."""
        added = {"endpoint": ("scoring_uri", "provisioning_state", "deployments", "created_at", "created_by"),
                 "deployment": ("provisioning_state", "is_default", "created_at", "created_by")}[kind]
        spec = {k: v for k, v in resource.items() if k not in added}
        if kind == "endpoint" and not (spec.get("defaults") or {}).get("deployment_name"):
            spec.pop("defaults", None)
        return spec


def _deployment_resource(row: BatchDeploymentRow, default: str | None) -> dict[str, Any]:
    return {**row.spec, "name": row.name, "endpoint_name": row.endpoint, "provisioning_state": row.provisioning_state,
            "is_default": row.name == default, "created_at": row.created_at, "created_by": row.created_by}


def _spec_of(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
        raise InvalidRequestError(f"the request body is {{\"spec\": {{...the {what}...}}}}", details={"field": "spec"})
    return body["spec"]


def _assigned(spec: dict[str, Any], assignments: Any) -> dict[str, Any]:
    if not isinstance(assignments, list) or not assignments or not all(isinstance(a, str) for a in assignments):
        raise InvalidRequestError("set: a list of assignments such as [\"defaults.deployment_name=blue\"] (or a "
                                  "whole spec)", details={"field": "set"})
    for assignment in assignments:
        parts, value = parse_assignment(assignment)
        set_path(spec, parts, value, assignment)
    return spec


def _default_of(spec: dict[str, Any]) -> str | None:
    return (spec.get("defaults") or {}).get("deployment_name") or None


def _legacy_settings_under_settings(assignments: Any) -> Any:
    """`--set mini_batch_size=20`, as a legacy deployment (settings at the root) is updated on Azure: the stored
    spec keeps its settings under `settings`, so a root setting is assigned there."""
    if not isinstance(assignments, list):
        return assignments
    moved = []
    for assignment in assignments:
        key = assignment.split("=", 1)[0].split(".", 1)[0].strip() if isinstance(assignment, str) else ""
        legacy = key in BatchSettings.model_fields and key != "schema_"
        moved.append(f"settings.{assignment.strip()}" if legacy else assignment)
    return moved


def _settings_with(settings: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The deployment's settings with an invocation's overrides (`--mini-batch-size`, `--set
    output_file_name=x.csv`), checked by the same rules."""
    merged = {**settings, "retry_settings": dict(settings.get("retry_settings") or {})}
    if body.get("mini_batch_size") is not None:
        merged["mini_batch_size"] = body["mini_batch_size"]
    assignments = body.get("set") or []
    if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
        raise InvalidRequestError("set: a list of assignments such as [\"output_file_name=scores.csv\"]",
                                  details={"field": "set"})
    for assignment in assignments:
        parts, value = parse_assignment(assignment)
        if parts[0] == "settings":  # `--set settings.x=…` and `--set x=…` say the same
            parts = parts[1:]
        if not parts or parts[0] not in BatchSettings.model_fields or parts[0] == "schema_":
            raise InvalidRequestError(f"set: '{assignment}' is not a setting of a batch deployment; an invocation can "
                                      f"set {', '.join(k for k in BatchSettings.model_fields if k != 'schema_')}",
                                      details={"field": "set"})
        set_path(merged, parts, value, assignment)
    try:
        return BatchSettings.model_validate(merged).model_dump(mode="json", exclude={"schema_"})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise InvalidRequestError(f"{field}: {error['msg']} (got {error.get('input')!r})",
                                  details={"field": field}) from None


def _instance_count(given: Any, default: Any) -> int:
    value = default if given is None else given
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NODES:
        raise InvalidRequestError(f"instance_count: {value!r} is not a number of nodes (1 to {MAX_NODES})",
                                  details={"field": "instance_count"})
    return value


def _job_name(given: Any) -> str:
    if given is None:
        return job_name()
    if not isinstance(given, str):
        raise InvalidRequestError("job_name: a job name", details={"field": "job_name"})
    naming.JOB.check(given, field="job_name")
    return given


def _optional_text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{field}: a text", details={"field": field})
    return value or None
