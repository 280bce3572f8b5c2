"""The only source of "now". Inject a Clock; tests use cible.testing.FrozenClock."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC (what cible has always written). For values
    from outside the store: the store's columns already read back aware (server/store/columns.py)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class Clock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = Clock()
