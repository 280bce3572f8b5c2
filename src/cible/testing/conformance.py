"""The conformance suite every node provider passes: the contract of backends/base/contract.py
checked against a real provider (or the fake), through its public members only.

Use it by subclassing `NodeProviderConformance` in a test module, with a `provider` fixture that
yields a provider ready for work (its engine reached: `list_nodes()` no longer None):

    class TestLocalProvider(NodeProviderConformance):
        @pytest.fixture
        def provider(self, tmp_path):
            yield LocalNodeProvider(...)

Providers act in the background (a node starts or goes some time after the call returns), so the
checks poll with a deadline (`timeout_s`) and never sleep a fixed time. Each test terminates the
nodes it launched. Node ids look like cible's (`tvmps_<hex>_d`), each in a compute of its own (so
no provider has to spread two of a test's nodes over two machines).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cible.backends.base.contract import (
    CAPABILITIES, METHOD_CAPABILITIES, ON_NODE_GONE, POLL_ERRORS, PREEMPT, NodeProvider, NodeRequest, ProviderBase,
    ProviderNode, ProviderStatus, supports,
)
from cible.testing import wait_until


def capability_mismatches(provider: NodeProvider) -> list[str]:
    """Where the declared capabilities and the members present disagree (empty: they agree).

    A ProviderBase subclass has every optional method (the defaults): one it declares must be its
    own (overridden), one it overrides must be declared. Any other provider must have what it declares."""
    declared = set(getattr(provider, "capabilities", frozenset()))
    problems = [f"{name!r} is no known capability ({', '.join(sorted(CAPABILITIES))})"
                for name in sorted(declared - CAPABILITIES)]
    for name in sorted(METHOD_CAPABILITIES):
        if isinstance(provider, ProviderBase):
            own = getattr(type(provider), name) is not getattr(ProviderBase, name)
        else:
            own = callable(getattr(provider, name, None))
        if name in declared and not own:
            problems.append(f"{name!r} is declared but the provider has no {name}() of its own")
        if own and name not in declared and isinstance(provider, ProviderBase):
            problems.append(f"{name}() is defined but {name!r} is not declared in capabilities")
    if ON_NODE_GONE in declared and not callable(getattr(provider, "on_node_gone", None)):
        problems.append("'on_node_gone' is declared but the provider has no on_node_gone to call")
    return problems


class NodeProviderConformance:
    """The checks, as pytest tests; a subclass gives the `provider` fixture and may tune the class attributes."""

    timeout_s: float = 60.0  # how long a node may take to start or to go
    size: str = "Standard_DS1_v2"
    vcpus: int = 1
    memory_gb: float = 1.0
    overcommit: bool = True  # the suite checks the contract, not this machine's room

    @pytest.fixture
    def provider(self) -> Iterator[NodeProvider]:  # pragma: no cover - given by the subclass
        raise NotImplementedError("a conformance test class gives the `provider` fixture")

    @pytest.fixture(autouse=True)
    def _terminate_what_was_launched(self, provider: NodeProvider) -> Iterator[None]:
        self._launched: list[str] = []
        yield
        if self._launched:
            provider.terminate(list(self._launched))
            try:
                self.settle(lambda: not set(self._launched) & set(self.listing(provider)), "the test's nodes to go")
            except AssertionError:
                pass  # the test's own verdict stands; the fixture that made the provider cleans up

    # -- helpers ------------------------------------------------------------------------
    def request(self, node_id: str | None = None, **changes: Any) -> NodeRequest:
        node_id = node_id or f"tvmps_{uuid.uuid4().hex[:24]}_d"
        fields = dict(node_id=node_id, compute=f"conf-{node_id[6:14]}", size=self.size, vcpus=self.vcpus,
                      memory_gb=self.memory_gb, overcommit=self.overcommit)
        return NodeRequest(**{**fields, **changes})

    def launch(self, provider: NodeProvider, *requests: NodeRequest) -> None:
        self._launched += [r.node_id for r in requests if r.node_id not in self._launched]
        provider.launch(list(requests))

    def settle(self, check: Callable[[], Any], message: str) -> Any:
        return wait_until(check, timeout=self.timeout_s, interval=0.1, message=message)

    def listing(self, provider: NodeProvider) -> dict[str, ProviderNode]:
        return self.settle(lambda: (nodes := provider.list_nodes()) is not None and {"nodes": nodes},
                           f"the {provider.name} provider to list its nodes")["nodes"]

    def up(self, provider: NodeProvider, node_id: str) -> ProviderNode:
        """The node listed alive with its address: started, not only on its way (listed, no address yet)."""
        return self.settle(lambda: (n := self.listing(provider).get(node_id)) is not None and n.alive
                           and n.address is not None and n, f"node {node_id} listed alive with an address")

    def gone(self, provider: NodeProvider, node_id: str) -> None:
        self.settle(lambda: node_id not in self.listing(provider), f"node {node_id} no longer listed")

    # -- the checks --------------------------------------------------------------------------
    def test_status_is_a_provider_status(self, provider: NodeProvider) -> None:
        status = provider.status()
        assert isinstance(status, ProviderStatus), type(status)
        assert status.name == provider.name and status.available
        assert {"name", "available", "reachable", "error"} <= set(status.model_dump(mode="json"))

    def test_capabilities_declared_match_methods_present(self, provider: NodeProvider) -> None:
        assert isinstance(provider.capabilities, frozenset)
        assert capability_mismatches(provider) == []

    def test_list_nodes_maps_node_ids_to_their_nodes(self, provider: NodeProvider) -> None:
        nodes = self.listing(provider)
        assert all(isinstance(n, ProviderNode) and n.node_id == node_id for node_id, n in nodes.items())

    def test_a_launched_node_is_listed_alive_then_up(self, provider: NodeProvider) -> None:
        request = self.request()
        self.launch(provider, request)
        listed = provider.list_nodes()  # at once: listed (alive, on its way or up), or not yet
        assert listed is None or request.node_id not in listed or listed[request.node_id].alive
        node = self.up(provider, request.node_id)
        assert not node.preempted and node.stopped_itself is None

    def test_launch_is_idempotent_by_node_id(self, provider: NodeProvider) -> None:
        request = self.request()
        self.launch(provider, request)
        self.launch(provider, request)  # at once, and again once it is up: still one node
        self.up(provider, request.node_id)
        self.launch(provider, request)
        if supports(provider, POLL_ERRORS):  # a second start of the same node would fail, saying so
            assert request.node_id not in provider.poll_errors()
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)  # one terminate ends it: no second node stayed behind
        assert request.node_id not in self.listing(provider)

    def test_list_nodes_shows_launched_nodes_and_not_terminated_ones(self, provider: NodeProvider) -> None:
        kept, ended = self.request(), self.request()
        self.launch(provider, kept, ended)
        self.up(provider, kept.node_id)
        self.up(provider, ended.node_id)
        provider.terminate([ended.node_id])
        self.gone(provider, ended.node_id)
        assert self.listing(provider)[kept.node_id].alive

    def test_terminate_is_idempotent(self, provider: NodeProvider) -> None:
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        provider.terminate([request.node_id])
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)
        provider.terminate([request.node_id])  # gone already
        unknown = self.request().node_id
        provider.terminate([unknown])  # never launched
        self.gone(provider, request.node_id)
        assert unknown not in self.listing(provider)

    def test_cannot_hold_refuses_an_impossible_size(self, provider: NodeProvider) -> None:
        why = provider.cannot_hold("Standard_Impossible", 100_000, 1_000_000.0, 1_000, overcommit=False)
        assert isinstance(why, str) and why

    def test_cannot_hold_accepts_the_suite_size(self, provider: NodeProvider) -> None:
        assert provider.cannot_hold(self.size, self.vcpus, self.memory_gb, 0, overcommit=True) is None

    def test_preempt_lists_the_node_as_preempted(self, provider: NodeProvider) -> None:
        if not supports(provider, PREEMPT):
            pytest.skip(f"the {provider.name} provider does not declare {PREEMPT!r}")
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        provider.preempt(request.node_id)
        node = self.settle(lambda: (n := self.listing(provider).get(request.node_id)) is not None and n.preempted
                           and n, f"node {request.node_id} listed as preempted")
        assert not node.alive
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)

    def test_poll_errors_returns_reasons_by_node_id(self, provider: NodeProvider) -> None:
        if not supports(provider, POLL_ERRORS):
            pytest.skip(f"the {provider.name} provider does not declare {POLL_ERRORS!r}")
        errors = provider.poll_errors()
        assert isinstance(errors, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in errors.items())

    def test_on_node_gone_is_called_when_a_terminated_node_goes(self, provider: NodeProvider) -> None:
        if not supports(provider, ON_NODE_GONE):
            pytest.skip(f"the {provider.name} provider does not declare {ON_NODE_GONE!r}")
        calls: list[None] = []
        provider.on_node_gone = lambda: calls.append(None)  # type: ignore[attr-defined]
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)
        self.settle(lambda: calls, "on_node_gone to be called")
