"""FIFO gang placement, admission ("can never fit"), and the waiting reason shown by `cible job show`."""

from __future__ import annotations

from datetime import timedelta

from cluster_factories import cfg, node

from cible.core.lifecycle.nodes import NodeState
from cible.core.planning.clusters import (
    NodeView,
    QueuedJob,
    RunningJob,
    admission_error,
    decide_cluster,
)
from cible.testing import FrozenClock

N = NodeState


def queued(clock: FrozenClock, name: str, n: int = 1, **kw) -> QueuedJob:
    clock.advance(1)  # each submission a second after the last: FIFO order is submission order
    return QueuedJob(name=name, submitted_at=clock.now(), instance_count=n, **kw)


def test_a_gang_job_waits_until_all_its_nodes_are_idle_and_says_why():
    clock = FrozenClock()
    nodes = [node(clock, "n1"), node(clock, "n2", "preparing")]
    plan = decide_cluster(cfg(), nodes, [queued(clock, "gang", 2)], [], clock.now())
    assert plan.assign == [] and plan.launch == 0
    assert plan.waiting == {
        "gang": "position 1 in the queue of cpu-cluster: waiting for 2 nodes: 1 idle, 1 starting, max 2"
    }


def test_a_gang_job_gets_all_its_nodes_at_once():
    clock = FrozenClock()
    nodes = [node(clock, "n1"), node(clock, "n2"), node(clock, "n3")]
    plan = decide_cluster(cfg(max_instances=3), nodes, [queued(clock, "gang", 2)], [], clock.now())
    assert len(plan.assign) == 1
    job, node_ids = plan.assign[0]
    assert job == "gang" and len(node_ids) == 2 and len(set(node_ids)) == 2
    assert [t for t in plan.node_transitions if t[1] == N.RUNNING] == [
        (i, N.RUNNING, "assigned to job gang") for i in node_ids
    ]


def test_a_gang_job_launches_every_node_it_needs_not_fewer():
    clock = FrozenClock()
    plan = decide_cluster(cfg(max_instances=4), [], [queued(clock, "gang", 3)], [], clock.now())
    assert plan.launch == 3
    assert plan.waiting["gang"].endswith("waiting for 3 nodes: 0 idle, 3 starting, max 4")


def test_strict_fifo_a_small_job_does_not_jump_a_waiting_gang():
    clock = FrozenClock()
    nodes = [node(clock, "n1"), node(clock, "n2", "running", job_name="busy")]
    jobs = [queued(clock, "gang", 2), queued(clock, "small", 1)]
    plan = decide_cluster(cfg(), nodes, jobs, [RunningJob(name="busy", node_ids=("n2",))], clock.now())
    assert plan.assign == []
    assert plan.waiting == {
        "gang": "position 1 in the queue of cpu-cluster: waiting for 2 nodes: 1 idle, 0 starting, 1 busy, max 2",
        "small": "position 2 in the queue of cpu-cluster: waiting for the 1 job ahead of it (FIFO); needs 1 node",
    }


def test_order_is_submission_time_not_list_order():
    clock = FrozenClock()
    first, second = queued(clock, "first"), queued(clock, "second")
    plan = decide_cluster(cfg(), [node(clock, "n1")], [second, first], [], clock.now())
    assert plan.assign == [("first", ("n1",))]
    assert plan.waiting["second"].startswith("position 1 in the queue of cpu-cluster: waiting for 1 node:")


def test_jobs_fill_idle_nodes_in_order_and_the_rest_wait_with_positions():
    clock = FrozenClock()
    nodes = [node(clock, "n1"), node(clock, "n2")]
    jobs = [queued(clock, f"j{i}") for i in range(5)]
    plan = decide_cluster(cfg(), nodes, jobs, [], clock.now())
    assert [job for job, _ in plan.assign] == ["j0", "j1"]
    assert {nodes for _, nodes in plan.assign} == {("n1",), ("n2",)}
    assert [plan.waiting[j][:10] for j in ("j2", "j3", "j4")] == ["position 1", "position 2", "position 3"]
    assert plan.waiting["j4"].endswith("waiting for the 2 jobs ahead of it (FIFO); needs 1 node")


def test_the_most_recently_idle_node_is_given_out_first():
    clock = FrozenClock()
    old = node(clock, "n-old")
    clock.advance(50)
    new = node(clock, "n-new", last_heartbeat=clock.now())
    old = NodeView(**{**old.__dict__, "last_heartbeat": clock.now()})
    plan = decide_cluster(cfg(), [old, new], [queued(clock, "j")], [], clock.now())
    assert plan.assign == [("j", ("n-new",))]


def test_a_job_that_no_longer_fits_after_max_is_lowered_fails_and_stops_blocking():
    clock = FrozenClock()
    jobs = [queued(clock, "big", 3), queued(clock, "small", 1)]
    plan = decide_cluster(cfg(max_instances=2), [node(clock, "n1")], jobs, [], clock.now())
    never = "the job needs 3 nodes (resources.instance_count) but compute cluster cpu-cluster has max_instances 2"
    assert plan.fail == [("big", f"{never}; it could never start")]
    assert plan.assign == [("small", ("n1",))]


def test_a_job_already_holding_nodes_is_not_placed_again():
    clock = FrozenClock()
    nodes = [node(clock, "n1"), node(clock, "n2", "running", job_name="j")]
    plan = decide_cluster(cfg(), nodes, [queued(clock, "j")], [RunningJob(name="j", node_ids=("n2",))], clock.now())
    assert plan.assign == [] and plan.waiting == {}


def test_admission_says_why_a_job_could_never_run():
    assert admission_error(cfg(max_instances=2), 2) is None
    assert "max_instances 2" in admission_error(cfg(max_instances=2), 3)
    assert "at least 1" in admission_error(cfg(), 0)
    assert "being deleted" in admission_error(cfg(deleting=True), 1)


def test_waiting_text_counts_only_nodes_the_job_could_use():
    clock = FrozenClock()
    nodes = [
        node(clock, "n1", "leaving"),
        node(clock, "n2", "preparing", created_at=clock.now() - timedelta(seconds=5)),
    ]
    plan = decide_cluster(cfg(max_instances=3), nodes, [queued(clock, "gang", 3)], [], clock.now())
    assert plan.launch == 2
    assert plan.waiting["gang"].endswith("waiting for 3 nodes: 0 idle, 3 starting, max 3")


def test_the_queues_head_gives_the_plan_of_the_whole_queue_and_says_more_wait():
    """The pass reads max_instances + 1 queued jobs (cluster_pass's load): placement and scaling
    must come out as the whole queue's would, whatever the nodes and the gangs."""
    from cible.core.planning.scheduling import queued_reason

    for busy, idle, sizes in [(0, 3, [1]), (0, 0, [1] * 40), (1, 1, [1] * 40), (0, 2, [2, 1] * 20), (2, 0, [3, 1] * 20)]:
        clock = FrozenClock()
        nodes = [node(clock, f"i{k}") for k in range(idle)] + [
            node(clock, f"b{k}", "running", job_name=f"busy{k}") for k in range(busy)]
        running = [RunningJob(name=f"busy{k}", node_ids=(f"b{k}",)) for k in range(busy)]
        jobs = [queued(clock, f"j{k:02d}", n) for k, n in enumerate(sizes)]
        config = cfg(max_instances=4)
        whole = decide_cluster(config, nodes, jobs, running, clock.now())
        depth = config.max_instances + 1
        head = decide_cluster(config, nodes, jobs[:depth], running, clock.now(), queue_more=len(jobs) > depth)
        assert (head.assign, head.launch, head.target_nodes, head.node_transitions, head.fail) == (
            whole.assign, whole.launch, whole.target_nodes, whole.node_transitions, whole.fail), (busy, idle, sizes)
        assert whole.observed.queue.jobs[:len(head.observed.queue.jobs)] == head.observed.queue.jobs
        assert head.observed.queue.more == (len(jobs) > depth) and head.observed.queue.head == whole.observed.queue.head
    # A job behind the stored head (of the last case) counts the jobs ahead of it.
    reason = queued_reason("cpu-cluster", head.observed, "j30", 1, ahead=lambda: 29)
    assert reason == "position 30 in the queue of cpu-cluster: waiting for the 29 jobs ahead of it (FIFO); needs 1 node"
