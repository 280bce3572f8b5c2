"""Compute-cluster node states (Azure's `node_state` names) and their transition table.

The six live names are the ones `az ml compute list-nodes` reports. `removed` is
cible's own terminal state: the provider confirmed the node is gone. Its row is
kept for the status history, and listings leave it out.

Nothing assigns a node's state directly: the cluster reconciler applies the moves
in `ClusterPlan.node_transitions` through `check_transition`, one status-history
row per move.
"""

from __future__ import annotations

from enum import Enum

from cible.core.lifecycle.table import check_move


class NodeState(str, Enum):
    PREPARING = "preparing"
    IDLE = "idle"
    RUNNING = "running"
    LEAVING = "leaving"
    PREEMPTED = "preempted"
    UNUSABLE = "unusable"
    REMOVED = "removed"


N = NodeState

# Nodes that count toward max_instances and can hold or receive work. Leaving,
# preempted and unusable nodes are on their way out and do not count, so a
# replacement can start at once.
LIVE = frozenset({N.PREPARING, N.IDLE, N.RUNNING})

TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    # Booting: becomes idle on the agent's first heartbeat; unusable when it does not
    # get there in time; leaving when scaled away (above max, cluster deleted).
    N.PREPARING: frozenset({N.IDLE, N.LEAVING, N.PREEMPTED, N.UNUSABLE, N.REMOVED}),
    # Idle: running when a job is assigned; leaving on scale-down.
    N.IDLE: frozenset({N.RUNNING, N.LEAVING, N.PREEMPTED, N.UNUSABLE, N.REMOVED}),
    # Running: idle when its job ends. A drained node goes through idle, never
    # straight to leaving, so a job is never cut short by a scale-down.
    N.RUNNING: frozenset({N.IDLE, N.PREEMPTED, N.UNUSABLE, N.REMOVED}),
    # The three ways out end when the provider no longer lists the node.
    N.LEAVING: frozenset({N.REMOVED}),
    N.PREEMPTED: frozenset({N.REMOVED}),
    # No way back from unusable: its job was already requeued or failed and a
    # replacement launched; a late heartbeat does not resurrect it.
    N.UNUSABLE: frozenset({N.REMOVED}),
    N.REMOVED: frozenset(),
}


def is_live(state: NodeState | str) -> bool:
    return NodeState(state) in LIVE


def can_transition(current: NodeState | str, target: NodeState | str) -> bool:
    return NodeState(target) in TRANSITIONS[NodeState(current)]


def check_transition(current: NodeState | str, target: NodeState | str) -> None:
    check_move(TRANSITIONS, NodeState(current), NodeState(target), "node state")
