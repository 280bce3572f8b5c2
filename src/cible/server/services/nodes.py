"""A cluster's nodes as `az ml compute list-nodes` shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select

from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.server.store.rows import NodeRow


def node_query(*computes: str) -> Select:
    """`az ml compute list-nodes`: the cluster's (or clusters') nodes that are not gone, oldest first."""
    return (select(NodeRow).where(NodeRow.compute.in_(computes), NodeRow.state != NodeState.REMOVED.value)
            .order_by(NodeRow.created_at, NodeRow.node_id))


def node_listing(session, compute: str) -> list[dict[str, Any]]:  # noqa: ANN001
    return [node_item(r) for r in session.scalars(node_query(compute))]


def node_item(r: NodeRow) -> dict[str, Any]:
    return {
        "node_id": r.node_id,
        "node_state": r.state,
        "current_job_name": r.job_name,
        "private_ip_address": r.address,
        "public_ip_address": None,
        "port": None,
        "run_id": r.job_name,
        "created_at": _iso(r.created_at),
        "last_heartbeat": _iso(r.last_heartbeat),
        "usage": r.info.usage,
    }


def gpu_readings(session, *, compute: str | None = None, node_ids: list[str] | None = None,  # noqa: ANN001
                 ) -> dict[str, list[dict[str, Any]]]:
    """The live nodes' GPUs as their agents last read them (utilisation, memory), by node id; nodes whose
    agent reads none (no GPU, no NVML) are left out."""
    query = select(NodeRow).where(NodeRow.state.in_([s.value for s in LIVE]))
    if compute is not None:
        query = query.where(NodeRow.compute == compute)
    if node_ids is not None:
        query = query.where(NodeRow.node_id.in_(node_ids))
    out = {}
    for row in session.scalars(query.order_by(NodeRow.node_id)):
        readings = (row.info.usage or {}).get("gpus")
        if isinstance(readings, list) and readings:
            out[row.node_id] = readings
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
