"""Pure decisions for a compute instance: is it idle, why not, when does it stop, what state
does it show.

An instance is a one-node machine kept on or off by its *power*: `on` (a node is kept),
`off` (no node), `restart` (the node goes, then power returns to on). Idle shutdown and
schedules only ever change the power; the cluster machinery does the rest.

Idle means: the node is up, runs no job, and hosts no session (terminal, Jupyter, SSH)
that its agent reports. The idle clock starts at the latest of: the node became free,
the last session was seen, the power was turned on. A snooze moves the stop, never
earlier. Peers burn users both ways here (never stopping, or stopping work in progress),
so every answer carries its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.durations import span

Power = Literal["on", "off", "restart"]
DEFAULT_WARNING_S = 300.0  # a warning is recorded this long before an idle shutdown


@dataclass(frozen=True, kw_only=True)
class InstanceView:
    power: Power
    idle_time_s: float | None  # None: no idle shutdown
    warn_before_s: float = DEFAULT_WARNING_S
    node_state: NodeState | None = None  # its live node's state; None when it has none
    job: str | None = None  # the job its node runs
    free_since: datetime | None = None  # when its node last became idle (free of jobs)
    sessions: Sequence[str] = ()  # what the agent reports open now ("terminal (pid 42)")
    last_activity_at: datetime | None = None  # when a session (or a GPU at work) was last seen
    gpus_busy: Sequence[str] = ()  # its node's GPUs at work now ("GPU 0 (87 %)"), a job's or not
    powered_on_at: datetime | None = None
    snoozed_until: datetime | None = None
    warned_for: datetime | None = None  # the shutdown time a warning was already recorded for


@dataclass(frozen=True)
class Idleness:
    idle: bool
    why_not: str | None = None  # why it is not idle (or why idle shutdown does not apply)
    idle_since: datetime | None = None
    stops_at: datetime | None = None  # when idle shutdown will stop it, if nothing happens
    warn: bool = False  # record the shutdown warning now
    stop: bool = False  # stop it now

    def as_dict(self) -> dict[str, object]:
        return {"idle": self.idle, "why_not": self.why_not,
                "idle_since": self.idle_since.isoformat() if self.idle_since else None,
                "stops_at": self.stops_at.isoformat() if self.stops_at else None}


def idleness(view: InstanceView, now: datetime) -> Idleness:
    """Whether the instance is idle now, why not, and when idle shutdown stops it."""
    if view.power != "on":
        return Idleness(False, "the instance is not running")
    if view.node_state in (None, NodeState.PREPARING):
        return Idleness(False, "the instance is starting")
    if view.job is not None or view.node_state == NodeState.RUNNING:
        return Idleness(False, f"job {view.job} is running on it" if view.job else "a job is running on it")
    if view.sessions:
        return Idleness(False, f"{_count(len(view.sessions), 'session')} open: {', '.join(view.sessions)}")
    if view.gpus_busy:
        return Idleness(False, f"its GPU is at work: {', '.join(view.gpus_busy)}")
    since = max(t for t in (view.free_since, view.last_activity_at, view.powered_on_at) if t is not None) \
        if any((view.free_since, view.last_activity_at, view.powered_on_at)) else now
    if view.idle_time_s is None:
        return Idleness(True, "idle shutdown is off (set idle_time_before_shutdown_minutes)", idle_since=since)
    stops_at = since + span(view.idle_time_s)  # clamped: an absurd stored idle time must not overflow
    if view.snoozed_until is not None and view.snoozed_until > stops_at:
        stops_at = view.snoozed_until
    stop = now >= stops_at
    warn = not stop and now >= stops_at - span(view.warn_before_s) and view.warned_for != stops_at
    return Idleness(True, None, idle_since=since, stops_at=stops_at, warn=warn, stop=stop)


def display_state(*, power: Power, deleting: bool, node_state: NodeState | None, ever_ready: bool,
                  job: str | None = None, start_failing: bool = False) -> str:
    """Azure's instance state from the power and its node: Creating, Starting, Running, JobRunning,
    Stopping, Stopped, Restarting, Deleting, and Failed while its node keeps failing to start (the
    reconciler goes on trying, with backoff: it may yet come up)."""
    if deleting:
        return "Deleting"
    if power == "restart":
        return "Restarting"
    if power == "off":
        return "Stopped" if node_state is None else "Stopping"
    if node_state in (None, NodeState.PREPARING):
        if start_failing:
            return "Failed"
        return "Starting" if ever_ready else "Creating"
    return "JobRunning" if job else "Running"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
