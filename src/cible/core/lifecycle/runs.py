"""What a runner saw of a job's run (kept apart from the models package so that the agent, which
reads it on every node, does not import every pydantic model at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cible.core.lifecycle.jobs import TERMINAL


@dataclass(frozen=True)
class RunObservation:
    """What a runner saw of one run."""

    history: list[str] = field(default_factory=list)  # statuses the launcher reported, oldest first
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    alive: bool = True  # False: the launcher is gone (it may have ended cleanly)
    queue_reason: str | None = None  # launched, but its engine (Slurm) holds it back: why

    @property
    def ended(self) -> bool:
        return bool(self.history) and self.history[-1] in TERMINAL
