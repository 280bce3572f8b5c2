"""The migrations build the schema the ORM rows describe: a column added to a row without its
migration (or the reverse) fails here, not on a user's upgraded workspace."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from cible.server.store.db import Store
from cible.server.store.rows import Base, JobRow, job_is_live, job_is_queued


def test_migrated_schema_matches_the_rows(db_url: str):
    store = Store(db_url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.close()


@pytest.mark.parametrize(("where", "index"), [
    (lambda: [job_is_live()], "ix_jobs_live"),
    (lambda: [job_is_queued(), JobRow.target == "cpu"], "ix_jobs_queue"),
])
def test_the_passes_read_live_and_queued_jobs_through_their_partial_indexes(db_url: str, where, index: str):
    """`job_is_live` and `job_is_queued` must read as their indexes' predicates do, or every pass scans
    every job ever run."""
    store = Store(db_url)
    try:
        store.migrate()
        query = select(JobRow.name).where(*where()).order_by(JobRow.created_at, JobRow.name)
        sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as conn:
            if store.engine.dialect.name == "sqlite":
                plan = " ".join(row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            else:  # an empty table: a sequential scan would be cheaper, so rule it out
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(row[0] for row in conn.execute(text(f"EXPLAIN {sql}")))
        assert index in plan, plan
    finally:
        store.close()


def test_the_head_revision_the_store_checks_at_start_is_the_newest_migration(db_url: str):
    from alembic.script import ScriptDirectory

    from cible.server.store.db import HEAD_REVISION, MIGRATIONS_DIR, current_revision

    assert HEAD_REVISION == ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            assert current_revision(conn) is None  # never migrated
        store.migrate()
        with store.engine.connect() as conn:
            assert current_revision(conn) == HEAD_REVISION == MigrationContext.configure(conn).get_current_revision()
    finally:
        store.close()
