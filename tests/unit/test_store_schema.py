"""The migrations build the schema the ORM rows describe: a column added to a row without its
migration (or the reverse) fails here, not on a user's upgraded workspace."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from cible.server.store.db import Store
from cible.server.store.rows import Base, JobRow, job_is_live


def test_migrated_schema_matches_the_rows(db_url: str):
    store = Store(db_url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.close()


def test_the_live_jobs_are_read_through_their_partial_index(db_url: str):
    """`job_is_live` must read as ix_jobs_live's predicate does, or every pass scans every job ever run."""
    store = Store(db_url)
    try:
        store.migrate()
        query = select(JobRow.name).where(job_is_live()).order_by(JobRow.created_at, JobRow.name)
        sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as conn:
            if store.engine.dialect.name == "sqlite":
                plan = " ".join(row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            else:  # an empty table: a sequential scan would be cheaper, so rule it out
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(row[0] for row in conn.execute(text(f"EXPLAIN {sql}")))
        assert "ix_jobs_live" in plan, plan
    finally:
        store.close()
