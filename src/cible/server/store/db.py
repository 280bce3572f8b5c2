"""Engine, sessions and schema migrations (Alembic) for the workspace store.

Also the store's health: a SQLite file is checked before the server uses it (damaged, or missing
under a workspace that has runs: refused), a connection that cannot write is dropped so that the
server recovers by itself once the cause is gone, and database errors become a 503 that says why
without echoing SQL or its parameters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from cible.core.errors import ConcurrentUpdateError, StoreDamagedError, StoreUnavailableError
from cible.workspace import WorkspacePaths, restrict_mode

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 30
SQLITE_JOURNALS = ("-wal", "-shm", "-journal")
# SQLite errors after which a connection is not trusted to write again: one opened while the file
# was read-only stays read-only for its life; one that met an I/O error may hold a stale handle.
_CANNOT_WRITE = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN")
# PostgreSQL SQLSTATEs of the server, not of the request: read-only transaction (a replica, a
# read-only database), insufficient resources (disk full), connection lost, shutting down.
_PG_UNAVAILABLE = ("25006", "53", "08", "57P")
_CANNOT_WRITE_TEXT = ("readonly database", "disk i/o error", "disk is full", "unable to open database")
# Each attempt re-reads the row: a later one fails only if yet another writer committed within its
# short read-to-write window. Five leave a margin for bursts (several requests and a pass at once).
TRANSACT_ATTEMPTS = 5
T = TypeVar("T")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None: another database, or an in-memory one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database.startswith("file:"):
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def make_engine(url: str) -> Engine:
    # hide_parameters: a database error's text (logged) never holds the values of the request.
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we declare; SQLAlchemy's bare scheme means psycopg2.
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            # WAL lets readers (log streams, lists) go on while the reconciler writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)

    @event.listens_for(engine, "handle_error")
    def _drop_connection_that_cannot_write(ctx) -> None:  # noqa: ANN001
        # As a lost connection: SQLAlchemy discards it and every pooled one older than now.
        if _cannot_write(ctx.original_exception):
            ctx.is_disconnect = True

    return engine


def _cannot_write(exc: BaseException | None) -> bool:
    if _sqlstate(exc) in ("25006", "53100"):  # PostgreSQL: read-only transaction (a replica), disk full
        return True
    name = getattr(exc, "sqlite_errorname", None)  # Python 3.11+
    if name is not None:
        return name.startswith(_CANNOT_WRITE)
    return any(text in str(exc).lower() for text in _CANNOT_WRITE_TEXT)


# The newest migration's revision (migrations/versions/). A store already there is only read at start:
# no Alembic import (~130 ms of a server's start) and no migration script loaded. test_store_schema.py
# holds it to Alembic's own head, so a new migration cannot forget it.
HEAD_REVISION = "0017"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD_REVISION:
            return
    _alembic(engine, "upgrade", "head")


def current_revision(conn: Connection) -> str | None:
    """The store's revision as Alembic records it (None: a store never migrated)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` (an operator undoing an upgrade; the tests of the migrations)."""
    _alembic(engine, "downgrade", revision)


def _alembic(engine: Engine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # A connection outside any transaction: env.py turns SQLite's foreign keys off before the
    # migrations begin theirs (SQLite ignores the pragma inside one) and commits what they do.
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def store_error(exc: BaseException) -> StoreUnavailableError | None:
    """What a database error says of the store; None when it is not the store's state (a constraint,
    a bug). The reason is the driver's first line: never the SQL, never its parameters."""
    if isinstance(exc, PoolTimeoutError):
        reason = "every database connection is busy"
    elif (isinstance(exc, (OperationalError, InterfaceError)) or type(exc) is DatabaseError
          or _sqlstate(exc).startswith(_PG_UNAVAILABLE)):
        orig = exc.orig if exc.orig is not None else exc
        lines = str(orig).strip().splitlines()
        reason = (lines[0] if lines else type(orig).__name__)[:200]
    else:
        return None
    low = reason.lower()
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        hint = "make the database writable by the server (for SQLite: the file and its folder)"
    elif "full" in low:
        hint = "free disk space"
    elif "malformed" in low or "not a database" in low:
        hint = "the database is damaged: stop the server and restore it from a backup"
    elif "locked" in low or "busy" in low:
        hint = "retry in a moment"
    else:
        hint = "see server.log"
    return StoreUnavailableError(f"the workspace store cannot serve this request: {reason} ({hint}; the server "
                                 "recovers by itself once the cause is gone)", details={"reason": reason})


def concurrent_update_error(exc: StaleDataError) -> ConcurrentUpdateError:
    """A write refused by the version check, as the API says it (409): never SQL, never values."""
    return ConcurrentUpdateError(
        "the resource changed while this request was handled (another request or the server's own "
        "reconciler wrote it at the same time); nothing was changed: retry the request",
        details={"reason": type(exc).__name__})


def _sqlstate(exc: BaseException | None) -> str:
    """A PostgreSQL error's SQLSTATE ('' for others), of a driver error or of SQLAlchemy's wrapper."""
    return str(getattr(getattr(exc, "orig", exc), "sqlstate", None) or "")


def refuse_missing_database(url: str, paths: WorkspacePaths) -> None:
    """A workspace with runs whose SQLite file is gone or empty: starting would lay a new, empty
    database over its runs and data (every job, compute and asset forgotten), so refuse."""
    path = sqlite_file(url)
    if path is None or (path.is_file() and path.stat().st_size > 0) or not _has_content(paths):
        return
    state = "empty (0 bytes)" if path.exists() else "missing"
    raise StoreDamagedError(
        f"the workspace database {path} is {state}, but the workspace {paths.home} has runs or data; starting "
        f"would give it a new, empty database. Restore {path} from a backup, or move the workspace aside "
        f"(`mv {paths.home} {paths.home}.old`) to start a new one.", details={"path": str(path)})


def _has_content(paths: WorkspacePaths) -> bool:
    if paths.runs.is_dir() and any(paths.runs.iterdir()):
        return True
    return any(files for _, _, files in os.walk(paths.datastores))  # stops at the first folder with a file


def _make_private(path: Path) -> None:
    """The database holds every job's spec and environment: 0600 from its creation (SQLite gives its
    -wal and -shm files the database file's mode), and made so on an older workspace."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # an empty file is an empty database
    except FileExistsError:
        pass
    except OSError:  # no folder, or not ours: SQLite reports it when it opens the file
        return
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_JOURNALS)):
        restrict_mode(file, 0o600)


class Store:
    """Owns the engine and hands out sessions, one transaction each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.file = sqlite_file(url)
        if self.file is not None:
            _make_private(self.file)
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        self.check_integrity()
        migrate(self.engine)

    def check_integrity(self) -> None:
        """Refuse a damaged SQLite file (PRAGMA quick_check) before anything reads or writes it."""
        if self.file is None:
            return
        try:
            with self.engine.connect() as conn:
                rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA quick_check(5)")]
        except OperationalError as exc:  # locked, unreadable: not damage
            raise store_error(exc) from None
        except DatabaseError as exc:
            rows = [str(exc.orig or exc).splitlines()[0]]
        if rows == ["ok"]:
            return
        path = self.file
        raise StoreDamagedError(
            f"the workspace database {path} is damaged ({'; '.join(rows)[:300]}); the server will not start on "
            f"it. Restore it from a backup (server stopped: copy the backup to {path} and delete {path}-wal and "
            f"{path}-shm), or salvage what SQLite can read: `sqlite3 {path} .recover | sqlite3 {path}.recovered`, "
            f"then move {path}.recovered to {path}.", details={"path": str(path), "quick_check": rows})

    def write_problem(self) -> str | None:
        """Why the store cannot write now, or None: a write rolled back at once (for /health)."""
        try:
            with self.engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                # Health answers at once even while a writer holds the lock (the CLI waits 2 s for it).
                conn.exec_driver_sql("PRAGMA busy_timeout = 500" if sqlite else "SET LOCAL lock_timeout = '500ms'")
                try:
                    conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
                finally:
                    conn.rollback()
                    if sqlite and not conn.invalidated:  # (an invalidated one would reconnect: leave it)
                        conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        except SQLAlchemyError as exc:
            error = store_error(exc)
            reason = error.details["reason"] if error else type(exc).__name__
            # Locked: another transaction is writing, so the store can write.
            return None if "locked" in reason or "lock timeout" in reason else reason
        return None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def transact(self, fn: Callable[[Session], T], *, attempts: int = TRANSACT_ATTEMPTS) -> T:
        """`fn(session)` in one transaction, run again from a fresh read when a row it updates was
        changed by another writer since it read it (the version column: see rows.py). For a
        read-modify-write that races the reconcilers: it then neither loses their write nor fails
        for it. `fn` must do nothing outside the session (it may run more than once); act after.
        Still stale after `attempts`: ConcurrentUpdateError (a 409 that says to retry)."""
        for attempt in range(1, attempts + 1):
            try:
                with self._sessions.begin() as session:
                    return fn(session)
            except StaleDataError as exc:
                if attempt == attempts:
                    raise concurrent_update_error(exc) from None
        raise AssertionError("attempts must be at least 1")

    def close(self) -> None:
        self.engine.dispose()
