"""One page of a list: every list route answers {"value", "count", "next_skip"}, so no answer grows
with the workspace. Rows are paged in the query (OFFSET/LIMIT on a stable order), other listings
(files on disk, computed reports) by slicing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select

# Bounds the routes check (a 422, never a driver's overflow or an unbounded page).
MAX_SKIP = 2**31 - 1
MAX_TOP = 1000


def page(items: list[Any], total: int, skip: int) -> dict[str, Any]:
    # An empty page never points onward: a row deleted between the count and the fetch must not
    # send a client round the same skip forever.
    more = bool(items) and skip + len(items) < total
    return {"value": items, "count": total, "next_skip": skip + len(items) if more else None}


def fetch(session, query: Select, skip: int, top: int) -> tuple[Sequence[Any], int]:  # noqa: ANN001
    """The rows of `query` (ordered on a unique key, so pages neither overlap nor skip) in
    [skip, skip + top), and how many it has in all."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    return session.scalars(query.offset(skip).limit(top)).all(), total


def slice_page(items: list[Any], skip: int, top: int) -> dict[str, Any]:
    return page(items[skip:skip + top], len(items), skip)
