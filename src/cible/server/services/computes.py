"""Compute targets. `local` always exists; clusters and attached computes are registered and
validated against the size catalog now, and run jobs once their backends exist."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cible.core import catalog
from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.specs.azureml.loader import load_spec_dict
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow

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


class ComputeService:
    def __init__(self, store: Store, max_concurrent_local: int, clock: Clock) -> None:
        self.store = store
        self.max_concurrent_local = max_concurrent_local
        self.clock = clock

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
            return _resource(row)

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
            merged = {**row.spec, **changes}
            entity = load_spec_dict(merged, "compute", source="update").entity  # min <= max, ranges
            row.spec = entity.model_dump(mode="json", exclude_none=True)
            row.updated_at = self.clock.now()
            return _resource(row)

    def delete(self, name: str) -> None:
        if name == LOCAL:
            raise ConflictError("'local' is this machine's built-in compute and cannot be deleted")
        with self.store.session() as session:
            session.delete(self._row(session, name))

    # -- reads ---------------------------------------------------------------
    def list(self) -> dict[str, Any]:
        with self.store.session() as session:
            rows = session.scalars(select(ComputeRow).order_by(ComputeRow.name)).all()
            items = [local_compute(self.max_concurrent_local), *(_resource(r) for r in rows)]
        return {"value": items, "count": len(items), "next_skip": None}

    def get(self, name: str) -> dict[str, Any]:
        if name == LOCAL:
            return local_compute(self.max_concurrent_local)
        with self.store.session() as session:
            return _resource(self._row(session, name))

    def nodes(self, name: str) -> dict[str, Any]:
        """`list-nodes`: a cluster's nodes (none until clusters get a node provider)."""
        compute = self.get(name)
        if compute["type"] != "amlcompute":
            raise InvalidRequestError(f"compute '{name}' is a {compute['type']}; only amlcompute clusters have nodes")
        return {"value": [], "count": 0, "next_skip": None}

    def require_runnable(self, name: str) -> None:
        """Raise unless jobs can run on compute `name` now."""
        compute = self.get(name)
        if compute["type"] != "local":
            raise InvalidRequestError(
                f"compute '{name}' is of type {compute['type']}, which cible cannot run jobs on yet; "
                "use compute: local",
                details={"field": "compute"},
            )

    def _row(self, session, name: str) -> ComputeRow:  # noqa: ANN001
        row = session.get(ComputeRow, name)
        if row is None:
            names = [LOCAL, *session.scalars(select(ComputeRow.name)).all()]
            raise NotFoundError(
                f"compute '{name}' does not exist in this workspace (computes: {', '.join(names)}); "
                "create it first, as on Azure, or set compute: local", details={"name": name})
        return row


def _resource(row: ComputeRow) -> dict[str, Any]:
    resource = {**row.spec, "name": row.name, "type": row.compute_type, "provisioning_state": row.provisioning_state,
                "created_on": row.created_at.isoformat()}
    if row.compute_type == "amlcompute":
        resource.update(allocation_state="Steady", current_node_count=0, target_node_count=0,
                        node_state_counts={s: 0 for s in ("idle", "running", "preparing", "unusable", "leaving",
                                                          "preempted")})
    return resource
