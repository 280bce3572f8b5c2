"""Seeded random runs of the real cluster pass (load → observe → decide → apply → act: the
`ClusterReconciler` itself) against a real SQLite store, a fake node provider, and simulated agents
and launchers. After every pass:

- no cluster has more live nodes than its max_instances, and the live nodes never use more vCPUs
  than the quotas allow: two dedicated clusters share one family quota, so the headroom must be
  carried from one compute's pass to the next within a reconciler pass;
- a compute whose nodes failed to start launches none before the retry time stored in its status,
  which is 1, 2, 4 … 60 s after the last failure; the reconciler is restarted at random, so the
  back-off must survive it;
- every queued job has its reason stored (the compute's decided queue), in FIFO positions 1..k.

Then the chaos stops: every job must end, and each cluster settle at its min_instances.
The invariants are shown to bite: with the quota check, the carried headroom or the start-failure
history stubbed out, the same runs fail. The runs are repeatable: the reconciler is seeded, and so
are the node ids it makes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.backends.base.contract import NodeRequest
from cible.core import catalog
from cible.core.lifecycle.jobs import TERMINAL, JobStatus
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.records import ClusterHandle, ComputeStatus, RunRecord, StartFailures
from cible.core.planning import clusters as cluster_planning
from cible.core.planning.quotas import QuotaHeadroom
from cible.core.planning.scheduling import queued_reason
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.reconciler import ClusterReconciler
from cible.server.services.jobs import set_status
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, JobStatusRow, NodeRow, NodeStateRow, QuotaRow
from cible.testing import FrozenClock
from cible.testing.fake_provider import FakeNodeProvider
from cible.workspace import WorkspacePaths

SIZE = catalog.get_size("Standard_DS1_v2")  # 1 vCPU
FAMILY_QUOTA, LOW_PRIORITY_QUOTA = 4, 2  # vCPUs: below what the clusters could hold together
CLUSTERS = {  # name → spec fields
    "a": {"min_instances": 0, "max_instances": 3, "idle_time_before_scale_down": 20},
    "b": {"min_instances": 1, "max_instances": 2, "idle_time_before_scale_down": 0,
          "cible": {"provider": "local", "on_node_failure": "fail"}},
    "c": {"min_instances": 0, "max_instances": 3, "idle_time_before_scale_down": 10, "tier": "low_priority",
          "cible": {"provider": "local", "preemptions_per_node_hour": 40}},
}
HEARTBEAT_TIMEOUT_S, PREPARE_TIMEOUT_S = 30.0, 120.0
TICK_S = 3
SEEDS = 3
CHAOS_TICKS = 80


class FlakyProvider(FakeNodeProvider):
    """The fake provider, whose launches fail at `fail_rate` (poll_errors says why, as a real
    provider does), and which remembers when each node was asked for."""

    def __init__(self, rng: random.Random, clock: FrozenClock) -> None:
        super().__init__("local")
        self.rng, self.clock = rng, clock
        self.fail_rate = 0.0
        self.launched_at: dict[str, datetime] = {}

    def launch(self, requests: list[NodeRequest]) -> None:
        for request in requests:
            if request.node_id not in self.nodes and self.rng.random() < self.fail_rate:
                self.fail_launch(request.node_id, "no capacity left in the region (simulated)")
            self.launched_at.setdefault(request.node_id, self.clock.now())
        super().launch(requests)


class Sim:
    def __init__(self, store: Store, paths: WorkspacePaths, seed: int) -> None:
        self.store, self.paths = store, paths
        self.rng = random.Random(seed)
        self.clock = FrozenClock()
        self.provider = FlakyProvider(self.rng, self.clock)
        self.ready_after: dict[str, float] = {}  # node → seconds its agent takes to start
        self.dead: set[str] = set()  # agents that stopped heartbeating
        self.ends_at: dict[str, datetime] = {}  # running job → when its command ends
        self.accepted: set[str] = set()
        self.seq = 0
        self.restarts_while_backing_off = 0
        self.seen: set[str] = set()  # what happened, for the guard test
        now = self.clock.now()
        with store.session() as session:
            for name, fields in CLUSTERS.items():
                spec = {"name": name, "type": "amlcompute", "size": SIZE.name, "cible": {"provider": "local"},
                        **fields}
                session.add(ComputeRow(name=name, compute_type="amlcompute", spec=spec,
                                       provisioning_state="Succeeded", created_at=now, updated_at=now))
            session.add(QuotaRow(scope=SIZE.family, vcpus=FAMILY_QUOTA, updated_at=now))
            session.add(QuotaRow(scope="low_priority", vcpus=LOW_PRIORITY_QUOTA, updated_at=now))
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> ClusterReconciler:
        return ClusterReconciler(self.store, self.paths, {"local": self.provider}, AgentHub(), self.clock,
                                 heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, prepare_timeout_s=PREPARE_TIMEOUT_S,
                                 seed=self.rng.randrange(2**32))

    # -- the world between passes ----------------------------------------------------------------
    def world(self, chaos: bool, tick: int) -> None:
        rng, now = self.rng, self.clock.now()
        self.provider.fail_rate = (1.0 if 20 <= tick % 60 < 40 else 0.1) if chaos else 0.0
        if chaos and rng.random() < 0.3:
            self.submit(rng.choice(sorted(CLUSTERS)))
        for node_id in list(self.provider.nodes):
            if chaos and rng.random() < 0.003:
                self.dead.add(node_id)  # its agent died: no more heartbeats
            elif chaos and rng.random() < 0.002:
                self.provider.lose(node_id, "its machine was lost (simulated)")
        with self.store.session() as session:
            for row in session.scalars(select(NodeRow).where(NodeRow.state.in_([s.value for s in LIVE]))):
                listed = self.provider.nodes.get(row.node_id)
                started = self.provider.launched_at.get(row.node_id)
                delay = self.ready_after.setdefault(row.node_id, rng.uniform(0, 20))
                if listed is not None and listed.alive and row.node_id not in self.dead and started is not None \
                        and (now - started).total_seconds() >= delay:
                    row.last_heartbeat = now  # the agent's heartbeat
            for job in session.scalars(select(JobRow).where(JobRow.status.notin_([s.value for s in TERMINAL]))):
                self.launcher(session, job, now, chaos)

    def launcher(self, session: Session, job: JobRow, now: datetime, chaos: bool) -> None:
        """What the job's launchers report: running once its nodes are up, then ended."""
        if job.status == JobStatus.QUEUED.value:
            if chaos and self.rng.random() < 0.005:
                set_status(session, job, JobStatus.CANCELED, now, reason="canceled by the user (simulated)")
            return
        handle = job.run.handle
        if not isinstance(handle, ClusterHandle):
            return
        if job.status == JobStatus.PREPARING.value:
            up = all((n := self.provider.nodes.get(node_id)) is not None and n.alive and node_id not in self.dead
                     for node_id in handle.nodes)
            if up:
                set_status(session, job, JobStatus.RUNNING, now)
                self.ends_at[job.name] = now + timedelta(seconds=self.rng.randint(3, 30))
        elif job.status == JobStatus.RUNNING.value and now >= self.ends_at.get(job.name, now):
            set_status(session, job, JobStatus.FINALIZING, now)
            set_status(session, job, JobStatus.COMPLETED, now)

    def submit(self, compute: str) -> None:
        self.seq += 1
        name, now = f"job-{self.seq}", self.clock.now()
        # Up to what the cluster can hold under its quota: a bigger job would wait for quota forever.
        quota = LOW_PRIORITY_QUOTA if CLUSTERS[compute].get("tier") == "low_priority" else FAMILY_QUOTA
        count = self.rng.randint(1, min(CLUSTERS[compute]["max_instances"], quota // SIZE.vcpus))
        with self.store.session() as session:
            session.add(JobRow(name=name, display_name=name, experiment_name="sim", status=JobStatus.QUEUED.value,
                               compute=f"azureml:{compute}", target=compute, instance_count=count, spec={},
                               warnings=[], run=RunRecord(), created_at=now, updated_at=now))
        self.accepted.add(name)
        if count > 1:
            self.seen.add("gang")

    # -- one pass ------------------------------------------------------------------------------------
    def tick(self, chaos: bool, tick: int = 0) -> None:
        self.clock.advance(TICK_S)
        self.world(chaos, tick)
        before = self.statuses()
        if chaos and self.rng.random() < 0.05:  # the server restarts: everything in memory is gone
            if any(f and f.retry_at and f.retry_at > self.clock.now() for f in before.values()):
                self.restarts_while_backing_off += 1
            self.reconciler = self.new_reconciler()
        self.reconciler.reconcile_once()
        self.check(before)

    def statuses(self) -> dict:
        with self.store.session() as session:
            return {row.name: row.observed.start_failures for row in session.scalars(select(ComputeRow))}

    # -- the invariants ------------------------------------------------------------------------------
    def check(self, failures_before: dict) -> None:
        now = self.clock.now()
        with self.store.session() as session:
            computes = {row.name: row for row in session.scalars(select(ComputeRow))}
            nodes = session.scalars(select(NodeRow)).all()
            moves = session.execute(select(NodeStateRow, NodeRow.compute).join(
                NodeRow, NodeRow.node_id == NodeStateRow.node_id).where(NodeStateRow.at == now)).all()
            queued = session.execute(select(JobRow.name, JobRow.target, JobRow.created_at, JobRow.instance_count)
                                     .where(JobRow.status == JobStatus.QUEUED.value)).all()
            live = [n for n in nodes if NodeState(n.state) in LIVE]
            for name, fields in CLUSTERS.items():
                count = sum(1 for n in live if n.compute == name)
                assert count <= fields["max_instances"], f"{name}: {count} live nodes, max {fields['max_instances']}"
            dedicated = sum(n.info.vcpus for n in live if not n.info.low_priority)
            low = sum(n.info.vcpus for n in live if n.info.low_priority)
            assert dedicated <= FAMILY_QUOTA, f"quota: {dedicated} dedicated vCPUs live, quota {FAMILY_QUOTA}"
            assert low <= LOW_PRIORITY_QUOTA, f"quota: {low} low-priority vCPUs live, quota {LOW_PRIORITY_QUOTA}"
            for name, row in computes.items():
                self.check_back_off(name, row.observed, failures_before[name],
                                    [m for m, compute in moves if compute == name], now)
                self.check_reasons(name, row.observed, [q for q in queued if q.target == name])
        self.seen |= {m.to_state for m, _ in moves}
        if any(row.observed.quota_wait for row in computes.values()):
            self.seen.add("quota-wait")
        if any("requeued" in (h or "") for h in self.history_reasons(now)):
            self.seen.add("requeue")

    def check_back_off(self, name: str, observed: ComputeStatus, before: StartFailures | None,
                       moves: list[NodeStateRow], now: datetime) -> None:
        launched = [m for m in moves if m.from_state is None]
        got_ready = any(m.from_state == "preparing" and m.to_state == "idle" for m in moves)
        if before is not None and before.retry_at is not None and before.retry_at > now:
            if got_ready:  # a node started after all: the failures in a row are over
                assert observed.start_failures is None or observed.start_failures.count < before.count
                self.seen.add("back-off-ended")
            else:
                assert not launched, f"{name}: start failures: launched {len(launched)} before {before.retry_at}"
        if any(m.to_state == "removed" and (m.reason or "").startswith("it did not start") for m in moves):
            self.seen.add("start-failed")
            failures = observed.start_failures
            assert failures is not None and failures.count >= 1, f"{name}: start failures not recorded"
            wait = (failures.retry_at - now).total_seconds()
            assert wait == min(2 ** (failures.count - 1), 60), f"{name}: start failures: waits {wait} s"
            assert not launched, f"{name}: start failures: launched in the pass that saw one fail"
            if failures.count >= 3:
                self.seen.add("back-off-doubled")

    def check_reasons(self, name: str, observed: ComputeStatus, queued: list) -> None:
        """The stored queue is the FIFO head of the queued jobs (all of them unless `more`), and every
        queued job's reason says its place: from the stored head, or counted behind it."""
        queue = observed.queue
        stored = queue.jobs if queue is not None else []
        fifo = [q.name for q in sorted(queued, key=lambda q: (q.created_at, q.name))]
        created = {q.name: q.created_at for q in queued}
        assert [created[j] for j in stored] == sorted(created[j] for j in fifo[:len(stored)]), \
            f"{name}: stored {stored}, not the FIFO head of {fifo}"
        assert (len(stored) < len(fifo)) == bool(queue and queue.more), f"{name}: stored {stored} of {fifo}"
        if len(fifo) > len(stored):
            self.seen.add("queue-head")
        for position, q in enumerate(sorted(queued, key=lambda q: (created[q.name], q.name)), start=1):
            reason = queued_reason(name, observed, q.name, q.instance_count, ahead=lambda: position - 1)
            assert reason.startswith(f"position {position} in the queue of {name}: "), reason

    def history_reasons(self, now: datetime) -> list[str | None]:
        with self.store.session() as session:
            return list(session.scalars(select(JobStatusRow.reason).where(JobStatusRow.at == now)))

    # -- the run ---------------------------------------------------------------------------------------
    def run(self) -> None:
        for tick in range(CHAOS_TICKS):
            self.tick(chaos=True, tick=tick)
        for _ in range(400):  # calm: no arrivals, failures or losses; everything queued must end
            if not self.unfinished():
                break
            self.tick(chaos=False)
        assert not self.unfinished(), self.unfinished()
        for _ in range(int(30 / TICK_S) + 3):  # idle long enough: each cluster settles at its min
            self.tick(chaos=False)
        with self.store.session() as session:
            for name, fields in CLUSTERS.items():
                states = session.scalars(select(NodeRow.state).where(
                    NodeRow.compute == name, NodeRow.state.in_([s.value for s in LIVE]))).all()
                assert states == ["idle"] * fields["min_instances"], (name, states)

    def unfinished(self) -> list[str]:
        with self.store.session() as session:
            return list(session.scalars(select(JobRow.name).where(JobRow.status.notin_([s.value for s in TERMINAL]))))


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator:
    stores: list[Store] = []

    def make(seed: int) -> Sim:
        store = Store(f"sqlite:///{tmp_path / f'cible-{seed}-{len(stores)}.db'}")
        store.migrate()
        stores.append(store)
        paths = WorkspacePaths(tmp_path / f"ws-{seed}-{len(stores)}")
        paths.ensure()
        return Sim(store, paths, seed)

    yield make
    for store in stores:
        store.close()


def test_random_runs_of_the_real_pass_keep_the_invariants_and_every_job_ends(make_sim):
    seen: set[str] = set()
    restarts = 0
    for seed in range(SEEDS):
        sim = make_sim(seed)
        sim.run()
        seen |= sim.seen
        restarts += sim.restarts_while_backing_off
    # The test guards itself: across the seeds, each kind of event actually happened.
    assert seen >= {"quota-wait", "start-failed", "back-off-doubled", "requeue", "gang",
                    "idle", "running", "leaving", "preempted", "unusable", "removed", "queue-head"}, seen
    assert restarts > 0  # the reconciler was restarted while a compute was backing off


@pytest.mark.parametrize(("stub", "complaint"), [
    ("quota check", "quota"),
    ("carried headroom", "quota"),
    ("start-failure history", "start failures"),
])
def test_the_invariants_catch_a_stubbed_out_check(make_sim, monkeypatch: pytest.MonkeyPatch, stub: str,
                                                 complaint: str):
    if stub == "quota check":
        monkeypatch.setattr(QuotaHeadroom, "fit", lambda self, *, wanted, **kw: (wanted, None))
    elif stub == "carried headroom":
        monkeypatch.setattr(QuotaHeadroom, "with_nodes", lambda self, node, count: self)
    else:
        monkeypatch.setattr(cluster_planning, "_start_failures", lambda *args: (None, None))
    with pytest.raises(AssertionError, match=complaint):
        for seed in range(SEEDS):
            make_sim(seed).run()


def test_a_failing_start_backs_off_and_the_back_off_survives_a_restart(make_sim):
    sim = make_sim(0)
    with sim.store.session() as session:  # one cluster asked for one node, whose every start fails
        for name in ("a", "c"):
            session.delete(session.get(ComputeRow, name))
    sim.provider.fail_rate = 1.0
    waits: list[float] = []
    for _ in range(20):  # a pass launches once the retry time is reached; the next sees it failed
        sim.reconciler.reconcile_once()
        failures = sim.statuses()["b"]
        if failures is not None and failures.count > len(waits):
            waits.append((failures.retry_at - sim.clock.now()).total_seconds())
            if len(waits) == 4:
                break
            sim.clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8]
    launched = len(sim.provider.launched())
    sim.reconciler = sim.new_reconciler()  # a restart, in the middle of an 8 s wait
    sim.clock.advance(3)
    sim.reconciler.reconcile_once()
    assert len(sim.provider.launched()) == launched  # still backing off: the history was stored
    sim.clock.advance(5)
    sim.reconciler.reconcile_once()
    assert len(sim.provider.launched()) == launched + 1


def test_a_pass_that_sees_nothing_new_writes_nothing(make_sim):
    sim = make_sim(0)
    sim.submit("a")
    for _ in range(30):  # calm until the job ran and every cluster is steady
        sim.tick(chaos=False)
    assert not sim.unfinished()

    def versions() -> dict[str, int]:
        with sim.store.session() as session:
            rows = [*session.scalars(select(ComputeRow)), *session.scalars(select(NodeRow))]
            return {getattr(row, "name", None) or row.node_id: row.version for row in rows}

    before = versions()
    for _ in range(3):  # every version bump is a write the API's requests would collide with
        sim.clock.advance(1)
        sim.reconciler.reconcile_once()
    assert versions() == before
