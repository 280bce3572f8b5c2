"""Compute targets. `local` always exists; other types arrive with their backends."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cible.core.errors import InvalidRequestError, NotFoundError
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow

LOCAL = "local"


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
    def __init__(self, store: Store, max_concurrent_local: int) -> None:
        self.store = store
        self.max_concurrent_local = max_concurrent_local

    def list(self) -> dict[str, Any]:
        with self.store.session() as session:
            rows = session.scalars(select(ComputeRow).order_by(ComputeRow.name)).all()
            items = [local_compute(self.max_concurrent_local), *(_resource(r) for r in rows)]
        return {"value": items, "count": len(items), "next_skip": None}

    def get(self, name: str) -> dict[str, Any]:
        if name == LOCAL:
            return local_compute(self.max_concurrent_local)
        with self.store.session() as session:
            row = session.get(ComputeRow, name)
            if row is None:
                raise NotFoundError(self._missing(name, session), details={"name": name})
            return _resource(row)

    def require_runnable(self, name: str) -> None:
        """Raise unless jobs can run on compute `name` now."""
        compute = self.get(name)
        if compute["type"] != "local":
            raise InvalidRequestError(
                f"compute '{name}' is of type {compute['type']}, which cible cannot run jobs on yet; "
                "use compute: local",
                details={"field": "compute"},
            )

    def _missing(self, name: str, session) -> str:  # noqa: ANN001
        names = [LOCAL, *session.scalars(select(ComputeRow.name)).all()]
        return (
            f"compute '{name}' does not exist in this workspace (computes: {', '.join(names)}); "
            "create it first, as on Azure, or set compute: local"
        )


def _resource(row: ComputeRow) -> dict[str, Any]:
    return {**row.spec, "name": row.name, "type": row.compute_type, "provisioning_state": row.provisioning_state}
