"""Durations from settings, made safe to add to a datetime.

A setting read from a stored spec may be absurd (10^29 s, inf, NaN: written before the model
refused it, or planted). `timedelta(seconds=1e29)` raises OverflowError, and so does adding a
merely huge one to a datetime, which would stop every pass of the reconciler that plans with
it. Clamped, an absurd idle time means what the user meant: "practically never".
"""

from __future__ import annotations

import math
from datetime import timedelta

# About 100 years: longer than any real wait, and `now + span` stays far below datetime.max.
MAX_SPAN_S = 100 * 365 * 86400.0


def span(seconds: float | int | None) -> timedelta:
    """`seconds` as a timedelta, clamped to [0, MAX_SPAN_S]; NaN, inf or a huge value is the max."""
    try:
        value = float(seconds or 0.0)
    except OverflowError:  # an int too large for a float (JSON keeps 10**400 exact)
        value = math.inf
    if math.isnan(value) or value > MAX_SPAN_S:
        return timedelta(seconds=MAX_SPAN_S)
    return timedelta(seconds=max(0.0, value))
