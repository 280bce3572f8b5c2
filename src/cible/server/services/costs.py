"""Cost from the nodes' histories: each node's lifetime × its size's price per hour (the
catalog's indicative prices; low priority discounted), split into idle, per job and overhead.

A node's price is written on it when it is requested, so a later catalog change does not
rewrite the past. Serverless nodes are made for one job: their whole life is that job's. The warm
agents kept ahead of need (warm_pool.py) are billed as idle nodes of the "(warm pool)".
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cible.core.clock import as_utc
from cible.core.errors import InvalidRequestError
from cible.core.planning.costs import NodeCost, StateChange, node_cost, report
from cible.server.services.compute_spec import instance_spec
from cible.server.services.instances import owner_of
from cible.server.services.paging import MAX_TOP, slice_page
from cible.server.services.warm_pool import warm_costs
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow, NodeStateRow

SERVERLESS_PREFIX = "serverless:"  # a serverless pool's compute name: serverless:<job>
GROUPINGS = ("compute", "job", "user")


def node_costs(session, now: datetime, *, compute: str | None = None, node_ids: list[str] | None = None,  # noqa: ANN001
               since: datetime | None = None) -> list[NodeCost]:
    query = select(NodeRow)
    if compute is not None:
        query = query.where(NodeRow.compute == compute)
    if node_ids is not None:
        query = query.where(NodeRow.node_id.in_(node_ids))
    nodes = session.scalars(query).all()
    if not nodes:
        return []
    changes: dict[str, list[StateChange]] = defaultdict(list)
    history = session.execute(select(NodeStateRow.node_id, NodeStateRow.at, NodeStateRow.to_state, NodeStateRow.job_name)
                              .where(NodeStateRow.node_id.in_([n.node_id for n in nodes])).order_by(NodeStateRow.id))
    for node_id, at, state, job in history:
        changes[node_id].append(StateChange(at=at, state=state, job=job))
    return [node_cost(n.node_id, n.compute, n.info.price_per_hour, changes[n.node_id], now, since) for n in nodes]


def compute_cost(session, name: str, now: datetime) -> dict[str, Any]:  # noqa: ANN001
    """`compute show`: cost so far and the part spent idle."""
    costs = node_costs(session, now, compute=name)
    total = sum(c.cost for c in costs)
    idle = sum(c.idle_cost for c in costs)
    return {"currency": "USD", "so_far": round(total, 6), "idle": round(idle, 6),
            "node_hours": round(sum(c.seconds for c in costs) / 3600, 6), "note": "indicative catalog prices"}


def job_cost(session, job: JobRow, now: datetime) -> float | None:  # noqa: ANN001
    """What the job's nodes cost while they ran it (a serverless job: its nodes' whole lives)."""
    return jobs_cost(session, [job], now)


def jobs_cost(session, jobs: list[JobRow], now: datetime) -> float | None:  # noqa: ANN001
    """What the nodes of `jobs` cost while they ran them (a sweep's trials, a pipeline's steps), read in
    one pass over the node histories; None when none of them ran on a node."""
    total, ran = 0.0, False
    for job in jobs:  # a serverless job's pool is its own
        if job.target.startswith(SERVERLESS_PREFIX):
            total, ran = total + sum(c.cost for c in node_costs(session, now, compute=job.target)), True
    names = {job.name for job in jobs if not job.target.startswith(SERVERLESS_PREFIX)}
    node_ids = list(session.scalars(select(NodeStateRow.node_id).where(NodeStateRow.job_name.in_(names))).unique()) \
        if names else []
    if node_ids:
        ran = True
        total += sum(cost for c in node_costs(session, now, node_ids=node_ids)
                     for job, cost in c.by_job.items() if job in names)
    return round(total, 6) if ran else None


class CostService:
    def __init__(self, store: Store, clock) -> None:  # noqa: ANN001
        self.store = store
        self.clock = clock

    def report(self, by: str = "compute", since: datetime | None = None, until: datetime | None = None, *,
               skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """`cible cost report`: node costs summed by compute, job or user, optionally since a time; a page
        of its lines, most expensive first. Costs grow while nodes live, so the pages of one report
        pass the first page's `until` (never later than now): each is then cut from the same report."""
        if by not in GROUPINGS:
            raise InvalidRequestError(f"by: '{by}' is not a grouping; use one of {', '.join(GROUPINGS)}",
                                      details={"field": "by"})
        now = self.clock.now()
        # From the query string: a time without a zone is UTC.
        now = min(now, as_utc(until)) if until is not None else now
        since = as_utc(since) if since is not None else None
        with self.store.session() as session:
            costs = node_costs(session, now, since=since) + warm_costs(session, now, since)
            jobs = dict(session.execute(select(JobRow.name, JobRow.created_by)).all())
            # Who a compute's cost goes to: its creator; an instance's, the user it is assigned to.
            owners = {row.name: owner_of(instance_spec(row), row.created_by)
                      if row.compute_type == "computeinstance" else row.created_by
                      for row in session.scalars(select(ComputeRow))}
        dedicated = {c.compute: c.compute[len(SERVERLESS_PREFIX):] for c in costs
                     if c.compute.startswith(SERVERLESS_PREFIX)}
        lines = report(costs, by=by, job_users={k: v for k, v in jobs.items() if v},
                       compute_users={k: v for k, v in owners.items() if v}, dedicated_to_job=dedicated)
        total = sum(line.cost for line in lines)
        shown = slice_page(lines, skip, top)
        shown["value"] = [{"key": line.key, "cost": round(line.cost, 6), "node_hours": round(line.seconds / 3600, 6),
                           "idle": round(line.idle_cost, 6)} for line in shown["value"]]
        return {"by": by, "since": since.isoformat() if since else None, "until": now.isoformat(), "currency": "USD",
                "total": round(total, 6), "note": "indicative catalog prices × node lifetimes", **shown}
