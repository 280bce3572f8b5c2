"""Lists that answer even when one of their rows cannot be read.

A row whose record does not parse (UnreadableRecordError: written by a newer cible, or damaged)
fails alone. In a list it is answered as a stub: the fields the list's answer requires, read from
the row's plain columns, and an `error` that says why the rest cannot be shown. The other rows are
answered as usual. The common case stays one query per page; only a page that met an unreadable
row is read again row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, func, inspect, select
from sqlalchemy.orm import Session

from cible.core.errors import UnreadableRecordError
from cible.server.services.paging import fetch
from cible.server.store.rows import ComputeRow, JobRow, NodeRow

# What a stub shows of each kind of row: answer field -> row attribute (all plain columns).
STUB_FIELDS: dict[type, dict[str, str]] = {
    JobRow: {"name": "name", "type": "job_type", "display_name": "display_name",
             "experiment_name": "experiment_name", "status": "status"},
    ComputeRow: {"name": "name", "type": "compute_type", "provisioning_state": "provisioning_state"},
    NodeRow: {"node_id": "node_id", "node_state": "state", "current_job_name": "job_name"},
}


def fetch_items(session: Session, query: Select, skip: int, top: int,
                item: Callable[[Any], dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """`fetch` (a page of `query`, a select of one row class, and its total), each row made an
    answer by `item`; a row that cannot be read, or whose answer reads a record that cannot be read
    (a queued job's compute), is answered as a stub."""
    entity = query.column_descriptions[0]["entity"]
    mapper = inspect(entity)
    try:
        rows, total = fetch(session, query, skip, top)
    except UnreadableRecordError:  # read again row by row: the others are answered as usual
        keys = session.execute(query.with_only_columns(*mapper.primary_key).offset(skip).limit(top)).all()
        rows = [tuple(key) for key in keys]
        total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = []
    for row in rows:
        key = row if isinstance(row, tuple) else tuple(mapper.primary_key_from_instance(row))
        try:
            items.append(item(session.get(entity, key) if isinstance(row, tuple) else row))
        except UnreadableRecordError as error:
            items.append(_stub(session, entity, key, error))
    return items, total


def _stub(session: Session, entity: type, key: tuple[Any, ...], error: UnreadableRecordError) -> dict[str, Any]:
    fields = STUB_FIELDS[entity]
    mapper = inspect(entity)
    where = [column == value for column, value in zip(mapper.primary_key, key)]
    values = session.execute(select(*(getattr(entity, a) for a in fields.values())).where(*where)).one()
    return {**dict(zip(fields, values)), "error": error.to_dict()}
