"""The store in bad states: a connection that cannot write (503, then recovery without a restart),
a nearly full disk in /health, a damaged or vanished SQLite file refused at start, and the modes
of the workspace's private files."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import api_client, error_of
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from cible.server.store.db import Store, StoreDamagedError, refuse_missing_database
from cible.workspace import WorkspacePaths

HELLO = {"command": "echo hello", "compute": "local"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    # The workspace's own database (in $CIBLE_HOME), as the server uses it.
    with api_client(WorkspacePaths(tmp_path / "ws").database_url, tmp_path) as client:
        yield client


def test_a_store_that_cannot_write_is_a_503_and_recovers_without_a_restart(api: TestClient):
    store = api.app.state.store
    assert api.put("/api/v1/quotas/total", json={"vcpus": 8}).status_code == 200
    # As when the file was read-only (chmod 0444, a read-only mount) while connections were opened:
    # SQLite opens them read-only, and they stay so.
    read_only = {"on": True}

    @event.listens_for(store.engine, "do_connect")
    def _open(dialect, record, cargs, cparams):  # noqa: ANN001, ANN202, ARG001
        if read_only["on"]:
            return sqlite3.connect(f"file:{store.file}?mode=ro", uri=True, check_same_thread=False)
        return None

    store.engine.dispose()
    assert api.get("/api/v1/quotas").json()["quotas"] == {"total": 8}  # reads still work
    response = api.put("/api/v1/quotas/total", json={"vcpus": 16})
    assert response.status_code == 503, response.text
    error = error_of(response)
    assert error["code"] == "StoreUnavailable" and "readonly" in error["message"]
    assert "UPDATE" not in error["message"] and "INSERT" not in error["message"]  # no SQL
    health = api.get("/api/v1/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded" and "cannot write" in health.json()["reasons"][0]
    assert health.json()["error"]["code"] == "StoreUnavailable"

    read_only["on"] = False  # the cause is gone: the next write succeeds, no restart
    assert api.put("/api/v1/quotas/total", json={"vcpus": 16}).status_code == 200
    assert api.get("/api/v1/quotas").json()["quotas"] == {"total": 16}
    assert api.get("/api/v1/health").json() | {"pid": 0, "disk_free_bytes": 0} == {
        "status": "ok", "pid": 0, "workspace": str(api.app.state.settings.home), "disk_free_bytes": 0, "reasons": []}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a 0444 file")
def test_a_read_only_database_file_is_a_503_until_it_is_writable_again(api: TestClient):
    store = api.app.state.store
    store.file.chmod(0o444)
    store.engine.dispose()  # connections opened from now on are read-only
    try:
        response = api.put("/api/v1/jobs/j1", json=HELLO)
        assert response.status_code == 503 and error_of(response)["code"] == "StoreUnavailable"
        assert api.get("/api/v1/health").status_code == 503
    finally:
        store.file.chmod(0o600)
    assert api.put("/api/v1/jobs/j1", json=HELLO).status_code == 200
    assert api.get("/api/v1/health").status_code == 200


def test_a_full_database_is_a_503_and_writes_resume_when_there_is_room(api: TestClient):
    store = api.app.state.store
    full = {"on": True}

    @event.listens_for(store.engine, "connect")
    def _cap(dbapi_conn, record):  # noqa: ANN001, ANN202, ARG001
        if full["on"]:  # no page more than it has: SQLITE_FULL, "database or disk is full"
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    store.engine.dispose()
    response = api.put("/api/v1/jobs/j1", json={**HELLO, "description": "d" * 16000})
    assert response.status_code == 503, response.text
    assert "full" in error_of(response)["message"] and "free disk space" in error_of(response)["message"]
    full["on"] = False
    assert api.put("/api/v1/jobs/j1", json={**HELLO, "description": "d" * 16000}).status_code == 200


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_read_only_postgres_is_a_503_and_recovers_without_a_restart(db_url: str, tmp_path: Path):
    import psycopg

    database = db_url.rsplit("/", 1)[1]
    with api_client(db_url, tmp_path) as api, psycopg.connect(db_url, autocommit=True) as admin:
        assert api.put("/api/v1/quotas/total", json={"vcpus": 8}).status_code == 200
        admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')  # as on a replica
        api.app.state.store.engine.dispose()  # connections opened from now on are read-only
        response = api.put("/api/v1/quotas/total", json={"vcpus": 9})
        assert response.status_code == 503 and "read-only transaction" in error_of(response)["message"]
        assert api.get("/api/v1/health").status_code == 503
        admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
        assert api.put("/api/v1/quotas/total", json={"vcpus": 9}).status_code == 200  # no restart
        assert api.get("/api/v1/health").status_code == 200


def test_health_is_degraded_when_the_disk_is_nearly_full(tmp_path: Path):
    with api_client(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path, min_free_disk_bytes=1 << 60) as api:
        response = api.get("/api/v1/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "degraded" and "CIBLE_MIN_FREE_DISK" in body["reasons"][0]
        assert body["disk_free_bytes"] > 0


# -- refused at start -----------------------------------------------------------------------------


def _filled_database(path: Path) -> None:
    store = Store(f"sqlite:///{path}")
    store.migrate()
    with store.engine.begin() as conn:
        for i in range(300):
            conn.execute(text("INSERT INTO quotas (scope, vcpus, updated_at) VALUES (:s, 1, '2020-01-01')"),
                         {"s": f"scope-{i}-" + "x" * 200})
    store.close()  # the last connection checkpoints the WAL into the file


def test_a_damaged_database_is_refused_with_a_way_out(tmp_path: Path):
    paths = WorkspacePaths(tmp_path / "ws")
    paths.ensure()
    db = Path(paths.database_url.removeprefix("sqlite:///"))
    _filled_database(db)
    with open(db, "r+b") as fh:  # pages of the quotas table overwritten
        fh.seek(db.stat().st_size - 3 * 4096)
        fh.write(b"\xa5" * 4096)
    with pytest.raises(StoreDamagedError) as refused:
        with api_client(paths.database_url, tmp_path):
            pass
    message = refused.value.message
    assert f"the workspace database {db} is damaged" in message
    assert "from a backup" in message and f"sqlite3 {db} .recover" in message
    db.write_bytes(b"not sqlite at all" * 300)
    with pytest.raises(StoreDamagedError, match="file is not a database"):
        Store(paths.database_url).migrate()


def test_a_missing_or_empty_database_under_existing_runs_is_refused(tmp_path: Path):
    paths = WorkspacePaths(tmp_path / "ws")
    paths.ensure()
    db = paths.home / "cible.db"
    refuse_missing_database(paths.database_url, paths)  # a new workspace: fine
    (paths.runs / "old-job").mkdir()
    with pytest.raises(StoreDamagedError) as refused:
        refuse_missing_database(paths.database_url, paths)
    assert f"{db} is missing" in refused.value.message and f"mv {paths.home} {paths.home}.old" in refused.value.message
    db.touch()
    with pytest.raises(StoreDamagedError, match=r"is empty \(0 bytes\).*Restore .* from a backup"):
        refuse_missing_database(paths.database_url, paths)
    # Data in a datastore counts too; a database with content, or another database, is not this check's.
    (paths.runs / "old-job").rmdir()
    refuse_missing_database(paths.database_url, paths)
    (paths.blob_root / "ab").mkdir()
    (paths.blob_root / "ab" / "blob").write_bytes(b"x")
    with pytest.raises(StoreDamagedError):
        refuse_missing_database(paths.database_url, paths)
    refuse_missing_database("postgresql://u@localhost/cible", paths)
    _filled_database(db)
    refuse_missing_database(paths.database_url, paths)


# -- file modes -----------------------------------------------------------------------------------


def test_a_new_workspace_is_private(api: TestClient):
    home = api.app.state.settings.home
    assert api.put("/api/v1/jobs/j1", json=HELLO).status_code == 200
    assert mode(home) == 0o700
    for name in ("cible.db", "cible.db-wal", "cible.db-shm"):
        assert mode(home / name) == 0o600, name


def test_an_older_workspace_is_made_private_when_it_is_opened(tmp_path: Path):
    paths = WorkspacePaths(tmp_path / "ws")
    paths.home.mkdir(mode=0o755)
    db = paths.home / "cible.db"
    _filled_database(db)
    files = [db, paths.home / "cible.db-wal", paths.home / "cible.db-shm", paths.server_log]
    for path in files:
        path.touch()
        path.chmod(0o644)
    paths.home.chmod(0o755)
    with api_client(paths.database_url, tmp_path):
        assert mode(paths.home) == 0o700
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
