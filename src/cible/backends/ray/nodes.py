"""One record per node of the `ray` provider: its state (`core/lifecycle/ray_nodes.py`), what it was
launched as, where it was placed, what its actor last said, and its history of moves.

The provider keeps these under its lock and changes `state` only through its `_move`; the
record itself only answers questions: how the node is listed, which Ray machine it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cible.backends.base.contract import NodeRequest, ProviderNode
from cible.core.lifecycle.ray_nodes import PENDING, RayNodeState, StateChange


@dataclass
class RayNode:
    node_id: str
    state: RayNodeState
    request: NodeRequest | None = None  # what it was launched as (None: found on Ray, or only terminated)
    compute: str | None = None
    machine: str | None = None  # the Ray machine (node id) it was placed on
    info: dict[str, Any] | None = None  # what its actor last said (CibleNode.info); None: not answering
    seen: bool = False  # Ray has shown its actor (answering, dead or gone) at least once
    waiting: str | None = None  # while placing: why Ray has no room for it yet
    history: list[StateChange] = field(default_factory=list)

    def listed(self) -> ProviderNode | None:
        """The node as `list_nodes` gives it, or None when it is not listed."""
        if self.state is RayNodeState.GONE:
            return None
        if self.state is RayNodeState.PREEMPTED:
            return ProviderNode(self.node_id, alive=False, preempted=True)
        if self.info is None:
            # On its way (or being stopped before Ray ever showed its actor): listed until it goes.
            on_its_way = self.state in PENDING or (self.state is RayNodeState.STOPPING and self.request is not None
                                                   and not self.seen)
            return ProviderNode(self.node_id) if on_its_way else None
        if self.info.get("exit_code") is None:
            return ProviderNode(self.node_id, address=self.info.get("ip"))
        if self.info.get("stopped_itself"):
            return ProviderNode(self.node_id, alive=False, stopped_itself=self.info["stopped_itself"])
        return None  # crashed: reported through poll_errors, and stopped

    def holds_machine(self) -> str | None:
        """The Ray machine this node holds (for keeping its compute's next nodes off it)."""
        if self.state is RayNodeState.GONE:
            return None
        if self.info is not None:
            return self.info.get("ray_node_id")
        return None if self.seen else self.machine

    def crashed(self) -> bool:
        """Its agent ended by itself, without saying it stopped itself (idle without a server)."""
        return bool(self.info) and self.info.get("exit_code") is not None and not self.info.get("stopped_itself")
