"""The launcher's side of the state file: it appends each status and records the run's facts
(the format itself is in cible.runfiles, which the server and runners read)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cible.runfiles import STATE_FILE, STATE_VERSION, read_state, utcnow, write_json_atomic


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
