"""Workspace vCPU quotas: set, shown as `az ml compute list-usage`, enforced when nodes start,
and raised through requests that an admin approves.

No quota is set on a new workspace (no limit); `cible quota set` caps a VM family, the
dedicated total or the low-priority total. A node holds quota from the moment it is
requested until it is gone, so a cluster over quota waits with the reason shown.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy import JSON, select, type_coerce

from cible.core import catalog
from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, InvalidSpecError, NotFoundError
from cible.core.lifecycle.nodes import LIVE
from cible.core.lifecycle.quota_requests import QuotaRequestStatus
from cible.core.models.records import NodeInfo
from cible.core.planning.quotas import (
    LOW_PRIORITY_SCOPE,
    TOTAL_SCOPE,
    NodeUse,
    QuotaHeadroom,
    QuotaLimits,
    Usage,
    list_usage,
    min_nodes_error,
    usage_of,
)
from cible.server.services.lifecycle import move_quota_request
from cible.server.services.paging import MAX_TOP, fetch, page
from cible.server.store.db import Store
from cible.server.store.rows import NodeRow, QuotaRequestRow, QuotaRow

log = logging.getLogger(__name__)

# Quotas and request ids are INTEGER columns (32-bit on PostgreSQL): larger numbers are refused
# as the client's mistake, never met as the driver's overflow.
MAX_VCPUS = 10_000_000
MAX_REQUEST_ID = 2**31 - 1


def families() -> list[str]:
    return sorted({size.family for size in catalog.all_sizes()})


class QuotaService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._unreadable: set[str] = set()  # live node rows whose info is unusable (logged once)

    # -- reads -------------------------------------------------------------------------
    def snapshot(self) -> QuotaHeadroom:
        """The quotas and what the live nodes use now: an input of the cluster reconciler's decide."""
        with self.store.session() as session:
            return QuotaHeadroom(self._limits(session), self._usage(session))

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
                                  requested_vcpus=vcpus, reason=reason, requested_by=user,
                                  status=QuotaRequestStatus.PENDING.value,
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
            if row.status != QuotaRequestStatus.PENDING.value:
                raise ConflictError(f"quota request {request_id} was already {row.status.lower()}")
            verdict = QuotaRequestStatus.APPROVED if approve else QuotaRequestStatus.DENIED
            move_quota_request(session, row, verdict, f"{verdict.value.lower()} by {user or 'an admin'}",
                               self.clock.now(), by=user)
            row.decided_by = user
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
        # The stored JSON, parsed here row by row: one node's unreadable info must not fail the query.
        raw_info = type_coerce(NodeRow.info, JSON)
        rows = session.execute(select(NodeRow.node_id, raw_info).where(NodeRow.state.in_([s.value for s in LIVE])))
        return usage_of(use for node_id, raw in rows if (use := self._node_use(node_id, raw)) is not None)

    def _node_use(self, node_id: str, raw: Any) -> NodeUse | None:
        """A live node's share of the quotas, from the info the reconciler wrote when it asked for it.
        A row whose info is unusable counts as its size in the catalog, or as nothing; it is logged
        once and never raises: every reconciler pass starts with a snapshot, so one bad row would
        otherwise stop every cluster."""
        info = _node_info(raw)
        if info.family is not None and info.vcpus is not None and 0 <= info.vcpus <= MAX_VCPUS:
            return NodeUse(info.family, info.vcpus, info.low_priority)
        # Unusable: what can still be read of it (its size) from the document as stored.
        stored = raw if isinstance(raw, dict) else {}
        try:
            size = catalog.get_size(stored["size"]) if isinstance(stored.get("size"), str) else None
        except InvalidSpecError:
            size = None
        if node_id not in self._unreadable:
            self._unreadable.add(node_id)
            counted = f"counted as its size {size.name} ({size.vcpus} vCPUs)" if size else "counted as 0 vCPUs"
            log.warning("node %r: its family and vCPUs (%.60r, %.60r) are unusable for the quotas; it is %s",
                        node_id, stored.get("family"), stored.get("vcpus"), counted)
        return NodeUse(size.family, size.vcpus, bool(stored.get("low_priority"))) if size else None


def _node_info(raw: Any) -> NodeInfo:
    """A node's stored info; an empty one when it does not parse (the caller says so)."""
    try:
        return NodeInfo.model_validate(raw if raw is not None else {})
    except ValidationError:
        return NodeInfo()


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
