"""Small builders shared by the cluster planning tests."""

from __future__ import annotations

from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.clusters import ClusterConfig, NodeView
from cible.testing import FrozenClock


def cfg(**kw) -> ClusterConfig:
    """cpu-cluster, 0..2 nodes, 120 s idle time, 30 s heartbeat timeout, unless overridden."""
    return ClusterConfig(**{"name": "cpu-cluster", "min_instances": 0, "max_instances": 2,
                            "idle_time_before_scale_down": 120, "heartbeat_timeout_s": 30, **kw})


def node(clock: FrozenClock, node_id: str, state: str = "idle", **kw) -> NodeView:
    """A node seen now: idle since now, heartbeating unless it is still preparing."""
    now = clock.now()
    base = {"created_at": now, "last_heartbeat": None if state == "preparing" else now}
    if state == "idle":
        base["idle_since"] = now
    return NodeView(node_id=node_id, state=NodeState(state), **{**base, **kw})
