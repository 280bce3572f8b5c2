"""A downgrade keeps the rows it does not drop: on SQLite a batch `drop_column` rebuilds the table
(DROP TABLE, then rename a copy), and with foreign keys enforced that DROP would cascade into the
tables that reference it (a job's status history, a node's state history)."""

from __future__ import annotations

from sqlalchemy import text

from cible.server.store.db import Store, downgrade, migrate


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_downgrade_keeps_the_history_of_rebuilt_tables(db_url: str):
    store = Store(db_url)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO jobs (name, job_type, display_name, experiment_name, status, target, instance_count,"
                " spec, spec_version, warnings, created_at, updated_at, archived) VALUES ('j1', 'command', 'j1',"
                " 'e', 'Completed', 'local', 1, '{}', 1, '[]', :at, :at, false)"), {"at": "2024-01-01 00:00:00"})
            for before, after in ((None, "Queued"), ("Queued", "Running"), ("Running", "Completed")):
                conn.execute(text("INSERT INTO job_status_history (job_name, from_status, to_status, at)"
                                  " VALUES ('j1', :before, :after, :at)"),
                             {"before": before, "after": after, "at": "2024-01-01 00:00:00"})
            conn.execute(text("INSERT INTO nodes (node_id, compute, provider, state, info, created_at, updated_at)"
                              " VALUES ('n1', 'c', 'local', 'idle', '{}', :at, :at)"), {"at": "2024-01-01 00:00:00"})
            conn.execute(text("INSERT INTO node_state_history (node_id, to_state, at, job_name)"
                              " VALUES ('n1', 'idle', :at, 'j1')"), {"at": "2024-01-01 00:00:00"})

        downgrade(store.engine, "0005")  # rebuilds jobs and assets
        assert _count(store, "jobs") == 1
        assert _count(store, "job_status_history") == 3

        downgrade(store.engine, "0003")  # also rebuilds node_state_history, and jobs again
        assert _count(store, "job_status_history") == 3
        assert _count(store, "node_state_history") == 1

        migrate(store.engine)  # and back to head, the rows still there
        assert _count(store, "job_status_history") == 3
    finally:
        store.close()


def test_foreign_keys_are_enforced_again_after_migrating(db_url: str):
    store = Store(db_url)
    try:
        store.migrate()
        downgrade(store.engine, "0005")
        migrate(store.engine)
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO jobs (name, job_type, display_name, experiment_name, status, target, instance_count,"
                " spec, spec_version, warnings, created_at, updated_at, archived) VALUES ('j1', 'command', 'j1',"
                " 'e', 'Completed', 'local', 1, '{}', 1, '[]', :at, :at, false)"), {"at": "2024-01-01 00:00:00"})
            conn.execute(text("INSERT INTO job_status_history (job_name, to_status, at) VALUES ('j1', 'Queued', :at)"),
                         {"at": "2024-01-01 00:00:00"})
        with store.engine.begin() as conn:  # deleting a job still takes its history with it
            conn.execute(text("DELETE FROM jobs WHERE name = 'j1'"))
        assert _count(store, "job_status_history") == 0
    finally:
        store.close()
