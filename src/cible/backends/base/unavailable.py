"""A node provider cible knows but cannot use here (its engine not installed or not configured,
or its plugin failed to load).

It is listed with the reason and the fix; a compute that asks for it is refused at create with
the same words; the nodes of an existing compute on it are left alone (neither lost nor
started: `list_nodes()` cannot tell) until the provider is back. It declares no capability.
"""

from __future__ import annotations

from cible.backends.base.contract import NodeRequest, ProviderBase, ProviderNode, ProviderStatus


class UnavailableProvider(ProviderBase):
    def __init__(self, name: str, reason: str, hint: str | None = None) -> None:
        self.name = name
        self.reason = reason
        self.hint = hint

    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, available=False, reachable=False, error=self.reason, hint=self.hint)

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        return f"the {self.name} node provider is unavailable: {self.reason}"

    def launch(self, requests: list[NodeRequest]) -> None:
        pass  # never called: list_nodes() says it cannot tell, so its clusters are left alone

    def terminate(self, node_ids: list[str]) -> None:
        pass

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        return None
