"""The warm pool's ledger: each warm agent's lifetime (cible.backends.local.warm) as a row, so the
cost report bills the capacity kept ahead of need, as a pre-started VM is billed.

A warm agent is billed at the size a serverless job gets by default on this machine (the first
of DEFAULT_SERVERLESS_SIZES it holds), whatever node it becomes: it stands for a VM of that size
kept running.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update

from cible.core.catalog.queries import VmSize
from cible.core.planning.costs import NodeCost, StateChange, node_cost
from cible.server.store.db import Store
from cible.server.store.rows import WarmSpanRow

WARM_POOL = "(warm pool)"  # its line in the cost report by compute


class WarmPoolLedger:
    def __init__(self, store: Store, size: Callable[[], VmSize]) -> None:
        self.store = store
        self.size = size  # read when the first warm agent starts: the catalog and the host are known by then

    def opened(self, at: datetime) -> int:
        size = self.size()
        with self.store.session() as session:
            row = WarmSpanRow(size=size.name, price_per_hour=size.price_per_hour, started_at=at, alive_at=at)
            session.add(row)
            session.flush()  # its id (the session commits as it closes)
            return row.id

    def closed(self, span: int, at: datetime) -> None:
        with self.store.session() as session:
            session.execute(update(WarmSpanRow).where(WarmSpanRow.id == span, WarmSpanRow.ended_at.is_(None))
                            .values(ended_at=at, alive_at=at))

    def alive(self, spans: list[int], at: datetime) -> None:
        with self.store.session() as session:
            session.execute(update(WarmSpanRow).where(WarmSpanRow.id.in_(spans), WarmSpanRow.ended_at.is_(None))
                            .values(alive_at=at))

    def close_left_open(self) -> int:
        """At a server's start: the spans a crash left open end when the pool last said they ran
        (their agents ended with that server). How many there were."""
        with self.store.session() as session:
            count = session.execute(update(WarmSpanRow).where(WarmSpanRow.ended_at.is_(None))
                                    .values(ended_at=WarmSpanRow.alive_at)).rowcount
            return count


def warm_costs(session, now: datetime, since: datetime | None = None) -> list[NodeCost]:  # noqa: ANN001
    """The warm agents' lifetimes as idle nodes of the compute WARM_POOL (since `since`, when given)."""
    query = select(WarmSpanRow)
    if since is not None:
        query = query.where((WarmSpanRow.ended_at.is_(None)) | (WarmSpanRow.ended_at > since))
    costs = []
    for row in session.scalars(query):
        changes = [StateChange(row.started_at, "idle")]
        if row.ended_at is not None:
            changes.append(StateChange(row.ended_at, "removed"))
        costs.append(node_cost(f"warm-{row.id}", WARM_POOL, row.price_per_hour, changes, now, since))
    return costs
