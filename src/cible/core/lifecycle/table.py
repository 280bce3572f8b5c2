"""The one check every transition table shares: is this move allowed, and if not, say which are."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from cible.core.errors import InvalidTransitionError


def check_move(table: Mapping[Enum, frozenset], current: Enum, target: Enum, what: str) -> None:
    """Raise InvalidTransitionError unless `table` allows `current` -> `target` (`what`: "job status" …)."""
    if target not in table[current]:
        allowed = ", ".join(sorted(s.value for s in table[current])) or "none (terminal)"
        raise InvalidTransitionError(
            f"{what} cannot go from {current.value} to {target.value}; allowed: {allowed}",
            details={"from": current.value, "to": target.value},
        )
