"""Column types shared by every row.

``UTCDateTime``: every timestamp column. SQLite has no time zone type: SQLAlchemy's
DateTime writes the wall time and reads back a naive datetime, so an answer built from
the value in memory (aware) and one read back (naive) would differ, ``+00:00`` or not.
PostgreSQL's ``timestamptz`` reads back in the session's zone. This type stores UTC and
always hands back an aware UTC datetime, on both. The column is still
``DateTime(timezone=True)`` in the database: the migrations are unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from cible.core.clock import as_utc


class UTCDateTime(TypeDecorator):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # Also applies to comparisons (`created_at < cutoff`): SQLite compares the stored text, so
        # a cutoff in another zone must be moved to UTC first.
        return as_utc(value) if isinstance(value, datetime) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return as_utc(value) if isinstance(value, datetime) else value
