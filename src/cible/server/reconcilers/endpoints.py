"""The endpoint reconciler: each online deployment's replicas, and the gateway's routes.

One pass per deployment, in the shape of shape.py, so that one deployment's trouble stays its own:

    load     the deployment (spec, generation, replicas), its endpoint, and its replicas' jobs
    observe  probes of the replicas that are due one (GET /), and the gateway's figures for it
             (in-flight requests, the last request, requests waiting for a first replica)
    decide   cible.core.planning.deployments.decide_deployment (pure): how many replicas, which to
             start, stop or replace (a rolling update, a failed liveness probe, a crashed replica),
             which are in traffic, and the deployment's provisioning state and reason
    apply    the deployment's record under its version; new replicas get their job name and port
    act      after commit: submit the new replicas' jobs (every check of a submit), cancel the
             retired ones; then the whole route table is published to the gateway

An endpoint being deleted goes once its deployments' replicas have all ended.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cible.core.clock import Clock
from cible.core.errors import CibleError, ConflictError, NotFoundError
from cible.core.lifecycle.endpoints import ProvisioningState
from cible.core.lifecycle.jobs import is_terminal
from cible.core.models.endpoint_records import DeploymentStatus, ReplicaRecord
from cible.core.models.records import ClusterHandle, LocalHandle
from cible.core.planning.deployments import (
    DeploymentPlan,
    ReplicaObservation,
    decide_deployment,
    probe_due,
)
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.reconcilers.probes import probe_all
from cible.server.reconcilers.shape import check_unchanged, run_pass
from cible.server.services.jobs import JobService, Lineage
from cible.server.services.lifecycle import move_endpoint
from cible.server.services.replica_jobs import free_port, model_source, replica_job
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, OnlineDeploymentRow, OnlineEndpointRow

log = logging.getLogger("cible.endpoints")
STARTING_PROBE_TIMEOUT_S = 0.5
ACTIVE_POLL_S = 0.25  # while a replica starts, stops or a probe is due soon
IDLE_POLL_S = 1.0


@dataclass
class Snapshot:
    endpoint: str
    local: bool
    name: str
    spec: dict[str, Any]
    endpoint_spec: dict[str, Any]
    generation: int
    provisioning_state: str
    status: DeploymentStatus
    version: int
    replicas: list[ReplicaObservation]
    demand: dict[str, Any] = field(default_factory=dict)  # the gateway's: in_flight, waiting, last_request_at


@dataclass
class Actions:
    submit: list[tuple[ReplicaRecord, dict[str, Any]]] = field(default_factory=list)
    cancel: dict[str, str] = field(default_factory=dict)
    forget: set[str] = field(default_factory=set)  # replicas no longer recorded: their submit errors go too


class DeploymentPass:
    """One pass over one deployment (shape.Pass)."""

    def __init__(self, key: tuple[str, bool, str], reconciler: EndpointReconciler) -> None:
        self.key = key
        self.r = reconciler

    def load(self, session: Session, now: datetime) -> Snapshot | None:
        row = session.get(OnlineDeploymentRow, self.key)
        if row is None:
            return None
        endpoint = session.get(OnlineEndpointRow, (row.endpoint, row.local))
        jobs = {j.name: j for j in session.scalars(select(JobRow).where(
            JobRow.name.in_([r.job for r in row.observed.replicas])))}
        views = [_observation(record, jobs.get(record.job), self.r.submit_errors.get(record.job))
                 for record in row.observed.replicas]
        return Snapshot(endpoint=row.endpoint, local=row.local, name=row.name, spec=dict(row.spec),
                        endpoint_spec=dict(endpoint.spec) if endpoint else {}, generation=row.generation,
                        provisioning_state=row.provisioning_state, status=row.observed, version=row.version,
                        replicas=views)

    def observe(self, snapshot: Snapshot, now: datetime) -> Snapshot:
        timeout = float((snapshot.spec.get("readiness_probe") or {}).get("timeout") or 2)
        # A starting replica listens before its init() ends: a short probe, so that one slow init() does not
        # hold up the pass (its readiness window is what limits it, not the probes' count).
        due = {o.record.job: (o.url, min(timeout, STARTING_PROBE_TIMEOUT_S) if o.record.state == "Starting" else timeout)
               for o in snapshot.replicas if probe_due(o, snapshot.spec, now)}
        results = probe_all(due)
        snapshot.replicas = [replace(o, probe=results.get(o.record.job)) for o in snapshot.replicas]
        if not snapshot.local:
            snapshot.demand = self.r.demand(snapshot.endpoint, snapshot.name)
        return snapshot

    def decide(self, snapshot: Snapshot, now: datetime) -> DeploymentPlan:
        return decide_deployment(spec=snapshot.spec, generation=snapshot.generation, local=snapshot.local,
                                 provisioning_state=snapshot.provisioning_state, status=snapshot.status,
                                 replicas=snapshot.replicas, demand=snapshot.demand, now=now)

    def apply(self, session: Session, snapshot: Snapshot, plan: DeploymentPlan, now: datetime) -> Actions:
        row = session.get(OnlineDeploymentRow, self.key)
        check_unchanged(row, snapshot.version, f"deployment {snapshot.endpoint}/{snapshot.name}")
        kept = {r.job for r in plan.replicas}
        actions = Actions(cancel=dict(plan.stop), forget={o.record.job for o in snapshot.replicas} - kept)
        if plan.remove:
            session.delete(row)
            return actions
        records = list(plan.replicas)
        for _ in range(plan.start):
            record, body = self._new_replica(snapshot, now)
            records.append(record)
            actions.submit.append((record, body))
        status = row.observed.model_copy(update={**plan.status_changes, "replicas": tuple(records)})
        if status != row.observed:
            row.observed = status
        if plan.provisioning_state:
            move_endpoint(session, row, plan.provisioning_state, plan.status_changes.get("reason"), now)
        return actions

    def _new_replica(self, snapshot: Snapshot, now: datetime) -> tuple[ReplicaRecord, dict[str, Any]]:
        job = f"{snapshot.endpoint}-{snapshot.name}-{'local-' if snapshot.local else ''}{secrets.token_hex(4)}"
        port = free_port()
        try:
            model = model_source(snapshot.spec, self.r.asset_lookup)
            body = replica_job(snapshot.spec, endpoint=snapshot.endpoint,
                               endpoint_compute=snapshot.endpoint_spec.get("compute"), local=snapshot.local,
                               port=port, model=model, reload=snapshot.local, blob_root=self.r.blob_root)
        except CibleError as exc:  # the model was deleted since: the replica fails at submit, saying why
            body = {"error": exc.message}
        return ReplicaRecord(job=job, generation=snapshot.generation, port=port, started_at=now), body

    def act(self, actions: Actions) -> None:
        replica_of = f"{self.key[0]}/{self.key[2]}"
        for record, body in actions.submit:
            try:
                if "error" in body:
                    raise ConflictError(body["error"])
                self.r.jobs.create_child(record.job, body, Lineage(replica_of=replica_of))
            except CibleError as exc:  # no job: the next pass sees the replica failed, and why
                log.warning("replica %s of %s could not be submitted: %s", record.job, replica_of, exc.message)
                self.r.submit_errors[record.job] = exc.message
        for job, why in actions.cancel.items():
            try:
                self.r.jobs.cancel(job, reason=why)
            except (NotFoundError, ConflictError):
                pass  # gone or ended already
        for job in actions.forget:
            self.r.submit_errors.pop(job, None)


class EndpointReconciler(ReconcilerLoop):
    name = "endpoints"

    def __init__(self, store: Store, jobs: JobService, clock: Clock, asset_lookup,  # noqa: ANN001
                 publish: Callable[[Session], None] | None = None, blob_root: Path | None = None,
                 demand: Callable[[str, str], dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.asset_lookup = asset_lookup
        self.blob_root = blob_root  # where snapshots are: a no-code MLflow model's conda.yaml is read there
        self.publish = publish or (lambda session: None)  # the route table, from the store, to the gateway
        self.demand = demand or (lambda endpoint, deployment: {})
        self.submit_errors: dict[str, str] = {}  # replica job -> why its submit was refused

    def step(self) -> float:
        return self.reconcile_once()

    def reconcile_once(self) -> float:
        now = self.clock.now()
        with self.store.session() as session:
            keys = session.execute(select(OnlineDeploymentRow.endpoint, OnlineDeploymentRow.local,
                                          OnlineDeploymentRow.name)).all()
        busy = False
        for key in keys:
            try:
                result = run_pass(self.store, DeploymentPass(tuple(key), self), now)
            except Exception:  # one deployment's trouble must not hold up the others
                log.exception("deployment %s/%s: pass failed", key[0], key[2])
                continue
            busy = busy or result.collided or bool(result.plan and result.plan.busy)
            with self.store.session() as session:  # at once: a replica leaving traffic drains from now
                self.publish(session)
        self._forget_deleted_endpoints()
        with self.store.session() as session:
            self.publish(session)
        return ACTIVE_POLL_S if busy else IDLE_POLL_S

    def _forget_deleted_endpoints(self) -> None:
        with self.store.session() as session:
            for row in session.scalars(select(OnlineEndpointRow).where(
                    OnlineEndpointRow.provisioning_state == ProvisioningState.DELETING.value)):
                left = session.scalar(select(OnlineDeploymentRow.name).where(
                    OnlineDeploymentRow.endpoint == row.name, OnlineDeploymentRow.local.is_(row.local)).limit(1))
                if left is None:
                    session.execute(delete(OnlineEndpointRow).where(OnlineEndpointRow.name == row.name,
                                                                    OnlineEndpointRow.local.is_(row.local)))


def _observation(record: ReplicaRecord, job: JobRow | None, submit_error: str | None) -> ReplicaObservation:
    address = None
    if job is not None:
        handle = job.run.handle
        if isinstance(handle, ClusterHandle) and handle.node_addrs:
            address = handle.node_addrs[0]
        elif isinstance(handle, LocalHandle):
            address = "127.0.0.1"
    # Where it listens now: from its job's current placement (a requeued replica has none, or a new node).
    host = f"[{address}]" if address and ":" in address else address
    url = f"http://{host}:{record.port}" if host else None
    error = job.error.message if job is not None and job.error else submit_error
    return ReplicaObservation(record=record, job_status=None if job is None else job.status, job_error=error,
                              url=url, ended=job is None or is_terminal(job.status),
                              running_since=job.started_at if job is not None else None)

