"""Heartbeat loss, preemption, nodes that vanish or never get ready, and cluster deletion."""

from __future__ import annotations

from dataclasses import replace

from cluster_factories import cfg, node

from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.clusters import (
    QueuedJob,
    RunningJob,
    decide_cluster,
    preemptions,
)
from cible.testing import FrozenClock

N = NodeState


def test_a_silent_node_is_unusable_just_past_the_timeout_and_is_replaced():
    clock = FrozenClock()
    config = cfg(min_instances=1)
    nodes = [node(clock, "n1")]
    clock.advance(30)
    assert decide_cluster(config, nodes, [], [], clock.now()).mark_unusable == []
    clock.advance(0.001)
    plan = decide_cluster(config, nodes, [], [], clock.now())
    assert plan.mark_unusable == ["n1"]
    assert plan.node_transitions == [("n1", N.UNUSABLE, "node n1 stopped heartbeating: none for 30 s (timeout 30 s)")]
    assert [i for i, _ in plan.terminate] == ["n1"]
    assert plan.launch == 1  # the replacement


def test_the_job_on_a_silent_node_is_requeued_or_failed_by_its_policy():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "running", job_name="a"), node(clock, "n2", "running", job_name="b")]
    running = [
        RunningJob(name="a", node_ids=("n1",), on_node_failure="requeue"),
        RunningJob(name="b", node_ids=("n2",), on_node_failure="fail"),
    ]
    clock.advance(45)
    plan = decide_cluster(cfg(), nodes, [], running, clock.now())
    assert plan.requeue == [("a", "node n1 stopped heartbeating: none for 45 s (timeout 30 s)")]
    assert plan.fail == [("b", "node n2 stopped heartbeating: none for 45 s (timeout 30 s)")]
    assert sorted(plan.mark_unusable) == ["n1", "n2"]


def test_a_gang_job_losing_one_node_is_requeued_once_and_its_other_node_freed_after():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "running", job_name="gang"), node(clock, "n2", "running", job_name="gang")]
    running = [RunningJob(name="gang", node_ids=("n1", "n2"))]
    clock.advance(40)
    nodes[1] = replace(nodes[1], last_heartbeat=clock.now())
    plan = decide_cluster(cfg(), nodes, [], running, clock.now())
    assert [job for job, _ in plan.requeue] == ["gang"]
    assert plan.node_transitions == [("n1", N.UNUSABLE, "node n1 stopped heartbeating: none for 40 s (timeout 30 s)")]

    # The reconciler stopped the job and put it back in the queue: n2 is free for it,
    # and one replacement completes the gang.
    nodes = [replace(nodes[0], state=N.UNUSABLE), nodes[1]]
    requeued = QueuedJob(name="gang", submitted_at=clock.now(), instance_count=2)
    plan = decide_cluster(cfg(), nodes, [requeued], [], clock.now())
    assert plan.node_transitions == [("n2", N.IDLE, "job gang ended")]
    assert plan.launch == 1 and plan.requeue == []
    assert plan.waiting["gang"].endswith("waiting for 2 nodes: 1 idle, 1 starting, max 2")


def test_a_job_still_holding_a_node_lost_earlier_is_requeued_again_not_forgotten():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "unusable", job_name="a")]
    plan = decide_cluster(cfg(), nodes, [], [RunningJob(name="a", node_ids=("n1",))], clock.now())
    assert plan.requeue == [("a", "node n1 is unusable")]
    assert plan.terminate == []  # asked for when it became unusable


def test_a_node_that_never_gets_ready_is_unusable_after_prepare_timeout():
    clock = FrozenClock()
    config = cfg(prepare_timeout_s=300)
    nodes = [node(clock, "n1", "preparing")]
    jobs = [QueuedJob(name="j", submitted_at=clock.now())]
    clock.advance(300)
    plan = decide_cluster(config, nodes, jobs, [], clock.now())
    assert plan.mark_unusable == [] and plan.launch == 0
    clock.advance(1)
    plan = decide_cluster(config, nodes, jobs, [], clock.now())
    assert plan.mark_unusable == ["n1"]
    assert plan.node_transitions[0][2] == "node n1 did not become ready within 300 s"
    assert plan.launch == 1


def test_a_preparing_node_that_heartbeats_is_idle_and_gets_work_in_the_same_pass():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "preparing", last_heartbeat=clock.now())]
    plan = decide_cluster(cfg(), nodes, [QueuedJob(name="j", submitted_at=clock.now())], [], clock.now())
    assert plan.node_transitions == [("n1", N.IDLE, "agent ready"), ("n1", N.RUNNING, "assigned to job j")]
    assert plan.assign == [("j", ("n1",))]


def test_a_preempted_node_requeues_its_job_whatever_the_policy_and_is_replaced():
    clock = FrozenClock()
    config = cfg(tier="low_priority")
    nodes = [node(clock, "n1", "running", job_name="a", preempted=True)]
    running = [RunningJob(name="a", node_ids=("n1",), on_node_failure="fail")]
    queue = [QueuedJob(name="b", submitted_at=clock.now())]
    plan = decide_cluster(config, nodes, queue, running, clock.now())
    assert plan.node_transitions == [("n1", N.PREEMPTED, "node n1 was preempted (low priority)")]
    assert plan.requeue == [("a", "preempted: node n1 was reclaimed (low-priority tier)")]
    assert plan.fail == [] and plan.mark_unusable == []
    assert [i for i, _ in plan.terminate] == ["n1"]
    assert plan.launch == 1


def test_a_node_the_provider_lost_is_removed_and_its_job_handled_by_policy():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "running", job_name="a", present=False)]
    plan = decide_cluster(
        cfg(), nodes, [], [RunningJob(name="a", node_ids=("n1",), on_node_failure="fail")], clock.now()
    )
    assert plan.node_transitions == [("n1", N.REMOVED, "the provider no longer lists it")]
    assert plan.fail == [("a", "node n1 disappeared from the provider")]
    assert plan.terminate == []


def test_nodes_on_their_way_out_are_removed_when_the_provider_lets_go_and_ignored_until_then():
    clock = FrozenClock()
    nodes = [node(clock, s, s, last_heartbeat=None) for s in ("leaving", "unusable", "preempted")]
    clock.advance(3600)
    plan = decide_cluster(cfg(), nodes, [], [], clock.now())
    assert plan.node_transitions == [] and plan.terminate == [] and plan.mark_unusable == []
    plan = decide_cluster(cfg(), [replace(n, present=False) for n in nodes], [], [], clock.now())
    assert sorted(plan.node_transitions) == [
        (s, N.REMOVED, "the provider no longer lists it") for s in ("leaving", "preempted", "unusable")
    ]


def test_removed_nodes_are_history_only():
    clock = FrozenClock()
    plan = decide_cluster(cfg(min_instances=1), [node(clock, "n1", "removed", present=False)], [], [], clock.now())
    assert plan.node_transitions == [] and plan.launch == 1


def test_a_deleting_cluster_takes_no_jobs_removes_idle_nodes_and_drains_busy_ones():
    clock = FrozenClock()
    config = cfg(min_instances=1, max_instances=3, deleting=True)
    nodes = [
        node(clock, "n1"),
        node(clock, "n2", "preparing"),
        node(clock, "n3", "running", job_name="a"),
    ]
    queue = [QueuedJob(name="q", submitted_at=clock.now())]
    plan = decide_cluster(config, nodes, queue, [RunningJob(name="a", node_ids=("n3",))], clock.now())
    reason = "compute cluster cpu-cluster is being deleted"
    assert plan.terminate == [("n1", reason), ("n2", reason)]
    assert plan.fail == [("q", "compute cluster cpu-cluster is being deleted and takes no new jobs")]
    assert plan.launch == 0 and plan.target_nodes == 0 and plan.assign == [] and not plan.drained

    # Job a ends: its node goes too.
    nodes = [replace(nodes[0], state=N.LEAVING), replace(nodes[1], state=N.LEAVING), nodes[2]]
    plan = decide_cluster(config, nodes, [], [], clock.now())
    assert plan.node_transitions == [("n3", N.IDLE, "job a ended"), ("n3", N.LEAVING, reason)]
    assert not plan.drained

    plan = decide_cluster(config, [replace(n, state=N.LEAVING, present=False) for n in nodes], [], [], clock.now())
    assert plan.drained


def test_preemption_draws_are_injected_and_only_hit_low_priority_nodes_that_are_up():
    clock = FrozenClock()
    nodes = [node(clock, "n2"), node(clock, "n1", "running", job_name="a"), node(clock, "n3", "leaving"),
             node(clock, "n0", "preparing")]
    assert preemptions(cfg(), nodes, 1.0, [0.0, 0.0]) == []
    assert preemptions(cfg(tier="low_priority"), nodes, 0.5, [0.9, 0.1]) == ["n2"]
    assert preemptions(cfg(tier="low_priority"), nodes, 0.5, [0.1, 0.1]) == ["n1", "n2"]
