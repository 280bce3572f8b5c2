"""Cost from node lifetimes: seconds in each state × the node's hourly price.

A node's life is its state changes (the node status history, each naming the job it runs
when running). Cost accrues from its first change until it is removed, or until `now` while
it lives: a node costs money whether it works or idles, as an Azure VM does. The split says
where the money went: running a job (by job), idle, or overhead (preparing, leaving,
preempted, unusable: neither idle nor a job's work).

Prices are the catalog's indicative list prices, not a bill. No clock, database or I/O:
`now` and the history come from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = [
    "LOW_PRIORITY_FACTOR",
    "CostLine",
    "NodeCost",
    "Segment",
    "StateChange",
    "effective_price",
    "estimate",
    "node_cost",
    "report",
    "segments",
]

# Low-priority (spot) nodes cost this share of the dedicated price. Indicative: Azure's
# low-priority discount varies by size and region (often 60-90 %); one documented factor
# keeps estimates comparable without a second price column in the catalog.
LOW_PRIORITY_FACTOR = 0.2

IDLE_AND_OVERHEAD = "(idle and overhead)"  # by job: cost no job caused
UNATTRIBUTED = "(unattributed)"  # by user: nobody known to charge


def effective_price(price_per_hour: float, low_priority: bool) -> float:
    """The hourly price a node pays: the catalog's dedicated price, discounted if low priority."""
    return price_per_hour * LOW_PRIORITY_FACTOR if low_priority else price_per_hour


def _name(state: object) -> str:
    # Accept NodeState members (a str Enum) as well as plain strings.
    return str(getattr(state, "value", state))


@dataclass(frozen=True)
class StateChange:
    at: datetime
    state: str
    job: str | None = None  # the job the node runs, for `running`


@dataclass(frozen=True)
class Segment:
    state: str
    job: str | None
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def segments(changes: Sequence[StateChange], now: datetime, since: datetime | None = None) -> list[Segment]:
    """The node's life as consecutive intervals, one per state change. The last one stays open
    until `now` unless the node was removed (removal ends it). Clipped to [since, now] when
    `since` is given; empty intervals are dropped."""
    ordered = sorted(changes, key=lambda c: c.at)  # stable: same-instant changes keep their order
    out: list[Segment] = []
    for i, change in enumerate(ordered):
        state = _name(change.state)
        if state == "removed":
            break
        end = ordered[i + 1].at if i + 1 < len(ordered) else now
        start = change.at if since is None else max(change.at, since)
        end = min(end, now)
        if end > start:
            out.append(Segment(state, change.job, start, end))
    return out


@dataclass(frozen=True)
class NodeCost:
    node_id: str
    compute: str
    price_per_hour: float  # effective: low-priority discount already applied
    seconds: float
    cost: float
    idle_seconds: float
    idle_cost: float  # idle state only
    by_job: Mapping[str, float]  # running cost per job
    overhead_cost: float  # preparing/leaving/preempted/unusable, and running with no job named
    by_job_seconds: Mapping[str, float] = field(default_factory=dict)  # running seconds per job

    # Invariant: cost == idle_cost + sum(by_job.values()) + overhead_cost


def node_cost(
    node_id: str,
    compute: str,
    price_per_hour: float,
    changes: Sequence[StateChange],
    now: datetime,
    since: datetime | None = None,
) -> NodeCost:
    """One node's cost over its life (or since `since`), split into idle, per job and overhead."""
    per_second = price_per_hour / 3600.0
    seconds = idle = overhead = 0.0
    job_seconds: dict[str, float] = {}
    for seg in segments(changes, now, since):
        seconds += seg.seconds
        if seg.state == "idle":
            idle += seg.seconds
        elif seg.state == "running" and seg.job:
            job_seconds[seg.job] = job_seconds.get(seg.job, 0.0) + seg.seconds
        else:
            overhead += seg.seconds
    return NodeCost(
        node_id=node_id,
        compute=compute,
        price_per_hour=price_per_hour,
        seconds=seconds,
        cost=seconds * per_second,
        idle_seconds=idle,
        idle_cost=idle * per_second,
        by_job={job: s * per_second for job, s in job_seconds.items()},
        overhead_cost=overhead * per_second,
        by_job_seconds=job_seconds,
    )


@dataclass(frozen=True)
class CostLine:
    key: str
    cost: float
    seconds: float
    idle_cost: float = 0.0


def _portions(node: NodeCost, dedicated_to_job: Mapping[str, str]) -> list[tuple[str | None, float, float, float]]:
    """(job or None, cost, seconds, idle_cost) shares of a node. A node made for one job
    (serverless) is that job's whole; otherwise each job's running share, plus the rest."""
    job = dedicated_to_job.get(node.compute)
    if job is not None:
        return [(job, node.cost, node.seconds, node.idle_cost)]
    out: list[tuple[str | None, float, float, float]] = [
        (j, c, node.by_job_seconds.get(j, 0.0), 0.0) for j, c in node.by_job.items()
    ]
    rest_seconds = node.seconds - sum(node.by_job_seconds.get(j, 0.0) for j in node.by_job)
    if rest_seconds > 0:  # summed, not subtracted from cost, so no rounding crumbs make a line
        out.append((None, node.idle_cost + node.overhead_cost, rest_seconds, node.idle_cost))
    return out


def report(
    nodes: Sequence[NodeCost],
    *,
    by: Literal["compute", "job", "user"],
    job_users: Mapping[str, str] | None = None,
    compute_users: Mapping[str, str] | None = None,
    dedicated_to_job: Mapping[str, str] | None = None,
) -> list[CostLine]:
    """Sum node costs into lines, most expensive first (ties by key).

    compute: each node's whole cost under its compute.
    job: each job's running cost; a node of a compute in `dedicated_to_job` (serverless nodes
      made for one job) puts its whole cost on that job; the rest goes to IDLE_AND_OVERHEAD.
    user: a job's share to its creator (job_users), the rest of a node's cost to its compute's
      owner (compute_users); UNATTRIBUTED where nobody is known, rather than a guess.
    """
    job_users, compute_users = job_users or {}, compute_users or {}
    dedicated_to_job = dedicated_to_job or {}
    if by not in ("compute", "job", "user"):
        raise ValueError(f"unknown cost grouping '{by}'; expected compute, job or user")
    sums: dict[str, list[float]] = {}

    def add(key: str, cost: float, seconds: float, idle_cost: float) -> None:
        line = sums.setdefault(key, [0.0, 0.0, 0.0])
        line[0] += cost
        line[1] += seconds
        line[2] += idle_cost

    for node in nodes:
        if by == "compute":
            add(node.compute, node.cost, node.seconds, node.idle_cost)
            continue
        for job, cost, seconds, idle_cost in _portions(node, dedicated_to_job):
            if by == "job":
                key = job if job is not None else IDLE_AND_OVERHEAD
            elif job is not None:
                key = job_users.get(job, UNATTRIBUTED)
            else:
                key = compute_users.get(node.compute, UNATTRIBUTED)
            add(key, cost, seconds, idle_cost)
    lines = [CostLine(key, cost, seconds, idle) for key, (cost, seconds, idle) in sums.items()]
    return sorted(lines, key=lambda line: (-line.cost, line.key))


def estimate(price_per_hour: float, nodes: int, timeout_s: float | None) -> dict:
    """What a job may cost, shown at submit: per hour for its nodes, and at most, when it has
    a timeout. Rounded to 6 decimals: it is a display figure, not an accounting one."""
    per_hour = price_per_hour * nodes
    most = per_hour * timeout_s / 3600.0 if timeout_s is not None and timeout_s > 0 else None
    return {
        "currency": "USD",
        "per_hour": round(per_hour, 6),
        "max": None if most is None else round(most, 6),
        "note": "indicative catalog prices",
    }
