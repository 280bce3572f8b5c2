"""The launcher's side of the state file: it appends each status and records the run's facts
(the format itself is in cible.runfiles, which the server and runners read).

A node's agent hands its launchers the write end of a pipe (CIBLE_WAKE_FD, taken by `take_wake_fd`):
each write of the state file puts a byte in it, so the agent's watcher reads the news at once
instead of at its next poll (a short job's end reaches the server tens of milliseconds sooner).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cible.runfiles import STATE_FILE, STATE_VERSION, read_state, utcnow, write_json_atomic

WAKE_FD_ENV = "CIBLE_WAKE_FD"
_wake_fd: int | None = None


def take_wake_fd() -> None:
    """Keep the agent's wake pipe, if it handed one, for this process and the launchers it forks; the
    variable is removed and the descriptor closed on exec, so jobs see neither."""
    global _wake_fd
    value = os.environ.pop(WAKE_FD_ENV, None)
    try:
        fd = int(value) if value else None
        if fd is not None:
            os.set_inheritable(fd, False)
            os.set_blocking(fd, False)
    except (ValueError, OSError):  # not a descriptor of ours: no wake-ups, the agent polls
        fd = None
    _wake_fd = fd


def _wake() -> None:
    if _wake_fd is None:
        return
    try:
        os.write(_wake_fd, b"!")
    except OSError:  # full (the watcher is behind: it reads everything on its pass) or the agent is gone
        pass


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
        _wake()

    def status(self, status: str, **facts: Any) -> None:
        self.state["history"].append({"status": status, "at": utcnow()})
        self.update(**facts)
