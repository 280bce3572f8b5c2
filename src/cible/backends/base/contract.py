"""The plugin contract for engines that run a job's launcher.

A JobRunner takes a launch plan and makes `python -m cible.launch` run it
somewhere; it reports what the launcher reported. Every call is idempotent,
keyed by the job name, so a restarted server can call again safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RunObservation:
    """What a runner saw of one run."""

    history: list[str] = field(default_factory=list)  # statuses the launcher reported, oldest first
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    alive: bool = True  # False: the launcher is gone (it may have ended cleanly)

    @property
    def ended(self) -> bool:
        return bool(self.history) and self.history[-1] in ("Completed", "Failed", "Canceled")


class JobRunner(Protocol):
    name: str

    def prepare(self) -> None:
        """Get ready for work (warm pools, connections); called when the server starts."""

    def close(self) -> None:
        """Release what prepare() holds; running jobs are left running."""

    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        """Start the launcher for `plan`; return a JSON handle for the other calls."""

    def poll(self, handle: dict[str, Any]) -> RunObservation: ...

    def cancel(self, handle: dict[str, Any]) -> None:
        """Ask the run to stop; the launcher ends the process tree and reports Canceled."""

    def log_path(self, handle: dict[str, Any]) -> Path | None:
        """Where the user log is readable by the server, when it is local."""
