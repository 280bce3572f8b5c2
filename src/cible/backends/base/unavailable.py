"""A node provider cible knows but cannot use here (its engine not installed or not configured).

It is listed with the reason and the fix; a compute that asks for it is refused at create with
the same words; the nodes of an existing compute on it are left alone (neither lost nor
started) until the provider is back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cible.backends.base.contract import NodeRequest, ProviderNode


class UnavailableProvider:
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        self.on_node_gone: Callable[[], None] = lambda: None

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "available": False, "reachable": False, "error": self.reason}

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        return f"the {self.name} node provider is unavailable: {self.reason}"

    def launch(self, requests: list[NodeRequest]) -> None:
        pass  # never called: list_nodes() says it cannot tell, so its clusters are left alone

    def terminate(self, node_ids: list[str]) -> None:
        pass

    def preempt(self, node_id: str) -> None:
        pass

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        return None

    def poll_errors(self) -> dict[str, str]:
        return {}
