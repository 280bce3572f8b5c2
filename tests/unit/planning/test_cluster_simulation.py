"""Seeded random runs of the pure planner (decide_cluster) against a small simulated world, checking
invariants: thousands of passes a second, so it explores more (config updates, max lowered under
running jobs) than the run of the real pass can.

Each tick: the clock moves, jobs arrive and end, agents die, low-priority nodes are
preempted, the config is updated; then decide runs and its plan is applied in memory
(every node move through the transition table). Afterwards the chaos stops and every job
that fits must finish, and the cluster must settle at min. The real pass (load, decide,
apply through the store, act; with quotas, failing starts and restarts) has its own
simulation: tests/unit/test_cluster_pass.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pytest

from cible.core.lifecycle.nodes import LIVE, NodeState, check_transition
from cible.core.planning.clusters import (
    ClusterConfig,
    ClusterPlan,
    NodeView,
    QueuedJob,
    RunningJob,
    admission_error,
    decide_cluster,
    preemptions,
)
from cible.testing import FrozenClock

N = NodeState
TICK_S = 5
SEEDS = 25


@dataclass
class SimNode:
    node_id: str
    state: NodeState
    created_at: datetime
    ready_at: datetime
    job: str | None = None
    idle_since: datetime | None = None
    last_heartbeat: datetime | None = None
    dead: bool = False  # the agent stopped: no more heartbeats
    preempted: bool = False
    gone_at: datetime | None = None  # when the provider stops listing it

    def view(self, now: datetime) -> NodeView:
        return NodeView(
            node_id=self.node_id,
            state=self.state,
            created_at=self.created_at,
            job_name=self.job,
            idle_since=self.idle_since,
            last_heartbeat=self.last_heartbeat,
            present=self.gone_at is None or now < self.gone_at,
            preempted=self.preempted,
        )


@dataclass
class SimJob:
    queued: QueuedJob
    nodes: tuple[str, ...] = ()
    ends_at: datetime | None = None


class Sim:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.clock = FrozenClock()
        max_instances = self.rng.randint(2, 5)
        self.config = ClusterConfig(
            name="sim",
            min_instances=self.rng.randint(0, 2),
            max_instances=max_instances,
            idle_time_before_scale_down=self.rng.choice([0, 30, 120]),
            tier="low_priority",
            heartbeat_timeout_s=30,
            prepare_timeout_s=120,
        )
        self.nodes: dict[str, SimNode] = {}  # removed nodes leave: the reconciler loads only the others
        self.queue: dict[str, SimJob] = {}
        self.running: dict[str, SimJob] = {}
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.accepted: set[str] = set()
        self.seq = 0

    # -- the world ---------------------------------------------------------------------------

    def world_events(self, chaos: bool) -> None:
        now, rng = self.clock.now(), self.rng
        if chaos and rng.random() < 0.2:
            self.submit(rng.randint(1, self.config.max_instances + 1))
        if chaos and rng.random() < 0.02:
            new_max = rng.randint(1, 5)
            self.config = replace(self.config, max_instances=new_max, min_instances=rng.randint(0, min(2, new_max)))
        for node in self.nodes.values():
            if chaos and node.state in LIVE and rng.random() < 0.005:
                node.dead = True
            alive = not node.dead and node.state in LIVE
            if alive and (node.state != N.PREPARING or now >= node.ready_at):
                node.last_heartbeat = now
        if chaos:
            views = [n.view(now) for n in self.nodes.values()]
            draws = [rng.random() for _ in views]
            for node_id in preemptions(self.config, views, 0.003, draws):
                self.nodes[node_id].preempted = True
        for name, job in list(self.running.items()):
            if now >= job.ends_at:
                del self.running[name]
                self.done.add(name)

    def submit(self, instance_count: int) -> None:
        self.seq += 1
        name = f"job-{self.seq}"
        if admission_error(self.config, instance_count):
            return  # rejected at submit; never queued
        policy = self.rng.choice(["requeue", "fail"])
        job = QueuedJob(name=name, submitted_at=self.clock.now(), instance_count=instance_count, on_node_failure=policy)
        self.queue[name] = SimJob(queued=job)
        self.accepted.add(name)

    # -- one reconcile pass ------------------------------------------------------------------

    def tick(self, chaos: bool = True) -> ClusterPlan:
        self.clock.advance(TICK_S)
        self.world_events(chaos)
        now = self.clock.now()
        views = [n.view(now) for n in self.nodes.values()]
        running = [
            RunningJob(name=name, node_ids=job.nodes, on_node_failure=job.queued.on_node_failure)
            for name, job in self.running.items()
        ]
        live_before = {i for i, n in self.nodes.items() if n.state in LIVE}
        plan = decide_cluster(self.config, views, [j.queued for j in self.queue.values()], running, now)
        queue_before = set(self.queue)
        self.apply(plan)
        self.check(plan, queue_before, live_before)
        return plan

    def apply(self, plan: ClusterPlan) -> None:
        now, rng = self.clock.now(), self.rng
        for node_id, target, _reason in plan.node_transitions:
            node = self.nodes[node_id]
            check_transition(node.state, target)
            node.state = target
            if target == N.IDLE:
                node.idle_since, node.job = now, None
        for node_id in [i for i, n in self.nodes.items() if n.state == N.REMOVED]:
            del self.nodes[node_id]
        for node_id, _reason in plan.terminate:
            node = self.nodes[node_id]
            node.gone_at = node.gone_at or now + timedelta(seconds=rng.randint(0, 20))
        for name, node_ids in plan.assign:
            job = self.queue.pop(name)
            assert len(node_ids) == job.queued.instance_count
            for node_id in node_ids:
                node = self.nodes[node_id]
                assert node.state == N.RUNNING and node.job is None, (node_id, node)
                node.job = name
            job.nodes, job.ends_at = node_ids, now + timedelta(seconds=rng.randint(10, 300))
            self.running[name] = job
        for name, _reason in plan.requeue:
            job = self.running.pop(name)
            self.queue[name] = SimJob(queued=job.queued)  # keeps submitted_at: back to its place
        for name, reason in plan.fail:
            self.running.pop(name, None) or self.queue.pop(name)
            self.failed[name] = reason
        for _ in range(plan.launch):
            self.seq += 1
            node_id = f"node-{self.seq}"
            ready = now + timedelta(seconds=rng.randint(5, 60))
            self.nodes[node_id] = SimNode(node_id, N.PREPARING, now, ready, dead=rng.random() < 0.03)

    # -- invariants --------------------------------------------------------------------------

    def check(self, plan: ClusterPlan, queue_before: set[str], live_before: set[str]) -> None:
        config, now = self.config, self.clock.now()
        live = [n for n in self.nodes.values() if n.state in LIVE]
        cap = config.max_instances
        # Never above max, except busy nodes waiting for their job to end after max was lowered.
        if len(live) > cap:
            assert plan.launch == 0 and all(n.state == N.RUNNING for n in live), (len(live), cap)
        # A node leaves for idleness only at idle_since + idle_time, and never below min.
        idle_removals = [i for i, r in plan.terminate if "idle_time_before_scale_down" in r]
        for node_id in idle_removals:
            assert now >= self.nodes[node_id].idle_since + timedelta(seconds=config.idle_time_before_scale_down)
        if idle_removals:
            assert len(live) >= min(config.min_instances, config.max_instances)
        # No node holds two jobs; every running job holds exactly its N nodes.
        held = [node_id for job in self.running.values() for node_id in job.nodes]
        assert len(held) == len(set(held))
        for name, job in self.running.items():
            assert len(job.nodes) == job.queued.instance_count
            for node_id in job.nodes:
                node = self.nodes[node_id]
                assert node.job == name
        # Every job still waiting from before says why, in FIFO positions 1..k.
        waiting = [name for name in self.queue if name in queue_before]
        assert set(plan.waiting) == set(waiting)
        positions = sorted(int(text.split()[1]) for text in plan.waiting.values())
        assert positions == list(range(1, len(positions) + 1))
        assert all(
            text.startswith(f"position {text.split()[1]} in the queue of sim: ") for text in plan.waiting.values()
        )
        # Launching never overshoots the cap.
        assert plan.launch == 0 or len(live) <= cap


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_runs_keep_the_invariants_and_every_fitting_job_finishes(seed: int):
    sim = Sim(seed)
    for _ in range(300):
        sim.tick(chaos=True)
    # Calm: no arrivals, deaths, preemptions or updates. Everything queued must finish.
    for _ in range(5000):
        if not sim.queue and not sim.running:
            break
        sim.tick(chaos=False)
    assert not sim.queue and not sim.running, (sim.queue, sim.running)
    assert sim.accepted == sim.done | set(sim.failed)
    # The only failures: a node lost under an on_node_failure=fail policy, or max lowered under the job.
    for name, reason in sim.failed.items():
        assert "could never start" in reason or reason.startswith("node node-"), (name, reason)
    # Idle long enough: the cluster settles at min_instances, all ready.
    for _ in range(int(sim.config.idle_time_before_scale_down / TICK_S) + 40):
        sim.tick(chaos=False)
    live = [n for n in sim.nodes.values() if n.state in LIVE]
    assert len(live) == min(sim.config.min_instances, sim.config.max_instances)
    assert all(n.state == N.IDLE for n in live)


def test_the_simulation_exercises_every_path():
    """Guards the test itself: across the seeds, each kind of event actually happens."""
    seen: set[str] = set()
    for seed in range(SEEDS):
        sim = Sim(seed)
        for _ in range(300):
            plan = sim.tick(chaos=True)
            seen |= {t.value for _, t, _ in plan.node_transitions}
            if any(len(nodes) > 1 for _, nodes in plan.assign):
                seen.add("gang")
            if plan.requeue:
                seen.add("requeue")
            if any("could never start" in r for _, r in plan.fail):
                seen.add("never-fits")
            if any("above max_instances" in r for _, r in plan.terminate):
                seen.add("above-max")
    expected = {"idle", "running", "leaving", "preempted", "unusable", "removed"}
    assert seen >= expected | {"gang", "requeue", "never-fits", "above-max"}
