"""One bad compute, node or provider call does not stop the cluster reconciler: a compute whose pass
raises (planted straight into the database) records why in its provisioning_errors and backs off
alone; a node whose launch raises is removed through the node table, saying why; a provider whose
listing raises holds back its own clusters only; an instance whose own pass raises says so (keeping
nothing of it) and still gets its node; an absurd idle time (10^29 s, planted past the spec's bound)
is that compute's failure, said as such, and the longest the spec allows overflows nothing. Real store,
fake providers, a frozen clock; passes made by hand. A live node row whose info the quotas cannot
read counts as its size in the catalog (or as nothing) instead of stopping every cluster's pass."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from test_provider_unseen import FakeProvider

from cible.backends.base.contract import NodeRequest, ProviderNode
from cible.core.models.computes import MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S
from cible.core.models.records import ComputeStatus
from cible.server.clusters import reconciler as reconciler_module
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.reconciler import MAX_POLL_S, ClusterReconciler
from cible.server.services.lifecycle import move_power
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow, NodeStateRow, QuotaRow
from cible.testing import FrozenClock
from cible.workspace import WorkspacePaths

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SIZE = "Standard_DS1_v2"


class RaisingProvider(FakeProvider):
    """A fake provider that can be told to raise: on listing, on terminating (once), or on
    launching a node it was asked to refuse (the first node of the first launch, by default)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, {})
        self.listing_raises = False
        self.terminate_raises = 0
        self.refuse: set[str] | None = None  # None: refuse the first node it is asked for
        self.terminate_calls: list[list[str]] = []

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        if self.listing_raises:
            raise ConnectionError("the engine hung up")
        return super().list_nodes()

    def launch(self, requests: list[NodeRequest]) -> None:
        if self.refuse is None:
            self.refuse = {requests[0].node_id}
        if any(r.node_id in self.refuse for r in requests):
            raise OSError(f"cannot start {sorted(self.refuse)[0]}")
        super().launch(requests)
        self.listing.update({r.node_id: _listed(r.node_id) for r in requests})  # its agent runs

    def terminate(self, node_ids: list[str]) -> None:
        self.terminate_calls.append(list(node_ids))
        if self.terminate_raises:
            self.terminate_raises -= 1
            raise TimeoutError("terminate timed out")
        super().terminate(node_ids)


@dataclass
class Bench:
    store: Store
    clock: FrozenClock
    reconciler: ClusterReconciler
    local: RaisingProvider
    ray: RaisingProvider

    def plant(self, name: str, *, kind: str = "amlcompute", **spec: Any) -> None:
        """A compute row written straight to the store, whatever its spec says."""
        scaling = {"min_instances": 0, "max_instances": 2, "idle_time_before_scale_down": 120}
        spec = {"name": name, "type": kind, "size": SIZE, **(scaling if kind == "amlcompute" else {}),
                "cible": {"provider": "local"}, **spec}
        with self.store.session() as session:
            session.add(ComputeRow(name=name, compute_type=kind, spec=spec, provisioning_state="Succeeded",
                                   created_at=NOW, updated_at=NOW))

    def node(self, node_id: str, compute: str, state: str = "idle", info: Any = None) -> None:
        """A node row; `info` is written as raw JSON, whatever it holds (the row type would refuse it)."""
        with self.store.session() as session:
            session.add(NodeRow(node_id=node_id, compute=compute, provider="local", state=state, address="127.0.0.1",
                                info={"size": SIZE}, created_at=NOW, updated_at=NOW, idle_since=NOW,
                                last_heartbeat=NOW))
        if info is not None:
            with self.store.session() as session:
                session.execute(text("UPDATE nodes SET info = :info WHERE node_id = :node_id"),
                                {"info": json.dumps(info), "node_id": node_id})
        self.local.listing[node_id] = self.local.listing.get(node_id) or _listed(node_id)

    def queue(self, job: str, compute: str) -> None:
        with self.store.session() as session:
            session.add(JobRow(name=job, display_name=job, experiment_name="exp", status="Queued", target=compute,
                               compute=f"azureml:{compute}", spec={}, warnings=[], run={}, created_at=NOW,
                               updated_at=NOW))

    def heartbeat(self, *node_ids: str) -> None:
        """The agents of these nodes report now (and the provider lists them)."""
        with self.store.session() as session:
            for node_id in node_ids:
                session.get(NodeRow, node_id).last_heartbeat = self.clock.now()
                self.local.listing[node_id] = _listed(node_id)

    def errors(self, name: str) -> list[dict[str, str]] | None:
        """The compute's provisioning_errors, as `compute show` gives them."""
        with self.store.session() as session:
            errors = session.get(ComputeRow, name).observed.provisioning_errors
        return None if errors is None else [e.model_dump() for e in errors]

    def observed(self, name: str) -> ComputeStatus:
        with self.store.session() as session:
            return session.get(ComputeRow, name).observed

    def nodes(self, compute: str) -> dict[str, str]:
        with self.store.session() as session:
            return {r.node_id: r.state for r in session.scalars(select(NodeRow).where(NodeRow.compute == compute))}

    def reasons(self, node_id: str) -> list[tuple[str, str | None]]:
        with self.store.session() as session:
            rows = session.scalars(select(NodeStateRow).where(NodeStateRow.node_id == node_id)
                                   .order_by(NodeStateRow.id))
            return [(r.to_state, r.reason) for r in rows]

    def job_status(self, name: str) -> str:
        with self.store.session() as session:
            return session.get(JobRow, name).status


def _listed(node_id: str) -> ProviderNode:
    return ProviderNode(node_id)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    store = Store(f"sqlite:///{tmp_path / 'cible.db'}")
    store.migrate()
    paths = WorkspacePaths(tmp_path / "ws")
    paths.ensure()
    clock = FrozenClock(NOW)
    local, ray = RaisingProvider("local"), RaisingProvider("ray")
    local.refuse = set()  # launches go through unless a test says otherwise
    reconciler = ClusterReconciler(store, paths, {"local": local, "ray": ray}, AgentHub(), clock,
                                   heartbeat_timeout_s=30.0, prepare_timeout_s=600.0, seed=0)
    try:
        yield Bench(store, clock, reconciler, local, ray)
    finally:
        store.close()


def tracebacks(caplog: pytest.LogCaptureFixture, needle: str) -> int:
    return sum(1 for r in caplog.records if r.exc_info and needle in r.getMessage())


def test_a_compute_whose_pass_raises_says_why_backs_off_and_the_others_go_on(bench: Bench,
                                                                           caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    bench.plant("broken", size="Standard_Nope", min_instances=1)  # a size no catalog knows
    bench.plant("good")
    bench.queue("j1", "good")

    bench.reconciler.reconcile_once()
    [new] = bench.nodes("good")
    assert [r.compute for r in bench.local.launched] == ["good"]  # the good cluster's job got its node
    [error] = bench.errors("broken")
    assert error["code"] == "ReconcileError" and "unknown VM size 'Standard_Nope'" in error["message"]

    for _ in range(5):  # passes come every second or sooner: the broken one waits out its backoff
        bench.clock.advance(0.1)
        bench.heartbeat(new)
        bench.reconciler.reconcile_once()
    assert bench.job_status("j1") == "Preparing" and bench.nodes("good") == {new: "running"}
    assert tracebacks(caplog, "'broken'") == 1

    with bench.store.session() as session:  # repaired: the next try goes through and clears the error
        row = session.get(ComputeRow, "broken")
        row.spec = {**row.spec, "size": SIZE}
    bench.clock.advance(2)
    bench.heartbeat(new)
    bench.reconciler.reconcile_once()
    assert bench.errors("broken") is None
    assert list(bench.nodes("broken").values()) == ["preparing"]


def test_an_absurd_idle_time_fails_its_compute_alone_and_the_longest_allowed_overflows_nothing(bench: Bench):
    bench.plant("forever", idle_time_before_scale_down=10**29)  # past the spec's bound: planted, never accepted
    bench.plant("huge", idle_time_before_scale_down=10**400)  # JSON keeps it exact: too big for a float
    bench.plant("longest", idle_time_before_scale_down=MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S)
    bench.plant("brief", idle_time_before_scale_down=120)
    for node_id, compute in (("n1", "forever"), ("n2", "huge"), ("n3", "brief"), ("n4", "longest")):
        bench.node(node_id, compute)
    for _ in range(3):
        bench.clock.advance(60)
        bench.heartbeat("n1", "n2", "n3", "n4")
        delay = bench.reconciler.reconcile_once()
    assert bench.nodes("brief") == {"n3": "leaving"}  # 180 s idle > 120 s
    assert bench.nodes("longest") == {"n4": "idle"} and bench.errors("longest") is None
    for absurd in ("forever", "huge"):  # left as they are, and said why
        [error] = bench.errors(absurd)
        assert error["code"] == "ReconcileError" and "idle_time_before_scale_down" in error["message"]
    assert bench.nodes("forever") == {"n1": "idle"} and bench.nodes("huge") == {"n2": "idle"}
    assert 0 < delay <= MAX_POLL_S


def test_a_node_whose_launch_raises_is_removed_saying_why_and_the_others_start(bench: Bench):
    bench.local.refuse = None  # the first node asked for is refused
    bench.plant("pair", min_instances=2)
    bench.reconciler.reconcile_once()
    refused = next(iter(bench.local.refuse))
    started = [r.node_id for r in bench.local.launched]
    assert len(started) == 1 and refused not in started  # its sibling started all the same
    bench.clock.advance(1)
    bench.reconciler.reconcile_once()
    assert bench.nodes("pair")[refused] == "removed"
    assert bench.reasons(refused)[-1] == ("removed", f"it did not start: its launch failed: OSError: cannot start "
                                                     f"{refused}")
    [error] = bench.errors("pair")
    assert error["code"] == "NodeStartFailed" and "its launch failed" in error["message"]


def test_a_provider_whose_listing_raises_holds_back_only_its_own_clusters(bench: Bench,
                                                                         caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    bench.ray.listing_raises = True
    bench.plant("on-ray", min_instances=1, cible={"provider": "ray"})
    bench.plant("on-local", min_instances=1)
    for _ in range(3):
        bench.reconciler.reconcile_once()
        bench.clock.advance(0.5)
    assert list(bench.nodes("on-local").values()) == ["preparing"] and bench.nodes("on-ray") == {}
    assert tracebacks(caplog, "'ray' list_nodes") == 1
    bench.ray.listing_raises = False
    bench.clock.advance(2)
    bench.reconciler.reconcile_once()
    assert list(bench.nodes("on-ray").values()) == ["preparing"]


def test_nodes_whose_terminate_raised_are_asked_about_again(bench: Bench):
    bench.plant("shrinking", max_instances=1)
    bench.node("n1", "shrinking")
    bench.node("n2", "shrinking")
    bench.local.terminate_raises = 1
    bench.reconciler.reconcile_once()  # one node above max_instances: drained, its terminate raises
    [drained] = [n for n, state in bench.nodes("shrinking").items() if state == "leaving"]
    assert bench.local.terminated == []
    bench.clock.advance(1)
    bench.heartbeat("n1", "n2")
    bench.reconciler.reconcile_once()
    assert bench.local.terminated == [drained]


def test_an_instance_whose_own_pass_raises_says_so_and_still_gets_its_node(bench: Bench,
                                                                        monkeypatch: pytest.MonkeyPatch):
    def broken_pass(row: ComputeRow, *args: Any, **kwargs: Any) -> None:
        move_power(kwargs["session"], row, "off", "half done", NOW)  # a change the failure must not keep
        raise ValueError("snoozed_until: 'not a date'")

    monkeypatch.setattr(reconciler_module, "instance_pass", broken_pass)
    bench.plant("ci", kind="computeinstance", idle_time_before_shutdown_minutes=30)
    bench.plant("good", min_instances=1)
    for _ in range(3):
        bench.reconciler.reconcile_once()
    assert list(bench.nodes("ci").values()) == ["preparing"] and list(bench.nodes("good").values()) == ["preparing"]
    instance = bench.observed("ci").instance
    assert instance.power == "on"
    failed = [e.model_dump() for e in instance.events if e.kind == "PassFailed"]
    assert len(failed) == 1  # once while the same failure repeats
    assert "idle shutdown and schedules are not applied" in failed[0]["message"]
    assert "not a date" in failed[0]["message"]


def test_a_node_row_no_table_knows_is_left_out_and_its_cluster_goes_on(bench: Bench,
                                                                       caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    bench.plant("odd", min_instances=1)
    bench.node("weird", "odd", state="sideways")
    for _ in range(3):
        bench.reconciler.reconcile_once()
        bench.clock.advance(0.5)
    nodes = bench.nodes("odd")
    assert nodes.pop("weird") == "sideways" and list(nodes.values()) == ["preparing"]
    assert bench.errors("odd") is None
    assert tracebacks(caplog, "'weird'") == 1


def test_a_node_row_with_unusable_quota_info_stops_no_cluster(bench: Bench, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    with bench.store.session() as session:
        session.add(QuotaRow(scope="total", vcpus=3, updated_at=NOW))  # dedicated vCPUs: DS1_v2 has 1
    bench.plant("odd")
    bench.node("sized", "odd", info={"size": SIZE, "family": "standardDSv2Family", "vcpus": "many"})
    bench.node("bare", "odd", info={"family": "standardDSv2Family"})  # no vcpus, no size
    bench.node("listy", "odd", info=["not", "a", "mapping"])
    bench.node("huge", "odd", info={"size": "Standard_Nope", "family": "standardDSv2Family", "vcpus": 10**400})
    bench.plant("good", max_instances=3)
    for job in ("j1", "j2", "j3"):
        bench.queue(job, "good")

    for _ in range(2):
        bench.reconciler.reconcile_once()
        bench.clock.advance(0.5)
    # 3 vCPUs less the 1 of the sized bad row: two of good's three jobs get a node, the third waits
    assert sorted(bench.nodes("good").values()) == ["preparing", "preparing"]
    assert [bench.errors(c) for c in ("odd", "good")] == [None, None]
    warned = [r.getMessage() for r in caplog.records if "unusable for the quotas" in r.getMessage()]
    assert len(warned) == 4  # once per row, not once per pass
    assert any("'sized'" in m and "counted as its size Standard_DS1_v2 (1 vCPUs)" in m for m in warned)
    assert any("'bare'" in m and "counted as 0 vCPUs" in m for m in warned)
