"""A node of the `ray` provider as the provider sees it, and its transition table.

This is the provider's own view of one node on Ray (a detached actor running the node's agent),
not the cluster's node state (`nodes.py`): the provider moves a node through these states only
with one function (`RayNodeProvider._move`), which checks the move here and appends a
`StateChange` to the node's history (kept in memory, and logged).

A node starts QUEUED when launched; RUNNING or EXITED when the provider finds its actor on Ray
without having launched it (a restarted server); STOPPING when asked to terminate a node it has
not seen (its working root, and its actor should Ray still hold one, are cleaned up all the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from cible.core.errors import InvalidTransitionError
from cible.core.lifecycle.table import check_move


class RayNodeState(str, Enum):
    QUEUED = "queued"  # launched: waits for its compute's earlier nodes to be placed
    PLACING = "placing"  # its placement group waits for a Ray machine with room for it
    STARTING = "starting"  # its actor was made on a machine; it has not answered yet
    RUNNING = "running"  # its actor answers and its agent runs
    EXITED = "exited"  # its actor answers, and its agent has ended (stopped itself, or crashed)
    STOPPING = "stopping"  # terminate asked: its agent, actor and working root go in the background
    PREEMPTED = "preempted"  # evicted at once: listed as preempted until terminated
    GONE = "gone"  # its actor and working root are gone (the record stays for its history)


R = RayNodeState

INITIAL = frozenset({R.QUEUED, R.RUNNING, R.EXITED, R.STOPPING})

# Not placed yet, or placed and not heard from: listed as a node on its way (alive, no address).
PENDING = frozenset({R.QUEUED, R.PLACING, R.STARTING})

# Ending on purpose: its actor's going is no loss, and it is not launched again.
LEAVING = frozenset({R.STOPPING, R.PREEMPTED})

TRANSITIONS: dict[RayNodeState, frozenset[RayNodeState]] = {
    # Waiting for its turn: placed next; or its actor answers already (a launch repeated after a
    # restart); or stopped or evicted before its turn; or gone (the provider closed, its actor died).
    R.QUEUED: frozenset({R.PLACING, R.RUNNING, R.EXITED, R.STOPPING, R.PREEMPTED, R.GONE}),
    # Waiting for room on Ray: its actor made; or placing failed (gone, saying why).
    R.PLACING: frozenset({R.STARTING, R.RUNNING, R.EXITED, R.STOPPING, R.PREEMPTED, R.GONE}),
    # Made, not heard from: it answers (its agent up or already ended), or its actor died first.
    R.STARTING: frozenset({R.RUNNING, R.EXITED, R.STOPPING, R.PREEMPTED, R.GONE}),
    # Up: its agent ends; or it is stopped, evicted, or lost with its actor or Ray machine.
    R.RUNNING: frozenset({R.EXITED, R.STOPPING, R.PREEMPTED, R.GONE}),
    # Its agent ended: a crash is stopped at once; a node that stopped itself waits for terminate.
    R.EXITED: frozenset({R.STOPPING, R.PREEMPTED, R.GONE}),
    # An eviction may overtake a graceful stop; either way it ends gone.
    R.STOPPING: frozenset({R.PREEMPTED, R.GONE}),
    R.PREEMPTED: frozenset({R.GONE}),
    # Terminal: a node id launched again is a new record (node ids are not reused by cible).
    R.GONE: frozenset(),
}


@dataclass(frozen=True)
class StateChange:
    """One move in a node's history: from which state (None: the record was made), to which, when, why."""

    at: datetime
    source: RayNodeState | None
    target: RayNodeState
    reason: str


def can_transition(current: RayNodeState | str, target: RayNodeState | str) -> bool:
    return RayNodeState(target) in TRANSITIONS[RayNodeState(current)]


def check_transition(current: RayNodeState | str | None, target: RayNodeState | str) -> None:
    """Raise InvalidTransitionError unless the move is allowed (`current` None: a new record)."""
    if current is None:
        target = RayNodeState(target)
        if target not in INITIAL:
            allowed = ", ".join(sorted(s.value for s in INITIAL))
            raise InvalidTransitionError(f"a ray node cannot start in {target.value}; allowed: {allowed}",
                                         details={"from": None, "to": target.value})
        return
    check_move(TRANSITIONS, RayNodeState(current), RayNodeState(target), "ray node state")
