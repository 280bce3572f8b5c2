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

from pydantic import BaseModel, ValidationError
from sqlalchemy import JSON, Column, DateTime, Table, event
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from cible.core.clock import as_utc
from cible.core.errors import UnreadableRecordError


class UTCDateTime(TypeDecorator):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        # Also applies to comparisons (`created_at < cutoff`): SQLite compares the stored text, so
        # a cutoff in another zone must be moved to UTC first.
        return as_utc(value) if isinstance(value, datetime) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return as_utc(value) if isinstance(value, datetime) else value


class RecordJSON(TypeDecorator):
    """A typed record (a frozen pydantic model of cible.core.models.records) stored as JSON and
    parsed once, as the row is loaded. NULL reads as the record's defaults, so code never meets a
    missing record; in an `optional` column (a job's error) NULL reads as None. A stored document
    that does not parse raises UnreadableRecordError at load (a 503 that names the column and
    the problem, never a 500): that row fails alone (lists answer it as a stub, the reconcilers
    isolate each record), never silently with made-up values."""

    impl = JSON
    cache_ok = True

    def __init__(self, model: type[BaseModel], optional: bool = False) -> None:
        super().__init__()
        self.model = model
        self.optional = optional
        self.where = model.__name__  # "table.column" once the column is in its table (see below)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, dict):  # written by a migration or a test as plain JSON: checked all the same
            value = self.model.model_validate(value)
        return value.model_dump(mode="json", exclude_none=True)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None if self.optional else self.model()
        return read_record(self.model, value, self.where)

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return JSON()


@event.listens_for(Column, "after_parent_attach")
def _name_record_column(column: Column, table: Table) -> None:
    """A record's column learns its table and name, so that an unreadable document is named
    where it is stored ("jobs.run"), not only by its model."""
    if isinstance(column.type, RecordJSON):
        column.type.where = f"{table.name}.{column.name}"


def read_record(model: type[BaseModel], document: Any, where: str) -> Any:
    """`document` parsed as `model`; UnreadableRecordError (naming `where`, the problem and what to
    do) when it does not parse: a newer cible's schema_version, or a damaged document."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise unreadable_record(model, document, where, error) from None


def unreadable_record(model: type[BaseModel], document: Any, where: str,
                      error: ValidationError) -> UnreadableRecordError:
    first = error.errors()[0]
    problem = f"{'.'.join(str(p) for p in first['loc']) or 'document'}: {first['msg']}"
    field = model.model_fields.get("schema_version")
    known = field.default if field is not None else None
    stored = document.get("schema_version") if isinstance(document, dict) else None
    if isinstance(stored, int) and isinstance(known, int) and stored > known:
        cause = (f"it was written by a newer cible (schema_version {stored}; this release reads {known}): "
                 "upgrade cible to read it")
    else:
        cause = "it is damaged or was changed by hand: restore the workspace database from a backup"
    return UnreadableRecordError(
        f"the stored record {where} cannot be read ({problem}); {cause}. Only what needs this record fails.",
        details={"record": where, "problem": problem, "schema_version": stored})
