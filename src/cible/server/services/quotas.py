"""Workspace vCPU quotas: set, shown as `az ml compute list-usage`, enforced when nodes start,
and raised through requests that an admin approves.

No quota is set on a new workspace (no limit); `cible quota set` caps a VM family, the
dedicated total or the low-priority total. A node holds quota from the moment it is
requested until it is gone, so a cluster over quota waits with the reason shown.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from cible.core import catalog
from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, InvalidSpecError, NotFoundError
from cible.core.lifecycle.nodes import LIVE
from cible.core.planning.clusters import ClusterPlan
from cible.core.planning.quotas import (
    LOW_PRIORITY_SCOPE,
    TOTAL_SCOPE,
    NodeUse,
    QuotaLimits,
    Usage,
    list_usage,
    min_nodes_error,
    nodes_that_fit,
    usage_of,
)
from cible.server.services.paging import MAX_TOP, fetch, page
from cible.server.store.db import Store
from cible.server.store.rows import NodeRow, QuotaRequestRow, QuotaRow

log = logging.getLogger(__name__)

PENDING, APPROVED, DENIED = "Pending", "Approved", "Denied"
# Quotas and request ids are INTEGER columns (32-bit on PostgreSQL): larger numbers are refused
# as the client's mistake, never met as the driver's overflow.
MAX_VCPUS = 10_000_000
MAX_REQUEST_ID = 2**31 - 1


def families() -> list[str]:
    return sorted({size.family for size in catalog.all_sizes()})


@dataclass
class QuotaGate:
    """One reconciler pass's view: the limits and the use, grown by every node it admits."""

    limits: QuotaLimits
    usage: Usage

    def admit(self, plan: ClusterPlan, size: catalog.VmSize, *, low_priority: bool) -> str | None:
        """Cut `plan.launch` to what the quotas hold; returns why it was cut (the jobs' wait)."""
        if plan.launch <= 0:
            return None
        fit, why = nodes_that_fit(self.limits, self.usage, family=size.family, vcpus_per_node=size.vcpus,
                                  low_priority=low_priority, wanted=plan.launch)
        plan.launch = fit
        added = [NodeUse(size.family, size.vcpus, low_priority)] * fit
        self.usage = _plus(self.usage, added)
        return why


class QuotaService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._unreadable: set[str] = set()  # live node rows whose info is unusable (logged once)

    # -- reads -------------------------------------------------------------------------
    def snapshot(self) -> QuotaGate:
        with self.store.session() as session:
            return QuotaGate(self._limits(session), self._usage(session))

    def list_usage(self) -> dict[str, Any]:
        gate = self.snapshot()
        rows = list_usage(gate.limits, gate.usage, families())
        return {"value": rows, "count": len(rows), "next_skip": None}

    def show(self, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """The quotas set (a few scopes at most: bounded) and a page of the increase requests, oldest first."""
        with self.store.session() as session:
            quotas = {r.scope: r.vcpus for r in session.scalars(select(QuotaRow).order_by(QuotaRow.scope))}
            rows, total = fetch(session, select(QuotaRequestRow).order_by(QuotaRequestRow.id), skip, top)
            requests = page([_request(r) for r in rows], total, skip)
        return {"quotas": quotas, **requests,
                "note": "scopes without a quota have no limit; `cible compute list-usage` shows use against them"}

    def refuse_if_never_fits(self, size: catalog.VmSize, *, low_priority: bool, count: int, what: str,
                             field: str) -> None:
        """At create: a compute whose minimum could never start under the quotas is refused."""
        gate = self.snapshot()
        why = min_nodes_error(gate.limits, gate.usage, family=size.family, vcpus_per_node=size.vcpus,
                              low_priority=low_priority, count=count, what=what)
        if why:
            raise InvalidRequestError(why, details={"field": field})

    # -- writes ------------------------------------------------------------------------
    def set(self, scope: str, vcpus: int | None) -> dict[str, Any]:
        """Set a quota (None removes it: no limit)."""
        scope = _check_scope(scope)
        if vcpus is not None and not 0 <= vcpus <= MAX_VCPUS:
            raise InvalidRequestError(f"vcpus: a quota is 0 to {MAX_VCPUS} vCPUs", details={"field": "vcpus"})
        with self.store.session() as session:
            row = session.get(QuotaRow, scope)
            if vcpus is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(QuotaRow(scope=scope, vcpus=vcpus, updated_at=self.clock.now()))
            else:
                row.vcpus, row.updated_at = vcpus, self.clock.now()
        return self.show()

    def request(self, scope: str, vcpus: int, reason: str | None, user: str | None) -> dict[str, Any]:
        scope = _check_scope(scope)
        if not 1 <= vcpus <= MAX_VCPUS:
            raise InvalidRequestError(f"vcpus: ask for 1 to {MAX_VCPUS} vCPUs", details={"field": "vcpus"})
        with self.store.session() as session:
            current = session.get(QuotaRow, scope)
            if current is not None and current.vcpus >= vcpus:
                raise InvalidRequestError(f"vcpus: the {scope} quota is already {current.vcpus}; ask for more",
                                          details={"field": "vcpus"})
            row = QuotaRequestRow(scope=scope, current_vcpus=current.vcpus if current else None,
                                  requested_vcpus=vcpus, reason=reason, requested_by=user, status=PENDING,
                                  created_at=self.clock.now())
            session.add(row)
            session.flush()
            return _request(row)

    def decide(self, request_id: int, approve: bool, user: str | None) -> dict[str, Any]:
        """An admin approves (the quota becomes the requested vCPUs) or denies a request."""
        with self.store.session() as session:
            known = 1 <= request_id <= MAX_REQUEST_ID
            row = session.get(QuotaRequestRow, request_id, with_for_update=True) if known else None
            if row is None:
                raise NotFoundError(f"quota request {request_id} does not exist (`cible quota show` lists them)",
                                    details={"id": request_id})
            if row.status != PENDING:
                raise ConflictError(f"quota request {request_id} was already {row.status.lower()}")
            row.status, row.decided_at, row.decided_by = (APPROVED if approve else DENIED), self.clock.now(), user
            if approve:
                quota = session.get(QuotaRow, row.scope)
                if quota is None:
                    session.add(QuotaRow(scope=row.scope, vcpus=row.requested_vcpus, updated_at=self.clock.now()))
                else:
                    quota.vcpus, quota.updated_at = max(quota.vcpus, row.requested_vcpus), self.clock.now()
            return _request(row)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _limits(session) -> QuotaLimits:  # noqa: ANN001
        return QuotaLimits.from_scopes({r.scope: r.vcpus for r in session.scalars(select(QuotaRow))})

    def _usage(self, session) -> Usage:  # noqa: ANN001
        rows = session.execute(select(NodeRow.node_id, NodeRow.info).where(NodeRow.state.in_([s.value for s in LIVE])))
        return usage_of(use for node_id, info in rows if (use := self._node_use(node_id, info)) is not None)

    def _node_use(self, node_id: str, info: Any) -> NodeUse | None:
        """A live node's share of the quotas, from the info the reconciler wrote when it asked for it.
        A row whose info is unusable counts as its size in the catalog, or as nothing; it is logged
        once and never raises: every reconciler pass starts with a snapshot, so one bad row would
        otherwise stop every cluster."""
        info = info if isinstance(info, dict) else {}
        family, vcpus = info.get("family"), info.get("vcpus")
        if isinstance(family, str) and type(vcpus) is int and 0 <= vcpus <= MAX_VCPUS:
            return NodeUse(family, vcpus, bool(info.get("low_priority")))
        try:
            size = catalog.get_size(info["size"]) if isinstance(info.get("size"), str) else None
        except InvalidSpecError:
            size = None
        if node_id not in self._unreadable:
            self._unreadable.add(node_id)
            counted = f"counted as its size {size.name} ({size.vcpus} vCPUs)" if size else "counted as 0 vCPUs"
            log.warning("node %r: its family and vCPUs (%.60r, %.60r) are unusable for the quotas; it is %s",
                        node_id, family, vcpus, counted)
        return NodeUse(size.family, size.vcpus, bool(info.get("low_priority"))) if size else None


def _plus(usage: Usage, nodes: list[NodeUse]) -> Usage:
    added = usage_of(nodes)
    per_family = dict(usage.per_family)
    for family, vcpus in added.per_family.items():
        per_family[family] = per_family.get(family, 0) + vcpus
    return replace(usage, per_family=per_family, total=usage.total + added.total,
                   low_priority=usage.low_priority + added.low_priority)


def _check_scope(scope: str) -> str:
    known = [TOTAL_SCOPE, LOW_PRIORITY_SCOPE, *families()]
    by_lower = {k.lower(): k for k in known}
    if scope.lower() in by_lower:
        return by_lower[scope.lower()]
    close = difflib.get_close_matches(scope, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InvalidRequestError(f"scope: '{scope}' is not a quota; {hint}use 'total' (dedicated vCPUs), "
                              "'low_priority', or a VM family such as standardDSv2Family "
                              "(`cible compute list-sizes` shows each size's family)", details={"field": "scope"})


def _request(row: QuotaRequestRow) -> dict[str, Any]:
    return {"id": row.id, "scope": row.scope, "current_vcpus": row.current_vcpus,
            "requested_vcpus": row.requested_vcpus, "reason": row.reason, "requested_by": row.requested_by,
            "status": row.status, "created_at": row.created_at.isoformat(),
            "decided_at": row.decided_at.isoformat() if row.decided_at else None, "decided_by": row.decided_by}
