"""A cluster whose node provider cannot tell yet which nodes it holds (`list_nodes()` is None: its
engine not reached since the server started) is left alone by the cluster reconciler: its nodes
are neither written off nor replaced, nothing is launched, its jobs stay where they are. Once the
provider lists its nodes again, the passes go on as usual. The reconciler runs against a real
store with a fake provider and a frozen clock; its passes are made by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cible.backends.base.contract import NodeRequest, ProviderNode, ProviderStatus
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.reconciler import MAX_POLL_S, ClusterReconciler
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow, NodeStateRow
from cible.testing import FrozenClock
from cible.workspace import WorkspacePaths

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
HEARTBEAT_TIMEOUT_S = 30.0


class FakeProvider:
    """A node provider that lists what the test says and records what it is asked to do."""

    def __init__(self, name: str, listing: dict[str, ProviderNode] | None) -> None:
        self.name = name
        self.listing = listing
        self.on_node_gone: Callable[[], None] = lambda: None
        self.launched: list[NodeRequest] = []
        self.terminated: list[str] = []
        self.preempted: list[str] = []

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, available=True, reachable=self.listing is not None)

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        return None

    def launch(self, requests: list[NodeRequest]) -> None:
        self.launched.extend(requests)

    def terminate(self, node_ids: list[str]) -> None:
        self.terminated.extend(node_ids)

    def preempt(self, node_id: str) -> None:
        self.preempted.append(node_id)

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        return None if self.listing is None else dict(self.listing)

    def poll_errors(self) -> dict[str, str]:
        return {}

    def lists(self, *node_ids: str) -> None:
        self.listing = {node_id: ProviderNode(node_id) for node_id in node_ids}


@dataclass
class World:
    store: Store
    clock: FrozenClock
    reconciler: ClusterReconciler
    ray: FakeProvider
    local: FakeProvider

    def add_cluster(self, name: str, provider: str, min_instances: int, max_instances: int = 4) -> None:
        spec = {"name": name, "type": "amlcompute", "size": "Standard_DS1_v2", "tier": "dedicated",
                "min_instances": min_instances, "max_instances": max_instances, "idle_time_before_scale_down": 120,
                "cible": {"provider": provider, "overcommit": False, "on_node_failure": "requeue"}}
        with self.store.session() as session:
            session.add(ComputeRow(name=name, compute_type="amlcompute", spec=spec, provisioning_state="Succeeded",
                                   created_at=NOW, updated_at=NOW))

    def add_node(self, node_id: str, compute: str, provider: str, state: str, job_name: str | None = None) -> None:
        with self.store.session() as session:
            session.add(NodeRow(node_id=node_id, compute=compute, provider=provider, state=state, job_name=job_name,
                                address="127.0.0.1", info={"size": "Standard_DS1_v2"}, created_at=NOW,
                                updated_at=NOW, idle_since=NOW if state == "idle" else None, last_heartbeat=NOW))

    def add_job(self, name: str, compute: str, status: str, nodes: tuple[str, ...] = ()) -> None:
        run = None
        if nodes:
            run = {"attempts": 1, "handle": {"runner": "cluster", "job_name": name, "compute": compute, "attempt": 1,
                                             "nodes": list(nodes), "node_addrs": ["127.0.0.1"] * len(nodes),
                                             "master_port": 29500}}
        with self.store.session() as session:
            session.add(JobRow(name=name, display_name=name, experiment_name="exp", status=status,
                               compute=f"azureml:{compute}", target=compute, spec={}, warnings=[], run=run,
                               created_at=NOW, updated_at=NOW))

    def nodes(self, compute: str) -> dict[str, tuple[str, str, str | None]]:
        """Every node row of the cluster: id → (state, provider, job)."""
        with self.store.session() as session:
            rows = session.scalars(select(NodeRow).where(NodeRow.compute == compute)).all()
            return {r.node_id: (r.state, r.provider, r.job_name) for r in rows}

    def job_status(self, name: str) -> str:
        with self.store.session() as session:
            return session.get(JobRow, name).status

    def transitions(self) -> int:
        with self.store.session() as session:
            return session.scalar(select(func.count()).select_from(NodeStateRow))

    def target_node_count(self, compute: str) -> int | None:
        with self.store.session() as session:
            return session.get(ComputeRow, compute).observed.target_node_count


@pytest.fixture
def world(migrated_db_url: str, tmp_path: Path) -> Iterator[World]:
    store = Store(migrated_db_url)
    store.migrate()
    paths = WorkspacePaths(tmp_path / "ws")
    paths.ensure()
    clock = FrozenClock(NOW)
    ray = FakeProvider("ray", None)  # its engine not reached yet
    local = FakeProvider("local", {})
    reconciler = ClusterReconciler(store, paths, {"local": local, "ray": ray}, AgentHub(), clock,
                                   heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, prepare_timeout_s=600.0, seed=0)
    try:
        yield World(store, clock, reconciler, ray, local)
    finally:
        store.close()


@pytest.fixture
def busy_cluster(world: World) -> World:
    """A Ray cluster kept at three nodes holding two: n1 idle, n2 running j1; j2 waits in its queue."""
    world.add_cluster("rc", "ray", min_instances=3)
    world.add_node("n1", "rc", "ray", "idle")
    world.add_node("n2", "rc", "ray", "running", job_name="j1")
    world.add_job("j1", "rc", "Running", nodes=("n2",))
    world.add_job("j2", "rc", "Queued")
    return world


BEFORE = {"n1": ("idle", "ray", None), "n2": ("running", "ray", "j1")}


def passes_while_unseen(world: World, count: int = 3, step_s: float = 5.0) -> list[float]:
    """Passes with the provider unable to tell, the clock moving (within the heartbeat timeout)."""
    delays = []
    for _ in range(count):
        world.clock.advance(step_s)
        delays.append(world.reconciler.reconcile_once())
    return delays


def test_while_the_provider_cannot_tell_the_cluster_is_left_alone(busy_cluster: World):
    world = busy_cluster
    delays = passes_while_unseen(world)
    assert world.nodes("rc") == BEFORE  # not written off as gone, not replaced
    assert world.ray.launched == [] and world.ray.terminated == []  # below min_instances, yet nothing launched
    assert (world.job_status("j1"), world.job_status("j2")) == ("Running", "Queued")  # neither requeued nor placed
    assert world.transitions() == 0
    assert world.target_node_count("rc") is None  # not even the quiet-pass bookkeeping is written
    assert all(d <= MAX_POLL_S for d in delays)  # it looks again soon


def test_once_the_provider_lists_the_nodes_again_the_pass_proceeds(busy_cluster: World):
    world = busy_cluster
    passes_while_unseen(world)
    world.ray.lists("n1", "n2")
    world.clock.advance(1)
    world.reconciler.reconcile_once()
    nodes = world.nodes("rc")
    assert nodes["n1"] == ("running", "ray", "j2") and nodes["n2"] == ("running", "ray", "j1")
    assert world.job_status("j2") == "Preparing" and world.job_status("j1") == "Running"
    # Back to min_instances: one more node, launched on the cluster's own provider.
    new = [node_id for node_id in nodes if node_id not in BEFORE]
    assert len(new) == 1 and nodes[new[0]] == ("preparing", "ray", None)
    assert [r.node_id for r in world.ray.launched] == new and world.ray.launched[0].compute == "rc"
    assert world.ray.terminated == [] and world.local.launched == []
    assert world.target_node_count("rc") == 3


def test_a_node_missing_once_the_provider_lists_again_is_written_off_and_replaced(busy_cluster: World):
    world = busy_cluster
    passes_while_unseen(world)
    world.ray.lists("n1")  # n2 was lost while the provider could not tell
    world.clock.advance(1)
    world.reconciler.reconcile_once()
    nodes = world.nodes("rc")
    assert nodes["n2"][0] == "removed"
    assert world.job_status("j1") == "Queued"  # requeued: on_node_failure is requeue
    assert "n2" in world.ray.terminated  # its working root is cleaned up
    assert nodes["n1"] == ("running", "ray", "j2")
    assert len(world.ray.launched) == 2  # one in place of n2, one to reach min_instances
    assert {nodes[r.node_id][0] for r in world.ray.launched} == {"preparing"}


def test_a_provider_that_cannot_tell_holds_back_only_its_own_clusters(world: World):
    world.add_cluster("rc", "ray", min_instances=1)
    world.add_cluster("lc", "local", min_instances=1)
    world.clock.advance(1)
    world.reconciler.reconcile_once()
    assert world.ray.launched == [] and world.nodes("rc") == {}
    assert [r.compute for r in world.local.launched] == ["lc"]
    assert [state for state, _, _ in world.nodes("lc").values()] == ["preparing"]


def test_nodes_silent_while_the_provider_could_not_tell_are_judged_when_it_can(busy_cluster: World):
    # The pause is no excuse for an agent that stopped heartbeating: once listed, the usual timeout applies.
    world = busy_cluster
    passes_while_unseen(world, count=2, step_s=HEARTBEAT_TIMEOUT_S)
    assert world.nodes("rc") == BEFORE
    world.ray.lists("n1", "n2")
    world.reconciler.reconcile_once()
    nodes = world.nodes("rc")
    assert nodes["n1"][0] == "unusable" and nodes["n2"][0] == "unusable"
    assert world.job_status("j1") == "Queued"
