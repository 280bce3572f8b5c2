"""A quota increase request: pending until an admin approves or denies it, then final.

Nothing assigns a request's status directly: `move_quota_request`
(cible.server.services.lifecycle) checks the move here and writes a history row.
"""

from __future__ import annotations

from enum import Enum

from cible.core.lifecycle.table import check_move


class QuotaRequestStatus(str, Enum):
    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"


Q = QuotaRequestStatus

TRANSITIONS: dict[QuotaRequestStatus, frozenset[QuotaRequestStatus]] = {
    Q.PENDING: frozenset({Q.APPROVED, Q.DENIED}),
    Q.APPROVED: frozenset(),
    Q.DENIED: frozenset(),
}
TERMINAL = frozenset({Q.APPROVED, Q.DENIED})


def check_transition(current: QuotaRequestStatus | str, target: QuotaRequestStatus | str) -> None:
    check_move(TRANSITIONS, QuotaRequestStatus(current), QuotaRequestStatus(target), "quota request")
