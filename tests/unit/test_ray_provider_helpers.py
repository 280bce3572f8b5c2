"""The `ray` node provider's pure parts: the resources a node holds on Ray, keeping a launch off
Ray nodes already used by its cluster, whether a size fits a Ray node, the workspace's namespace;
and the provider's decisions from what it has seen of Ray, without ever connecting to Ray
(prepare() is never called: the view of Ray is set on the provider directly)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cible.backends.base.contract import NodeRequest, ProviderNode, ProviderStatus
from cible.backends.ray.nodes import RayNode
from cible.backends.ray.provider import GB, RayNodeProvider, bundle_for, largest_fit, namespace_for, spread_selector
from cible.core.lifecycle.ray_nodes import RayNodeState

ADDRESS = "10.0.0.1:6379"


def request(vcpus: int = 4, memory_gb: float = 14.0, gpus: int = 0, node_id: str = "tvmps_0_d",
            compute: str = "c") -> NodeRequest:
    return NodeRequest(node_id=node_id, compute=compute, size="Standard_DS3_v2", vcpus=vcpus, memory_gb=memory_gb,
                       gpus=gpus)


def ray_node(cpu: float, memory_gb: float, gpu: float = 0) -> dict[str, float]:
    """A Ray node's total resources as `ray.nodes()` gives them (memory in bytes; GPU only when it has some)."""
    node = {"CPU": cpu, "memory": memory_gb * GB, "node:10.0.0.2": 1.0}
    if gpu:
        node["GPU"] = gpu
    return node


# -- bundle_for -----------------------------------------------------------------------------------


def test_a_bundle_holds_the_size_cpus_and_its_memory_in_bytes():
    bundle = bundle_for(request(vcpus=4, memory_gb=14.0))
    assert bundle == {"CPU": 4.0, "memory": float(14 * 2**30)}
    assert "GPU" not in bundle  # a CPU size asks Ray for no GPU at all


def test_a_fractional_memory_size_is_whole_bytes():
    bundle = bundle_for(request(vcpus=1, memory_gb=3.5))
    assert bundle["memory"] == float(int(3.5 * 2**30))
    assert bundle["memory"].is_integer()


def test_a_gpu_size_asks_for_its_gpus():
    assert bundle_for(request(vcpus=6, memory_gb=112.0, gpus=1)) == {"CPU": 6.0, "memory": float(112 * 2**30),
                                                                     "GPU": 1.0}
    assert bundle_for(request(vcpus=24, memory_gb=448.0, gpus=4))["GPU"] == 4.0


# -- spread_selector --------------------------------------------------------------------------------


def test_no_selector_when_no_ray_node_is_to_be_avoided():
    assert spread_selector(set(), 3) is None


def test_the_selector_keeps_every_bundle_off_the_cluster_ray_nodes_sorted():
    selector = spread_selector({"node-b", "node-a"}, 2)
    assert selector == [{"ray.io/node-id": "!in(node-a,node-b)"}, {"ray.io/node-id": "!in(node-a,node-b)"}]


@pytest.mark.parametrize("count", [1, 2, 5])
def test_one_selector_per_bundle(count: int):
    selector = spread_selector({"n1"}, count)
    assert len(selector) == count
    assert all(s == {"ray.io/node-id": "!in(n1)"} for s in selector)


# -- largest_fit ------------------------------------------------------------------------------------


def test_a_size_fits_when_one_ray_node_holds_all_of_it():
    nodes = [ray_node(2, 8), ray_node(16, 64)]
    assert largest_fit(nodes, 16, 64.0, 0)
    assert largest_fit(nodes, 1, 3.5, 0)


@pytest.mark.parametrize(("vcpus", "memory_gb", "gpus"), [
    (17, 8.0, 0),  # more CPUs than any node
    (2, 65.0, 0),  # more memory than any node
    (1, 1.0, 1),  # a GPU no node has
])
def test_a_size_does_not_fit_when_no_ray_node_holds_it(vcpus: int, memory_gb: float, gpus: int):
    assert not largest_fit([ray_node(2, 8), ray_node(16, 64)], vcpus, memory_gb, gpus)


def test_a_size_must_fit_on_one_ray_node_not_across_them():
    # 8 CPUs on the first, 64 GB on the second: together they would, neither does alone.
    assert not largest_fit([ray_node(8, 16), ray_node(2, 64)], 8, 64.0, 0)
    # The GPU node is too small in CPUs, the big node has no GPU.
    assert not largest_fit([ray_node(4, 32, gpu=1), ray_node(32, 128)], 8, 16.0, 1)
    assert largest_fit([ray_node(4, 32, gpu=1), ray_node(32, 128)], 4, 16.0, 1)


def test_nothing_fits_on_no_ray_nodes():
    assert not largest_fit([], 1, 1.0, 0)


# -- namespace_for ----------------------------------------------------------------------------------


def test_the_namespace_is_stable_for_a_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "ws"
    home.mkdir()
    namespace = namespace_for(home)
    assert namespace == namespace_for(home)
    assert namespace == namespace_for(tmp_path / "ws" / ".." / "ws")  # the same folder, spelt otherwise
    monkeypatch.chdir(tmp_path)
    assert namespace == namespace_for(Path("ws"))  # relative to where the server was started
    assert namespace.startswith("cible-") and len(namespace) == len("cible-") + 12


def test_two_workspaces_have_two_namespaces(tmp_path: Path):
    assert namespace_for(tmp_path / "a") != namespace_for(tmp_path / "b")


# -- RayNodeProvider, never connected ---------------------------------------------------------------


@pytest.fixture
def provider(tmp_path: Path) -> RayNodeProvider:
    return RayNodeProvider(ADDRESS, nodes_root=tmp_path / "ws" / "nodes", home=tmp_path / "ws", url=None, node_token=lambda n: "t")


def seen(provider: RayNodeProvider, *nodes: dict[str, float]) -> RayNodeProvider:
    """The provider as if its watcher had just seen Ray with these nodes alive."""
    provider._ray_nodes = list(nodes)
    provider._error = None
    return provider


def test_before_it_has_seen_ray_it_cannot_tell_which_nodes_exist(provider: RayNodeProvider):
    assert provider.list_nodes() is None  # "not seen yet" is not "gone"
    seen(provider, ray_node(4, 16))
    assert provider.list_nodes() is None  # connected is not enough: its nodes are not listed yet


def test_once_seen_an_empty_listing_is_empty_not_unknown(provider: RayNodeProvider):
    seen(provider, ray_node(4, 16))._seen_once = True
    assert provider.list_nodes() == {}


def test_the_listing_says_how_each_node_is(provider: RayNodeProvider):
    seen(provider, ray_node(4, 16))
    provider._seen_once = True
    s = RayNodeState
    provider._nodes = {node.node_id: node for node in [
        RayNode("pending", s.QUEUED, request=request(node_id="pending")),
        RayNode("up", s.RUNNING, info={"exit_code": None, "ip": "10.0.0.2"}),
        RayNode("idle-stop", s.EXITED, info={"exit_code": 0, "stopped_itself": "idle for 60 min without a server"}),
        # reported to the reconciler through poll_errors, and terminated
        RayNode("crashed", s.STOPPING, info={"exit_code": 3}),
        RayNode("evicted", s.PREEMPTED, info={"exit_code": None, "ip": "10.0.0.3"}),
        RayNode("stopped", s.GONE, info={"exit_code": None, "ip": "10.0.0.4"}),
        RayNode("never-seen", s.STOPPING),  # terminated without ever being launched or seen here
    ]}
    assert provider.list_nodes() == {
        "pending": ProviderNode("pending"),
        "up": ProviderNode("up", address="10.0.0.2"),
        "idle-stop": ProviderNode("idle-stop", alive=False, stopped_itself="idle for 60 min without a server"),
        "evicted": ProviderNode("evicted", alive=False, preempted=True),
    }


def test_while_ray_is_unreachable_no_size_is_refused(provider: RayNodeProvider):
    assert provider.cannot_hold("Standard_E64s_v3", 64, 432.0, 0, overcommit=False) is None
    provider._ray_nodes = [ray_node(2, 8)]  # seen once, then lost
    provider._error = "ConnectionError: GCS unreachable"
    assert provider.cannot_hold("Standard_E64s_v3", 64, 432.0, 0, overcommit=False) is None


def test_no_size_is_refused_before_any_ray_node_is_seen(provider: RayNodeProvider):
    seen(provider)
    assert provider.cannot_hold("Standard_E64s_v3", 64, 432.0, 0, overcommit=False) is None


def test_an_autoscaling_ray_refuses_no_size(tmp_path: Path):
    provider = RayNodeProvider(ADDRESS, nodes_root=tmp_path / "nodes", home=tmp_path, url=None, node_token=lambda n: "t",
                               autoscaling=True)
    seen(provider, ray_node(2, 8))
    assert provider.cannot_hold("Standard_NC24ads_A100_v4", 24, 220.0, 1, overcommit=False) is None


def test_a_size_no_ray_node_holds_is_refused_naming_the_largest(provider: RayNodeProvider):
    seen(provider, ray_node(2, 8), ray_node(16, 64), ray_node(4, 16))
    why = provider.cannot_hold("Standard_E64s_v3", 64, 432.0, 0, overcommit=False)
    assert why is not None
    assert f"Ray cluster at {ADDRESS}" in why
    assert "Standard_E64s_v3 node (64 CPU, 432 GB)" in why
    assert "its largest has 16 CPU, 64.0 GB, 0 GPU" in why


def test_a_gpu_size_refused_says_its_gpus(provider: RayNodeProvider):
    seen(provider, ray_node(16, 64))
    why = provider.cannot_hold("Standard_NC6s_v3", 6, 112.0, 1, overcommit=False)
    assert why is not None and "(6 CPU, 112 GB, 1 GPU)" in why


def test_a_size_that_fits_a_ray_node_is_accepted(provider: RayNodeProvider):
    seen(provider, ray_node(2, 8), ray_node(16, 64))
    assert provider.cannot_hold("Standard_D16s_v3", 16, 64.0, 0, overcommit=False) is None
    assert provider.cannot_hold("Standard_DS1_v2", 1, 3.5, 0, overcommit=False) is None


def test_overcommit_does_not_make_a_size_fit_a_ray_node(provider: RayNodeProvider):
    # Ray holds each node's resources: a node bigger than every Ray node never gets placed.
    seen(provider, ray_node(2, 8))
    assert provider.cannot_hold("Standard_D16s_v3", 16, 64.0, 0, overcommit=True) is not None


def test_status_before_connecting(provider: RayNodeProvider, tmp_path: Path):
    status = provider.status()
    assert isinstance(status, ProviderStatus)
    # The API's keys, as the provider list and `compute show` have always given them.
    assert status.model_dump(mode="json") == {
        "name": "ray", "available": True, "address": ADDRESS, "reachable": False, "error": "not connected yet",
        "ray_nodes": 0, "autoscaling": False, "namespace": namespace_for(tmp_path / "ws"), "waiting": {}}


def test_status_once_ray_is_seen(provider: RayNodeProvider):
    seen(provider, ray_node(2, 8), ray_node(16, 64))
    status = provider.status()
    assert (status.available, status.reachable, status.error, status.ray_nodes) == (True, True, None, 2)


def test_nothing_is_reported_failed_before_ray_is_seen(provider: RayNodeProvider):
    assert provider.poll_errors() == {}


def test_a_node_ray_has_no_room_for_says_so_with_the_nodes_behind_it(provider: RayNodeProvider):
    from cible.backends.ray.shapes import no_room

    node = request(vcpus=1, memory_gb=3.5)
    why = no_room(node, {"a", "b"}, autoscaling=False)
    assert why == ("Ray has no room yet for a node of 1 CPU, 3.5 GB on a Ray machine other than the 2 already "
                   "holding its nodes; it starts once Ray has room")
    assert no_room(request(vcpus=4, memory_gb=28, gpus=1), set(), autoscaling=True) == (
        "Ray has no room yet for a node of 4 CPU, 28 GB, 1 GPU on a Ray machine; Ray's autoscaler adds machines for it")
    s = RayNodeState
    provider._nodes = {
        "n0": RayNode("n0", s.PLACING, request=node, compute="cpu", waiting=why),
        "n1": RayNode("n1", s.QUEUED, request=node, compute="cpu"),
        "n2": RayNode("n2", s.QUEUED, request=node, compute="cpu"),
        "n3": RayNode("n3", s.STOPPING, request=node, compute="cpu"),  # stopped before its turn: not waiting
    }
    provider._queue["cpu"] = ["n1", "n2", "n3"]
    status = provider.status()
    assert status.waiting == {"cpu": why + " (2 more of its nodes wait behind it)"}
    assert status.waiting_for("cpu") == status.waiting["cpu"] and status.waiting_for("other") is None
