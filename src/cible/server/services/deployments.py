"""Online deployments: create, update, show, list, delete, and their replicas' logs.

The API records what the user wants (the spec, and its `generation`, bumped when what a replica
runs changes); the endpoint reconciler makes it so: it starts and stops replica jobs, rolls them
one at a time to a new generation, probes them and routes traffic to the ready ones. A create is
checked as a replica's submit would be (compute, size, model, environment, code) before anything
is stored, so a deployment that could never start is a 4xx now, not a failed replica later.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core import naming
from cible.core.clock import Clock
from cible.core.errors import CibleError, ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.endpoints import ProvisioningState
from cible.core.models.endpoint_records import DeploymentStatus
from cible.core.specs.azureml.loader import load_spec_dict
from cible.core.specs.azureml.overrides import parse_assignment, set_path
from cible.server.services.endpoints import EndpointService
from cible.server.services.jobs import JobService
from cible.server.services.kubernetes import check_deployment
from cible.server.services.lifecycle import move_endpoint
from cible.server.services.replica_jobs import as_deployment_error, model_source, replica_job
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, OnlineDeploymentRow, OnlineEndpointRow
from cible.workspace import WorkspacePaths

DEFAULT_LOG_LINES = 5000  # the SDK's default for get_logs
# Spec fields whose change does not need new replicas: the reconciler applies them in place.
IN_PLACE = ("description", "tags", "instance_count", "scale_settings", "request_settings", "liveness_probe",
            "readiness_probe", "app_insights_enabled", "data_collector", "egress_public_network_access")
VALIDATION_NAME = "replica-check"


class DeploymentService:
    def __init__(self, store: Store, clock: Clock, jobs: JobService, endpoints: EndpointService,
                 paths: WorkspacePaths, asset_lookup, on_change: Callable[[], None]) -> None:  # noqa: ANN001
        self.store = store
        self.clock = clock
        self.jobs = jobs
        self.endpoints = endpoints
        self.paths = paths
        self.asset_lookup = asset_lookup  # (kind, name, version) -> the registered asset
        self.on_change = on_change

    # -- writes --------------------------------------------------------------
    def create(self, endpoint: str, name: str, body: dict[str, Any], *, local: bool = False, update: bool = False,
               all_traffic: bool = False, user: str | None = None) -> dict[str, Any]:
        naming.DEPLOYMENT.check(name)
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise InvalidRequestError("the request body is {\"spec\": {...the deployment...}}", details={"field": "spec"})
        spec = self._load(endpoint, name, body["spec"])
        self._check_runnable(endpoint, spec, local)

        def write(session: Session) -> None:
            ep = self._endpoint(session, endpoint, local)
            if ep.provisioning_state == ProvisioningState.DELETING.value:
                raise ConflictError(f"online endpoint '{endpoint}' is being deleted", details={"field": "endpoint_name"})
            row = session.get(OnlineDeploymentRow, (endpoint, local, name))
            now = self.clock.now()
            if row is None:
                others = session.scalars(select(OnlineDeploymentRow.name).where(
                    OnlineDeploymentRow.endpoint == endpoint, OnlineDeploymentRow.local.is_(local))).all()
                if local and others:
                    raise ConflictError(f"local endpoint '{endpoint}' has deployment '{others[0]}' already; a local "
                                        "endpoint has one deployment (delete it first)", details={"field": "name"})
                session.add(OnlineDeploymentRow(
                    endpoint=endpoint, local=local, name=name, spec=spec, generation=1,
                    provisioning_state=ProvisioningState.CREATING.value, observed=DeploymentStatus(),
                    created_at=now, updated_at=now, created_by=user))
            else:
                if not update:
                    raise ConflictError(f"deployment '{name}' of endpoint '{endpoint}' already exists; update it with "
                                        f"`cible online-deployment update -n {name} -e {endpoint} -f ...`",
                                        details={"field": "name"})
                if row.provisioning_state == ProvisioningState.DELETING.value:
                    raise ConflictError(f"deployment '{name}' is being deleted", details={"field": "name"})
                if _runs_differently(row.spec, spec):
                    row.generation += 1  # its replicas are replaced, one at a time
                row.spec = spec
                move_endpoint(session, row, ProvisioningState.UPDATING, "updated by the user", now)
                row.observed = row.observed.model_copy(update={"crash": None, "reason": None})
                row.updated_at = now
            if all_traffic or (local and not ep.traffic):
                ep.traffic = {**{k: 0 for k in ep.traffic}, name: 100}
                ep.mirror_traffic = {k: v for k, v in ep.mirror_traffic.items() if k != name}  # live now: no shadow
                ep.updated_at = now

        self.store.transact(write)
        self.on_change()
        return self.get(endpoint, name, local=local)

    def update(self, endpoint: str, name: str, body: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
        """`online-deployment update`: a whole spec (`-f`), or `--set` assignments on the stored one."""
        if isinstance(body.get("spec"), dict):
            spec = body["spec"]
        else:
            spec = self.get(endpoint, name, local=local)["spec"]
            assignments = body.get("set") or []
            if not isinstance(assignments, list) or not all(isinstance(a, str) for a in assignments):
                raise InvalidRequestError("set: a list of assignments such as [\"instance_count=2\"]",
                                          details={"field": "set"})
            for assignment in assignments:
                parts, value = parse_assignment(assignment)
                set_path(spec, parts, value, assignment)
        return self.create(endpoint, name, {"spec": spec}, local=local, update=True)

    def delete(self, endpoint: str, name: str, *, local: bool = False) -> dict[str, Any]:
        def mark(session: Session) -> None:
            ep = self._endpoint(session, endpoint, local)
            row = self._row(session, endpoint, name, local)
            if ep.traffic.get(name) and not local:
                raise ConflictError(f"deployment '{name}' takes {ep.traffic[name]}% of the traffic of endpoint '{endpoint}'; "
                                    f"move it first (`cible online-endpoint update -n {endpoint} --traffic "
                                    f"\"{name}=0 ...\"`)", details={"field": "traffic"})
            if ep.mirror_traffic.get(name):
                ep.mirror_traffic = {k: v for k, v in ep.mirror_traffic.items() if k != name}
            ep.traffic = {k: v for k, v in ep.traffic.items() if k != name}
            move_endpoint(session, row, ProvisioningState.DELETING, "deleted by the user", self.clock.now())

        self.store.transact(mark)
        self.on_change()
        return self.get(endpoint, name, local=local)

    # -- reads ---------------------------------------------------------------
    def get(self, endpoint: str, name: str, *, local: bool = False) -> dict[str, Any]:
        with self.store.session() as session:
            return _resource(session, self._row(session, endpoint, name, local))

    def list(self, endpoint: str, *, local: bool = False) -> dict[str, Any]:
        with self.store.session() as session:
            self._endpoint(session, endpoint, local)
            rows = session.scalars(select(OnlineDeploymentRow).where(
                OnlineDeploymentRow.endpoint == endpoint, OnlineDeploymentRow.local.is_(local))
                .order_by(OnlineDeploymentRow.name)).all()
            items = [_resource(session, row) for row in rows]
        return {"value": items, "count": len(items)}

    def logs(self, endpoint: str, name: str, *, local: bool = False, lines: int = DEFAULT_LOG_LINES) -> str:
        """The last `lines` lines of a replica's output: the newest ready one's, else the newest's, else the
        last that failed (a replica whose init() raised has the traceback there)."""
        if lines < 1:
            raise InvalidRequestError("lines: give a number of lines, 1 or more", details={"field": "lines"})
        with self.store.session() as session:
            row = self._row(session, endpoint, name, local)
            replicas = [r.job for r in sorted(row.observed.replicas, key=lambda r: (r.state == "Ready", r.started_at),
                                              reverse=True)]
            if row.observed.crash is not None:  # the last one that failed, gone from the replicas since
                replicas.append(row.observed.crash.last_replica)
        for job in replicas:
            path = self.paths.run_dir(job) / "artifacts" / "user_logs" / "std_log.txt"
            if path.is_file():
                return _tail(path, lines)
        return ""

    def recommend_size(self, endpoint: str, name: str, body: dict[str, Any], *, local: bool = False) -> dict[str, Any]:
        """Load a ready replica, measure its peak memory and requests/s, and size the deployment (sizing.py)."""
        from cible.server.services.sizing import recommend_size  # psutil and the load client: only when asked

        return recommend_size(self, endpoint, name, body, local=local)

    # -- checks --------------------------------------------------------------
    def _load(self, endpoint: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {**spec, "name": spec.get("name") or name, "endpoint_name": spec.get("endpoint_name") or endpoint}
        if spec["name"] != name:
            raise InvalidRequestError(f"name: the spec names deployment '{spec['name']}', the request '{name}'; they "
                                      "must be the same", details={"field": "name"})
        if spec["endpoint_name"] != endpoint:
            raise InvalidRequestError(f"endpoint_name: the spec names endpoint '{spec['endpoint_name']}', the request "
                                      f"'{endpoint}'; they must be the same", details={"field": "endpoint_name"})
        loaded = load_spec_dict(spec, "online-deployment")
        return loaded.entity.model_dump(mode="json", exclude_none=True, by_alias=False, exclude={"schema_"})

    def _check_runnable(self, endpoint: str, spec: dict[str, Any], local: bool) -> None:
        """Every check a replica's submit makes, now."""
        with self.store.session() as session:
            ep = self._endpoint(session, endpoint, local)
            compute = ep.spec.get("compute")
            if not local:
                check_deployment(session, endpoint, compute, spec)
        if local:
            for field, value in (("code_configuration.code", (spec.get("code_configuration") or {}).get("code")),
                                 ("model.path", (spec.get("model") or {}).get("path")
                                  if isinstance(spec.get("model"), dict) else None)):
                if value and not (Path(value).is_absolute() and Path(value).exists()):
                    raise InvalidRequestError(f"{field}: '{value}' is not a folder or file on the server's machine; a "
                                              "local endpoint reads it in place", details={"field": field})
        model = model_source(spec, self.asset_lookup)
        if not spec.get("code_configuration") and not (model and model.mlflow):
            raise InvalidRequestError(
                "code_configuration: a deployment needs a scoring script (code_configuration: {code, scoring_script}) "
                "unless its model is an MLflow model (type: mlflow_model), which is served without one",
                details={"field": "code_configuration"})
        body = replica_job(spec, endpoint=endpoint, endpoint_compute=compute, local=local, port=0, model=model,
                           blob_root=self.paths.blob_root)
        try:
            self.jobs.validate(VALIDATION_NAME, body)
        except CibleError as exc:
            raise as_deployment_error(exc) from None

    def _endpoint(self, session: Session, endpoint: str, local: bool) -> OnlineEndpointRow:
        return self.endpoints._row(session, endpoint, local)

    def _row(self, session: Session, endpoint: str, name: str, local: bool) -> OnlineDeploymentRow:
        row = session.get(OnlineDeploymentRow, (endpoint, local, name))
        if row is None:
            self._endpoint(session, endpoint, local)  # a 404 that names the endpoint first
            names = session.scalars(select(OnlineDeploymentRow.name).where(
                OnlineDeploymentRow.endpoint == endpoint, OnlineDeploymentRow.local.is_(local))).all()
            raise NotFoundError(f"deployment '{name}' of endpoint '{endpoint}' does not exist (its deployments: "
                                f"{', '.join(names) or 'none'})", details={"name": name})
        return row


def _runs_differently(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether replicas of `old` cannot serve `new` (model, code, environment, variables ... changed)."""
    def running(spec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in spec.items() if k not in IN_PLACE}
    return running(old) != running(new)


def _resource(session: Session, row: OnlineDeploymentRow) -> dict[str, Any]:
    observed = row.observed
    jobs = {j.name: j for j in session.scalars(select(JobRow).where(
        JobRow.name.in_([r.job for r in observed.replicas])))} if observed.replicas else {}
    replicas = [{"name": r.job, "state": r.state, "ready": r.state == "Ready", "url": r.url,
                 "generation": r.generation, "job_status": jobs[r.job].status if r.job in jobs else None,
                 "started_at": r.started_at, "reason": r.reason} for r in observed.replicas]
    spec = row.spec
    return {**spec, "name": row.name, "endpoint_name": row.endpoint, "local": row.local,
            "provisioning_state": row.provisioning_state, "generation": row.generation,
            "instance_count": spec.get("instance_count", 1), "desired_instances": observed.scale.count if observed.scale else None,
            "reason": observed.reason, "replicas": replicas, "spec": spec, "created_at": row.created_at}


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a file, read from its end (a long-running replica's log is long)."""
    with open(path, "rb") as fh:
        end = fh.seek(0, 2)
        size = 64 << 10
        while True:
            start = max(0, end - size)
            fh.seek(start)
            data = fh.read(end - start)
            if start == 0 or data.count(b"\n") > lines:
                break
            size *= 2
        text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")
