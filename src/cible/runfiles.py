"""The formats a run folder and the blob store share between the server, the node runners and
the launcher: file names, the launcher's state file, atomic JSON writes, and where a blob lives.

The launcher writes the state file (atomically, after every step); the server's runner and the
node agents read it. It survives a server crash, so a restarted server replays what happened
while it was down. Stdlib only, so every side can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
PLAN_FILE = "plan.json"
HANDLE_FILE = "handle.json"  # the runner's handle, beside the plan
CANCEL_FILE = "cancel.requested"
# What a run leaves under RUN_DIR/artifacts/, in Azure's layout (all of it goes to the workspace).
ARTIFACT_DIRS = ("user_logs", "system_logs", "outputs", "logs")
STATE_VERSION = 1


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_json_atomic(path: Path, data: dict[str, Any], private: bool = False) -> None:
    """Replace `path` with `data` in one step; `private` files (holding a token) are 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        with open(run_dir / STATE_FILE, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        # Never half-written (atomic replace); a decode error means a foreign file.
        return None




def blob_path(blob_root: Path, sha256: str) -> Path:
    """Where a content-addressed blob (a file, or a snapshot's manifest) is kept."""
    return blob_root / sha256[:2] / sha256


def read_manifest(blob_root: Path, snapshot_id: str) -> dict[str, Any]:
    with open(blob_path(blob_root, snapshot_id), encoding="utf-8") as fh:
        return json.load(fh)


def sha256_of(path: Path, block_bytes: int = 1 << 20) -> str:
    """The file's sha256, read in blocks (a file moved between a node and its server is checked by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def regular_files(root: Path) -> list[tuple[str, Path]]:
    """(posix relative path, path) of every regular file under `root`, sorted. Links are neither
    followed nor listed (a link a job left may point at what the job could not read), nor are FIFOs
    or devices: what a node and its server move between them."""
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in names:
            path = Path(folder) / name
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    found.append((path.relative_to(root).as_posix(), path))
            except OSError:
                continue  # removed while listed
    return sorted(found)
