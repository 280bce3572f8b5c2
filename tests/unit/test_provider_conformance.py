"""The node-provider plugin contract: the conformance suite (cible.testing.conformance) on the
fake provider and on `local` (real agent processes, in a workspace of the test's own, told of a
server that is not there: they wait for it, which is all the suite needs); the fake's controls;
capabilities checked against the methods present; the registry's discovery by entry point, its
built-in fallback, and an unusable plugin listed with its reason; the typed status's API keys."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from cible.backends import registry
from cible.backends.base.contract import (
    PREEMPT, HostCapacity, NodeRequest, ProviderBase, ProviderContext, ProviderNode, ProviderStatus, supports,
)
from cible.backends.base.unavailable import UnavailableProvider
from cible.backends.local.provider import LocalNodeProvider
from cible.testing import kill_nodes
from cible.testing.conformance import NodeProviderConformance, capability_mismatches
from cible.testing.fake_provider import FakeNodeProvider

NO_SERVER = "http://127.0.0.1:9"  # discard: nothing answers, so the agents keep waiting for a server


class TestFakeProvider(NodeProviderConformance):
    timeout_s = 5.0

    @pytest.fixture
    def provider(self) -> Iterator[FakeNodeProvider]:
        yield FakeNodeProvider()


class TestLocalProvider(NodeProviderConformance):
    timeout_s = 30.0

    @pytest.fixture
    def provider(self, tmp_path: Path) -> Iterator[LocalNodeProvider]:
        home = tmp_path / "ws"
        home.mkdir()
        try:
            yield LocalNodeProvider(home / "nodes", home, NO_SERVER, node_token=lambda node_id: "token")
        finally:
            kill_nodes(home)


# -- the fake's controls ------------------------------------------------------------------------------


def request(node_id: str) -> NodeRequest:
    return NodeRequest(node_id=node_id, compute="c", size="Standard_DS1_v2", vcpus=1, memory_gb=3.5)


def test_the_fake_fails_a_launch_when_told_and_says_why():
    fake = FakeNodeProvider()
    fake.fail_launch("a", "no room")
    fake.launch([request("a"), request("b")])
    assert list(fake.list_nodes()) == ["b"]
    assert fake.poll_errors() == {"a": "no room"} and fake.poll_errors() == {}
    fake.launch([request("a")])  # only the next launch failed
    assert sorted(fake.list_nodes()) == ["a", "b"]
    assert fake.launched() == ["a", "b", "a"]


def test_the_fake_loses_a_node_and_preempts_another():
    fake = FakeNodeProvider()
    gone: list[None] = []
    fake.on_node_gone = lambda: gone.append(None)
    fake.launch([request("a"), request("b"), request("c")])
    fake.lose("a", "machine died")
    fake.preempt("b")
    fake.stop_itself("c", "idle")
    assert fake.list_nodes() == {"b": ProviderNode("b", alive=False, preempted=True, address="127.0.0.1"),
                                 "c": ProviderNode("c", alive=False, address="127.0.0.1", stopped_itself="idle")}
    assert fake.poll_errors() == {"a": "machine died"} and len(gone) == 1
    fake.terminate(["b", "c", "zzz"])
    assert fake.list_nodes() == {} and len(gone) == 2


def test_the_fake_can_be_unseen_or_unreachable_and_refuses_what_it_cannot_hold():
    fake = FakeNodeProvider(capacity=HostCapacity(vcpus=2, memory_gb=8, gpus=0))
    fake.seen, fake.error = False, "engine down"
    assert fake.list_nodes() is None
    assert fake.status().model_dump(mode="json") == {
        "name": "fake", "available": True, "reachable": False, "error": "engine down",
        "host": {"vcpus": 2, "memory_gb": 8.0, "gpus": 0}}
    assert fake.cannot_hold("Standard_DS3_v2", 4, 14.0, 0, overcommit=False)
    assert fake.cannot_hold("Standard_DS1_v2", 1, 3.5, 0, overcommit=False) is None


# -- capabilities -------------------------------------------------------------------------------------


class Lying(FakeNodeProvider):
    capabilities = frozenset({"prepare", "teleport"})  # no prepare() of its own; preempt() not declared


def test_capabilities_that_disagree_with_the_methods_are_named():
    problems = capability_mismatches(Lying())
    assert any("'teleport' is no known capability" in p for p in problems)
    assert "'prepare' is declared but the provider has no prepare() of its own" in problems
    assert "preempt() is defined but 'preempt' is not declared in capabilities" in problems
    assert "poll_errors() is defined but 'poll_errors' is not declared in capabilities" in problems


def test_a_provider_without_a_capability_refuses_the_call():
    unavailable = UnavailableProvider("x", "not configured")
    assert unavailable.capabilities == frozenset() and capability_mismatches(unavailable) == []
    assert not supports(unavailable, PREEMPT) and not supports(object(), PREEMPT)
    with pytest.raises(NotImplementedError, match="cannot preempt"):
        unavailable.preempt("n")
    assert unavailable.poll_errors() == {} and unavailable.list_nodes() is None


def test_the_real_providers_declare_what_they_have(tmp_path: Path):
    from cible.backends.ray.provider import RayNodeProvider

    local = LocalNodeProvider(tmp_path / "nodes", tmp_path, None, node_token=lambda n: "t")
    ray = RayNodeProvider("10.0.0.1:6379", nodes_root=tmp_path / "nodes", home=tmp_path, url=None,
                          node_token=lambda n: "t")
    assert capability_mismatches(local) == [] and capability_mismatches(ray) == []
    assert local.capabilities == {"preempt", "poll_errors", "on_node_gone", "size_notes", "prepare", "close"}  # warm agents
    assert ray.capabilities == {"prepare", "close", "preempt", "poll_errors", "on_node_gone"}


# -- the registry -------------------------------------------------------------------------------------


def context(tmp_path: Path) -> ProviderContext:
    return ProviderContext(nodes_root=tmp_path / "nodes", home=tmp_path, url=None, node_token=lambda n: "t")


def test_the_providers_are_found_by_entry_point():
    found = registry.discover()
    assert list(found) == ["kubernetes", "local", "ray", "slurm", "ssh"]
    assert found["local"].target == "cible.backends.local:make_provider"
    # The package is installed with its entry points (pyproject's [project.entry-points."cible.node_providers"]).
    for name in ("ray", "ssh", "kubernetes"):
        assert found[name].origin == "entry point of cible", "re-install cible: pip install -e '.[test,ray]'"


def test_a_stale_install_without_the_entry_points_falls_back_to_the_built_in_table(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    found = registry.discover()
    assert {name: (e.target, e.origin) for name, e in found.items()} == {
        "kubernetes": ("cible.backends.kubernetes:make_provider", "built in"),
        "local": ("cible.backends.local:make_provider", "built in"),
        "ray": ("cible.backends.ray:make_provider", "built in"),
        "slurm": ("cible.backends.slurm:make_provider", "built in"),
        "ssh": ("cible.backends.ssh:make_provider", "built in")}


def test_a_plugin_that_cannot_be_loaded_is_listed_unavailable_with_the_import_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    points = [EntryPoint("broken", "cible_no_such_plugin.provider:make_provider", registry.GROUP),
              EntryPoint("fake", "cible.testing.fake_provider:FakeNodeProvider", registry.GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == registry.GROUP else [])
    providers = registry.build_providers(context(tmp_path), {"ray": {"address": None}})
    assert list(providers) == ["broken", "fake", "kubernetes", "local", "ray", "slurm", "ssh"]
    broken = providers["broken"].status()
    assert not broken.available and not broken.reachable
    assert broken.error.startswith("its plugin cible_no_such_plugin.provider:make_provider cannot be loaded: "
                                   "ModuleNotFoundError: No module named 'cible_no_such_plugin'")
    assert broken.hint and providers["broken"].cannot_hold("s", 1, 1.0, 0, False)
    assert isinstance(providers["local"], LocalNodeProvider)
    assert providers["ray"].status().error.startswith("no Ray cluster is configured")  # its options reached it


def test_a_factory_that_raises_is_listed_unavailable(tmp_path: Path):
    def explode(context: ProviderContext) -> ProviderBase:
        raise RuntimeError("no credentials")

    entry = registry.ProviderEntry("boom", "x:y", "test")
    entry_load = registry.ProviderEntry.load
    try:
        registry.ProviderEntry.load = lambda self: explode  # type: ignore[method-assign]
        provider = registry.build(entry, context(tmp_path))
    finally:
        registry.ProviderEntry.load = entry_load  # type: ignore[method-assign]
    assert provider.status().error == "it cannot be made: RuntimeError: no credentials"


def test_ray_not_installed_is_unavailable_saying_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import importlib.util

    from cible.backends.ray import INSTALL_HINT

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    ray = registry.build(registry.discover()["ray"], registry.replace(context(tmp_path), options={"address": "h:1"}))
    assert isinstance(ray, UnavailableProvider) and ray.status().error == INSTALL_HINT


# -- the typed status keeps the API's keys ---------------------------------------------------------------


def test_a_status_dumps_only_the_fields_its_provider_filled():
    assert UnavailableProvider("ray", "why").status().model_dump(mode="json") == {
        "name": "ray", "available": False, "reachable": False, "error": "why"}
    with_hint = ProviderStatus(name="p", available=False, reachable=False, error="why", hint="fix")
    assert with_hint.model_dump(mode="json")["hint"] == "fix"
    assert list(ProviderStatus(name="r", available=True, reachable=True, address="a:1", waiting={})
                .model_dump(mode="json")) == ["name", "available", "address", "reachable", "error", "waiting"]
