"""What a compute instance's agent reports beyond its runs: the sessions it hosts, its disk,
and its own idle clock (the fallback that stops an instance cut off from its server).

A session is a file `<node root>/sessions/<kind>-<pid>` (kind: terminal, jupyter, ssh …)
whose process still runs: `cible compute connect-ssh` writes one for its shell, and any
server the instance hosts (Jupyter, sshd) registers its sessions the same way. While one
is open the instance is not idle.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cible.node.files import SESSIONS_DIR
from cible.node.proc import alive

# Walking the disk is not free: measured at most every DISK_EVERY_S, and a walk that took t seconds
# waits DISK_COST_FACTOR x t before the next (a home of many files is walked seldom, at <= 2 % CPU).
DISK_EVERY_S = 5.0
DISK_COST_FACTOR = 50


def session_file(root: Path, kind: str, pid: int) -> Path:
    return root / SESSIONS_DIR / f"{kind}-{pid}"


def open_sessions(root: Path) -> list[str]:
    """The sessions whose process still runs ("terminal (pid 42)"); stale files are removed."""
    found = []
    folder = root / SESSIONS_DIR
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        kind, _, pid = path.name.rpartition("-")
        if pid.isdigit() and alive(int(pid)):
            found.append(f"{kind} (pid {pid})")
        else:
            path.unlink(missing_ok=True)
    return found


def used_bytes(*folders: Path) -> int:
    total = 0
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass  # removed while walking
    return total


class Presence:
    """The instance side of a heartbeat: sessions, disk use, and when the agent last saw work."""

    def __init__(self, root: Path, persistent_dir: Path | None, disk_gb: float | None,
                 idle_shutdown_s: float | None) -> None:
        self.root = root
        self.persistent_dir = persistent_dir
        self.disk_gb = disk_gb
        self.idle_shutdown_s = idle_shutdown_s
        self.last_work = time.time()  # start, a run seen, a session seen
        self.last_activity: float | None = None
        self.stops_at_told: float | None = None  # the server's shutdown time (it knows snoozes)
        self._disk: dict[str, Any] | None = None
        self._disk_next = 0.0

    def report(self, busy: bool, gpus_busy: list[str] | None = None) -> dict[str, Any]:
        """`gpus_busy`: the node's GPUs at work (cible.node.gpus.busy): a notebook training on the GPU
        outside any job is activity, as a session is."""
        sessions = open_sessions(self.root)
        now = time.time()
        if sessions or gpus_busy:
            self.last_activity = now
        if sessions or busy or gpus_busy:
            self.last_work = now
        return {"sessions": sessions, "last_activity_at": _iso(self.last_activity), "disk": self.disk(now)}

    def disk(self, now: float) -> dict[str, Any] | None:
        if self.disk_gb is None:
            return None
        if self._disk is None or now >= self._disk_next:
            folders = [self.root, *([self.persistent_dir] if self.persistent_dir else [])]
            started = time.monotonic()
            used = used_bytes(*folders) / 1024**3
            self._disk = {"size_gb": self.disk_gb, "used_gb": round(used, 6),
                          "used_percent": round(100 * used / self.disk_gb, 2)}
            self._disk_next = now + max(DISK_EVERY_S, DISK_COST_FACTOR * (time.monotonic() - started))
        return self._disk

    def told(self, reply: dict[str, Any]) -> None:
        stops_at = reply.get("idle_shutdown_at")
        self.stops_at_told = datetime.fromisoformat(stops_at).timestamp() if stops_at else None

    def should_stop_alone(self, busy: bool) -> str | None:
        """Cut off from the server: stop once idle past the idle time (or the server's last word
        on when, which counts snoozes). Returns why, or None."""
        if self.idle_shutdown_s is None or busy or open_sessions(self.root):
            return None
        deadline = self.last_work + self.idle_shutdown_s
        if self.stops_at_told is not None:
            deadline = max(deadline, self.stops_at_told)
        if time.time() < deadline:
            return None
        return (f"the node stopped itself: idle for {self.idle_shutdown_s:g} s (its idle shutdown time) "
                "while it could not reach the workspace server")


def _iso(value: float | None) -> str | None:
    return datetime.fromtimestamp(value, timezone.utc).isoformat() if value is not None else None
