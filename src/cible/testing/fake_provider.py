"""A node provider in memory, for tests of the code that drives providers (reconcilers, services).

Deterministic: every call takes effect at once, in the calling thread (a terminated node is gone
when `terminate` returns, and `on_node_gone` has been called). The test controls what a real
engine would decide: a launch that fails, a node lost, a node that stops itself, an engine not
seen yet or unreachable, the capacity that bounds `cannot_hold`. It records every call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from cible.backends.base.contract import (
    ON_NODE_GONE, POLL_ERRORS, PREEMPT, HostCapacity, NodeRequest, ProviderBase, ProviderNode, ProviderStatus,
)


@dataclass(frozen=True)
class FakeCall:
    verb: str  # launch, terminate, preempt
    node_ids: tuple[str, ...]


class FakeNodeProvider(ProviderBase):
    capabilities = frozenset({PREEMPT, POLL_ERRORS, ON_NODE_GONE})

    def __init__(self, name: str = "fake", *, capacity: HostCapacity | None = None) -> None:
        self.name = name
        self.capacity = capacity or HostCapacity(vcpus=16, memory_gb=64.0, gpus=0)
        self.nodes: dict[str, ProviderNode] = {}
        self.requests: dict[str, NodeRequest] = {}  # what each listed node was launched as
        self.calls: list[FakeCall] = []
        self.seen = True  # False: list_nodes() cannot tell (engine not reached since start)
        self.error: str | None = None  # set: its engine is unreachable, saying this
        self._failing: dict[str, str] = {}  # node id → why its next launch fails
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- the contract ------------------------------------------------------------------
    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, available=True, reachable=self.error is None, error=self.error,
                              capacity=self.capacity)

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        c = self.capacity
        if vcpus > c.vcpus or memory_gb > c.memory_gb or gpus > c.gpus:
            return (f"a {size} node ({vcpus} CPU, {memory_gb:g} GB, {gpus} GPU) is bigger than the fake provider's "
                    f"capacity ({c.vcpus} CPU, {c.memory_gb:g} GB, {c.gpus} GPU)")
        return None

    def launch(self, requests: list[NodeRequest]) -> None:
        with self._lock:
            self.calls.append(FakeCall("launch", tuple(r.node_id for r in requests)))
            for request in requests:
                if request.node_id in self.nodes:
                    continue  # idempotent
                why = self._failing.pop(request.node_id, None)
                if why is not None:
                    self._errors[request.node_id] = why
                    continue
                self.nodes[request.node_id] = ProviderNode(request.node_id, address="127.0.0.1")
                self.requests[request.node_id] = request

    def terminate(self, node_ids: list[str]) -> None:
        with self._lock:
            self.calls.append(FakeCall("terminate", tuple(node_ids)))
            gone = [n for n in node_ids if self.nodes.pop(n, None) is not None]
            for node_id in gone:
                self.requests.pop(node_id, None)
        if gone:
            self.on_node_gone()

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        with self._lock:
            return dict(self.nodes) if self.seen else None

    # -- capabilities --------------------------------------------------------------------
    def preempt(self, node_id: str) -> None:
        with self._lock:
            self.calls.append(FakeCall("preempt", (node_id,)))
            node = self.nodes.get(node_id)
            if node is not None:
                self.nodes[node_id] = replace(node, alive=False, preempted=True)

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    # -- the test's controls ---------------------------------------------------------------------
    def fail_launch(self, node_id: str, why: str = "the fake provider was told to fail it") -> None:
        """The next launch of this node fails: it is not listed, and poll_errors says why."""
        with self._lock:
            self._failing[node_id] = why

    def lose(self, node_id: str, why: str = "its machine was lost") -> None:
        """The node vanishes, as a machine that died: no longer listed, and poll_errors says why."""
        with self._lock:
            if self.nodes.pop(node_id, None) is None:
                return
            self.requests.pop(node_id, None)
            self._errors[node_id] = why
        self.on_node_gone()

    def stop_itself(self, node_id: str, why: str = "idle without a server") -> None:
        """The node's agent ended itself (listed, not alive, saying why)."""
        with self._lock:
            if node_id in self.nodes:
                self.nodes[node_id] = replace(self.nodes[node_id], alive=False, stopped_itself=why)

    def launched(self) -> list[str]:
        """Every node id launch was asked for, in order (repeats included)."""
        return [node_id for call in self.calls if call.verb == "launch" for node_id in call.node_ids]
