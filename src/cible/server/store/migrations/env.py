"""Alembic environment: always run with a connection handed over by cible.server.store.db, outside
any transaction.

On SQLite a batch operation (add or drop a column) rebuilds the table: copy, DROP TABLE, rename.
With foreign keys enforced (db.py turns them on for every connection) that DROP deletes the rows
that reference the table by ON DELETE CASCADE, e.g. every job's status history. So migrations run
with foreign keys off, SQLite's own procedure for altering a table; the pragma is ignored inside a
transaction, hence it is set before the migrations begin theirs, and set back on after they commit.
"""

from alembic import context

from cible.server.store.rows import Base

connection = context.config.attributes["connection"]
sqlite = connection.dialect.name == "sqlite"
if sqlite:
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
try:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
finally:
    if sqlite:
        connection.rollback()  # (after a failed migration: the pragma needs no transaction open)
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
