"""Scale up on queued demand, scale down on idle time, live updates of min/max/idle."""

from __future__ import annotations

from dataclasses import replace

from cluster_factories import cfg, node

from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.clusters import NodeView, QueuedJob, RunningJob, decide_cluster
from cible.testing import FrozenClock

N = NodeState


def queued(clock: FrozenClock, name: str, n: int = 1) -> QueuedJob:
    return QueuedJob(name=name, submitted_at=clock.now(), instance_count=n)


def heartbeat(clock: FrozenClock, nodes: list[NodeView]) -> list[NodeView]:
    return [replace(n, last_heartbeat=clock.now()) if n.state != N.PREPARING else n for n in nodes]


def removed(plan) -> list[str]:
    return [node_id for node_id, _ in plan.terminate]


def test_queued_demand_scales_up_to_max_and_no_further():
    clock = FrozenClock()
    plan = decide_cluster(cfg(max_instances=2), [], [queued(clock, f"j{i}") for i in range(3)], [], clock.now())
    assert plan.launch == 2 and plan.target_nodes == 2
    assert set(plan.waiting) == {"j0", "j1", "j2"}


def test_nodes_already_preparing_are_counted_so_nothing_is_launched_twice():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "preparing"), node(clock, "n2", "preparing")]
    jobs = [queued(clock, f"j{i}") for i in range(3)]
    assert decide_cluster(cfg(max_instances=4), nodes, jobs, [], clock.now()).launch == 1
    # Ticks later, still preparing: nothing more.
    clock.advance(10)
    nodes = [*nodes, node(clock, "n3", "preparing")]
    assert decide_cluster(cfg(max_instances=4), nodes, jobs, [], clock.now()).launch == 0


def test_a_full_cluster_launches_nothing_however_long_the_queue():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "running", job_name="a"), node(clock, "n2", "running", job_name="b")]
    running = [RunningJob(name="a", node_ids=("n1",)), RunningJob(name="b", node_ids=("n2",))]
    plan = decide_cluster(cfg(), nodes, [queued(clock, f"j{i}") for i in range(5)], running, clock.now())
    assert plan.launch == 0 and plan.assign == []


def test_min_instances_are_kept_warm_with_no_jobs():
    clock = FrozenClock()
    config = cfg(min_instances=2, max_instances=4)
    assert decide_cluster(config, [], [], [], clock.now()).launch == 2
    nodes = [node(clock, "n1"), node(clock, "n2")]
    clock.advance(3600)
    plan = decide_cluster(config, heartbeat(clock, nodes), [], [], clock.now())
    assert plan.launch == 0 and plan.terminate == [] and plan.target_nodes == 2


def test_an_idle_node_goes_at_exactly_idle_time_not_before():
    clock = FrozenClock()
    nodes = [node(clock, "n1")]
    clock.advance(119.999999)
    assert decide_cluster(cfg(), heartbeat(clock, nodes), [], [], clock.now()).terminate == []
    clock.advance(0.000001)
    plan = decide_cluster(cfg(), heartbeat(clock, nodes), [], [], clock.now())
    assert plan.terminate == [("n1", "idle for 120 s (idle_time_before_scale_down)")]
    assert plan.node_transitions == [("n1", N.LEAVING, "idle for 120 s (idle_time_before_scale_down)")]


def test_scale_down_stops_at_min_and_takes_the_longest_idle_first():
    clock = FrozenClock()
    nodes = [node(clock, "n-old")]
    clock.advance(60)
    nodes.append(node(clock, "n-mid"))
    clock.advance(60)
    nodes.append(node(clock, "n-new"))
    clock.advance(300)
    plan = decide_cluster(cfg(min_instances=1, max_instances=3), heartbeat(clock, nodes), [], [], clock.now())
    assert removed(plan) == ["n-old", "n-mid"]
    assert plan.target_nodes == 1


def test_only_expired_idle_nodes_go_even_when_more_are_surplus():
    clock = FrozenClock()
    nodes = [node(clock, "n1")]
    clock.advance(100)
    nodes.append(node(clock, "n2"))
    clock.advance(20)
    plan = decide_cluster(cfg(), heartbeat(clock, nodes), [], [], clock.now())
    assert removed(plan) == ["n1"]


def test_an_idle_node_waiting_for_a_gang_partner_is_not_scaled_away():
    clock = FrozenClock()
    nodes = [node(clock, "n1")]
    clock.advance(500)  # long past idle time
    plan = decide_cluster(cfg(), heartbeat(clock, nodes), [queued(clock, "gang", 2)], [], clock.now())
    assert plan.terminate == [] and plan.launch == 1


def test_a_job_ending_frees_its_node_for_the_next_job_in_the_same_pass():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "running", job_name="done")]
    plan = decide_cluster(cfg(), nodes, [queued(clock, "next")], [], clock.now())
    assert plan.assign == [("next", ("n1",))]
    assert plan.node_transitions == [("n1", N.IDLE, "job done ended"), ("n1", N.RUNNING, "assigned to job next")]
    assert plan.launch == 0


def test_lowering_max_drains_idle_nodes_now_and_busy_ones_after_their_job():
    clock = FrozenClock()
    nodes = [
        node(clock, "n1", "running", job_name="a"),
        node(clock, "n2", "running", job_name="b"),
        node(clock, "n3"),
    ]
    running = [RunningJob(name="a", node_ids=("n1",)), RunningJob(name="b", node_ids=("n2",))]
    config = cfg(max_instances=3)
    assert decide_cluster(config, nodes, [], running, clock.now()).terminate == []

    config = replace(config, max_instances=1)  # `cible compute update --max-instances 1`
    plan = decide_cluster(config, nodes, [queued(clock, "q")], running, clock.now())
    assert plan.terminate == [("n3", "above max_instances 1")]
    assert plan.assign == [] and plan.launch == 0 and plan.target_nodes == 1

    # Job a ends: its node is above max, so it leaves instead of taking the queued job.
    nodes = [nodes[0], nodes[1]]
    plan = decide_cluster(config, nodes, [queued(clock, "q")], running[1:], clock.now())
    assert plan.node_transitions == [("n1", N.IDLE, "job a ended"), ("n1", N.LEAVING, "above max_instances 1")]
    assert plan.assign == [] and "q" in plan.waiting

    # Job b ends: n2 is within max and goes to the queued job.
    plan = decide_cluster(config, [nodes[1]], [queued(clock, "q")], [], clock.now())
    assert plan.assign == [("q", ("n2",))] and plan.terminate == []


def test_lowering_max_below_preparing_nodes_cancels_the_newest():
    clock = FrozenClock()
    nodes = [node(clock, "n1", "preparing")]
    clock.advance(5)
    nodes.append(node(clock, "n2", "preparing"))
    plan = decide_cluster(cfg(max_instances=1), nodes, [queued(clock, "a", 1)], [], clock.now())
    assert removed(plan) == ["n2"]


def test_raising_max_and_min_applies_on_the_next_decide():
    clock = FrozenClock()
    jobs = [queued(clock, f"j{i}") for i in range(4)]
    assert decide_cluster(cfg(max_instances=1), [], jobs, [], clock.now()).launch == 1
    assert decide_cluster(cfg(max_instances=3), [node(clock, "n1", "preparing")], jobs, [], clock.now()).launch == 2
    assert decide_cluster(cfg(min_instances=2, max_instances=3), [], [], [], clock.now()).launch == 2


def test_changing_idle_time_applies_on_the_next_decide():
    clock = FrozenClock()
    nodes = [node(clock, "n1")]
    clock.advance(60)
    assert decide_cluster(cfg(), heartbeat(clock, nodes), [], [], clock.now()).terminate == []
    plan = decide_cluster(cfg(idle_time_before_scale_down=60), heartbeat(clock, nodes), [], [], clock.now())
    assert removed(plan) == ["n1"]


def test_min_above_a_lowered_max_is_capped_at_max():
    clock = FrozenClock()
    plan = decide_cluster(cfg(min_instances=3, max_instances=2), [], [], [], clock.now())
    assert plan.launch == 2
