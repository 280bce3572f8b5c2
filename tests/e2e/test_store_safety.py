"""The real server process and its workspace: private file modes, and a database it refuses to
start on (damaged; missing or empty under existing runs) with a message that says what to do."""

from __future__ import annotations

import stat
from pathlib import Path

from e2e_support import Workspace


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_workspace_files_are_private(fresh_workspace: Workspace):
    ws = fresh_workspace
    ws.cible("server", "start")
    ws.json("job", "list")  # the server has written to its database
    assert mode(ws.home) == 0o700
    for name in ("cible.db", "cible.db-wal", "cible.db-shm", "server.log", "token"):
        assert mode(ws.home / name) == 0o600, name
    assert ws.server_info()["workspace"] == str(ws.home)


def test_a_damaged_or_vanished_database_is_refused_at_start(fresh_workspace: Workspace):
    ws = fresh_workspace
    ws.cible("server", "start")
    ws.cible("server", "stop")
    db = ws.home / "cible.db"
    with open(db, "r+b") as fh:  # the header and first pages overwritten
        fh.write(b"\x00garbage" * 1024)
    proc = ws.cible("server", "run", check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"the workspace database {db} is damaged" in proc.stderr and ".recover" in proc.stderr
    assert "Traceback" not in proc.stderr

    (ws.home / "runs" / "an-old-job").mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"")  # as after a failed copy: an empty file would read as a new, empty workspace
    proc = ws.cible("server", "run", check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"the workspace database {db} is empty" in proc.stderr and "move the workspace aside" in proc.stderr
    assert db.stat().st_size == 0  # left as it was
