"""The migrations build the schema the ORM rows describe: a column added to a row without its
migration (or the reverse) fails here, not on a user's upgraded workspace."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cible.server.store.db import Store
from cible.server.store.rows import Base


def test_migrated_schema_matches_the_rows(db_url: str):
    store = Store(db_url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.close()
