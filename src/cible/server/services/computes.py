"""Compute targets. `local` always exists; amlcompute clusters run jobs on nodes of a node
provider; instances and attached computes are registered and validated, and run jobs once
their backends exist."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cible.backends.base.contract import NodeProvider
from cible.core import catalog
from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.planning.clusters import ClusterConfig, admission_error
from cible.core.planning.scheduling import waiting_reason
from cible.core.specs.azureml.loader import load_spec_dict
from cible.server.clusters.agents import node_listing
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, NodeRow

LOCAL = "local"
SIZED_TYPES = ("amlcompute", "computeinstance")
# What `cible compute update` may change on a cluster, applied live (as `az ml compute update`).
UPDATABLE = ("min_instances", "max_instances", "idle_time_before_scale_down", "description", "tags")
READ_ONLY = ("provisioning_state", "provisioning_errors", "created_on", "id", "allocation_state",
             "current_node_count", "target_node_count", "node_state_counts", "state")


def local_compute(max_concurrent: int) -> dict[str, Any]:
    return {
        "name": LOCAL,
        "type": "local",
        "description": "this machine: jobs run as processes of the workspace server's host",
        "provisioning_state": "Succeeded",
        "state": "Running",
        "max_concurrent_jobs": max_concurrent,
    }


DELETING = "Deleting"  # a cluster draining before it goes
NODE_STATES = ("idle", "running", "preparing", "unusable", "leaving", "preempted")
GPU_HINTS = ("gpu", "cuda")


class ComputeService:
    def __init__(self, store: Store, max_concurrent_local: int, clock: Clock,
                 providers: dict[str, NodeProvider] | None = None, on_change=lambda: None) -> None:  # noqa: ANN001
        self.store = store
        self.max_concurrent_local = max_concurrent_local
        self.clock = clock
        self.providers = providers or {}
        self.on_change = on_change  # wakes the cluster reconciler: settings apply at once

    # -- writes ------------------------------------------------------------
    def create(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if name == LOCAL:
            raise ConflictError("'local' is this machine's built-in compute; choose another name")
        if body.get("name") not in (None, name):
            raise InvalidRequestError(f"name: the body says '{body['name']}' but the URL says '{name}'",
                                      details={"field": "name"})
        data = {k: v for k, v in body.items() if k not in READ_ONLY}
        entity = load_spec_dict({**data, "name": name}, "compute", source="request body").entity
        if entity.type in SIZED_TYPES:
            catalog.check_size(entity.size, entity.type, self.clock.now().date())
        if entity.type == "amlcompute":
            self._check_provider_can_hold(entity)
        if entity.type == "computeinstance":
            raise InvalidRequestError(
                f"compute '{name}' is a valid computeinstance, but cible does not run compute instances yet; "
                "create an amlcompute cluster, or use compute: local", details={"field": "type"})
        spec = entity.model_dump(mode="json", exclude_none=True)
        now = self.clock.now()
        with self.store.session() as session:
            existing = session.get(ComputeRow, name)
            if existing is not None:
                raise ConflictError(
                    f"compute '{name}' already exists ({existing.compute_type}); change a cluster's scale settings "
                    "with `cible compute update`, or delete it first", details={"name": name})
            row = ComputeRow(name=name, compute_type=entity.type, spec=spec, provisioning_state="Succeeded",
                             created_at=now, updated_at=now)
            session.add(row)
            result = _resource(session, row)
        self.on_change()
        return result

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        if name == LOCAL:
            raise InvalidRequestError("'local' is this machine's built-in compute; it has no scale settings to update")
        unknown = sorted(set(changes) - set(UPDATABLE))
        if unknown:
            raise InvalidRequestError(f"{', '.join(unknown)}: cannot be updated; a cluster can change "
                                      f"{', '.join(UPDATABLE)}", details={"fields": unknown})
        with self.store.session() as session:
            row = self._row(session, name)
            if row.compute_type != "amlcompute":
                raise InvalidRequestError(f"compute '{name}' is a {row.compute_type}; only amlcompute clusters "
                                          "can be updated", details={"field": "type"})
            if row.provisioning_state == DELETING:
                raise ConflictError(f"compute cluster '{name}' is being deleted; it cannot be updated")
            merged = {**row.spec, **changes}
            entity = load_spec_dict(merged, "compute", source="update").entity  # min <= max, ranges
            row.spec = entity.model_dump(mode="json", exclude_none=True)
            row.updated_at = self.clock.now()
            result = _resource(session, row)
        self.on_change()
        return result

    def delete(self, name: str) -> dict[str, Any] | None:
        """Delete a compute. A cluster with nodes drains first: it takes no new jobs, its running
        jobs finish, its nodes leave, then it goes (returned: the cluster, Deleting)."""
        if name == LOCAL:
            raise ConflictError("'local' is this machine's built-in compute and cannot be deleted")
        with self.store.session() as session:
            row = self._row(session, name)
            if row.compute_type != "amlcompute" or not _live_nodes(session, name):
                session.delete(row)
                return None
            row.provisioning_state = DELETING
            row.updated_at = self.clock.now()
            result = _resource(session, row)
        self.on_change()
        return result

    def _check_provider_can_hold(self, entity) -> None:  # noqa: ANN001
        size = catalog.get_size(entity.size)
        settings = entity.cible
        provider = self.providers[settings.provider if settings else "local"]
        why = provider.cannot_hold(size.name, size.vcpus, size.memory_gb, size.gpus,
                                   overcommit=bool(settings and settings.overcommit))
        if why:
            raise InvalidRequestError(f"size: compute cluster '{entity.name}': {why} (in YAML: cible: "
                                      "{overcommit: true})", details={"field": "size"})

    def preempt(self, name: str, node_id: str) -> dict[str, Any]:
        """Take a node of a low-priority cluster away at once, as Azure evicts a low-priority VM."""
        with self.store.session() as session:
            row = self._row(session, name)
            if row.compute_type != "amlcompute" or row.spec.get("tier") != "low_priority":
                raise InvalidRequestError(f"compute '{name}' is not a low-priority cluster (tier: low_priority); "
                                          "only its nodes can be preempted", details={"field": "tier"})
            node = session.get(NodeRow, node_id)
            if node is None or node.compute != name or node.state not in {s.value for s in LIVE}:
                nodes = [n["node_id"] for n in node_listing(session, name) if n["node_state"] in {s.value for s in LIVE}]
                raise NotFoundError(f"node '{node_id}' is not a live node of compute '{name}' (live nodes: "
                                    f"{', '.join(nodes) or 'none'})", details={"node_id": node_id})
            provider = node.provider
        self.providers[provider].preempt(node_id)
        self.on_change()
        return {"node_id": node_id, "compute": name, "preempted": True}

    # -- reads ---------------------------------------------------------------
    def list(self) -> dict[str, Any]:
        with self.store.session() as session:
            rows = session.scalars(select(ComputeRow).order_by(ComputeRow.name)).all()
            items = [local_compute(self.max_concurrent_local), *(_resource(session, r) for r in rows)]
        return {"value": items, "count": len(items), "next_skip": None}

    def get(self, name: str) -> dict[str, Any]:
        if name == LOCAL:
            return local_compute(self.max_concurrent_local)
        with self.store.session() as session:
            return _resource(session, self._row(session, name))

    def nodes(self, name: str) -> dict[str, Any]:
        """`list-nodes`: a cluster's nodes that are not gone."""
        compute = self.get(name)
        if compute["type"] != "amlcompute":
            raise InvalidRequestError(f"compute '{name}' is a {compute['type']}; only amlcompute clusters have nodes")
        with self.store.session() as session:
            nodes = node_listing(session, name)
        return {"value": nodes, "count": len(nodes), "next_skip": None}

    def cluster_names(self) -> set[str]:
        with self.store.session() as session:
            return set(session.scalars(select(ComputeRow.name).where(ComputeRow.compute_type == "amlcompute")))

    def queue_reason(self, name: str, position: int, instance_count: int) -> str:
        """The wait of the job at `position` in cluster `name`'s queue, from its nodes now."""
        try:
            compute = self.get(name)
        except NotFoundError:
            return f"compute '{name}' no longer exists; the job will fail"
        counts = compute.get("node_state_counts") or {}
        config = ClusterConfig(name=name, max_instances=compute.get("max_instances", 1))
        reason = waiting_reason(config, position, instance_count, idle=counts.get("idle", 0),
                                starting=counts.get("preparing", 0), busy=counts.get("running", 0))
        for error in compute.get("provisioning_errors") or []:
            reason += f"; nodes fail to start: {error['message']}"
        return reason

    def require_runnable(self, name: str, *, instance_count: int = 1, environment: str | None = None) -> None:
        """Raise unless a job of `instance_count` nodes can run on compute `name`: it exists, can run
        jobs, and the job could ever fit (refused at submit, not left waiting forever)."""
        compute = self.get(name)
        if compute["type"] == "local":
            return
        if compute["type"] != "amlcompute":
            raise InvalidRequestError(
                f"compute '{name}' is of type {compute['type']}, which cible cannot run jobs on yet; "
                "use compute: local or an amlcompute cluster",
                details={"field": "compute"},
            )
        size = catalog.get_size(compute["size"])
        config = ClusterConfig(name=name, max_instances=compute.get("max_instances", 1), gpus_per_node=size.gpus,
                               deleting=compute["provisioning_state"] == DELETING, size=size.name)
        needs_gpu = bool(environment) and any(h in environment.lower() for h in GPU_HINTS)
        reason = admission_error(config, instance_count, needs_gpu)
        if reason:
            if needs_gpu and "GPU" in reason:
                reason += f" (the job's environment '{environment}' is a GPU one)"
            field = "resources.instance_count" if "instance_count" in reason else "compute"
            raise InvalidRequestError(reason, details={"field": field})

    def _row(self, session, name: str) -> ComputeRow:  # noqa: ANN001
        row = session.get(ComputeRow, name)
        if row is None:
            names = [LOCAL, *session.scalars(select(ComputeRow.name)).all()]
            raise NotFoundError(
                f"compute '{name}' does not exist in this workspace (computes: {', '.join(names)}); "
                "create it first, as on Azure, or set compute: local", details={"name": name})
        return row


def _live_nodes(session, name: str) -> int:  # noqa: ANN001
    return len(session.scalars(select(NodeRow.node_id).where(
        NodeRow.compute == name, NodeRow.state != NodeState.REMOVED.value)).all())


def _resource(session, row: ComputeRow) -> dict[str, Any]:  # noqa: ANN001
    resource = {**row.spec, "name": row.name, "type": row.compute_type, "provisioning_state": row.provisioning_state,
                "created_on": row.created_at.isoformat()}
    if row.compute_type == "amlcompute":
        counts = dict.fromkeys(NODE_STATES, 0)
        for state in session.scalars(select(NodeRow.state).where(NodeRow.compute == row.name)):
            if state in counts:
                counts[state] += 1
        current = sum(counts[s.value] for s in LIVE)
        target = row.spec.get("target_node_count", current)
        resource.update(allocation_state="Steady" if current == target else "Resizing", current_node_count=current,
                        target_node_count=target, node_state_counts=counts)
    return resource
