"""The run directory's state file: what a launcher reports about its run.

The launcher writes it (atomically, after every step); the server's runner and,
later, node agents read it. It survives a server crash, so a restarted server
replays what happened while it was down. Stdlib only.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
PLAN_FILE = "plan.json"
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


class StateWriter:
    """Appends statuses to the run's history and records the run's facts."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        self.state: dict[str, Any] = read_state(run_dir) or {
            "version": STATE_VERSION,
            "history": [],
            "launcher_pid": os.getpid(),
        }

    def update(self, **facts: Any) -> None:
        self.state.update(facts)
        write_json_atomic(self.path, self.state)

    def status(self, status: str, **facts: Any) -> None:
        self.state["history"].append({"status": status, "at": utcnow()})
        self.update(**facts)
