"""The inputs of a compute's decide, and the wait reasons it stores: quota headroom, the start-failure
history and an instance's power go in; the launch, the back-off, the stored queue and each waiting
job's reason (as `job show` reads it back) come out. Pure: no store, no clock but a frozen one."""

from __future__ import annotations

from datetime import timedelta

from cluster_factories import cfg, node

from cible.core import catalog
from cible.core.models.computes import AmlCompute, ComputeInstance
from cible.core.models.records import ComputeStatus, InstanceState, ProvisioningError, StartFailures
from cible.core.planning.clusters import NodeView, QueuedJob, RunningJob, decide_cluster
from cible.core.planning.compute_plan import ComputeSnapshot, decide_compute
from cible.core.planning.quotas import NodeUse, QuotaHeadroom, QuotaLimits, Usage
from cible.core.planning.scheduling import queued_reason
from cible.testing import FrozenClock

SIZE = catalog.get_size("Standard_DS1_v2")  # 1 vCPU


def queued(clock: FrozenClock, name: str, n: int = 1) -> QueuedJob:
    clock.advance(1)
    return QueuedJob(name=name, submitted_at=clock.now(), instance_count=n)


def headroom(total: int | None, used: int = 0) -> QuotaHeadroom:
    return QuotaHeadroom(QuotaLimits(total_vcpus=total), Usage({SIZE.family: used}, used, 0))


def test_the_quota_cuts_the_launch_and_every_waiting_job_says_so():
    clock = FrozenClock()
    jobs = [queued(clock, "j1"), queued(clock, "j2"), queued(clock, "j3")]
    plan = decide_cluster(cfg(max_instances=3, vcpus_per_node=1, family=SIZE.family), [], jobs, [], clock.now(),
                          quota=headroom(total=3, used=2))
    assert plan.launch == 1 and plan.target_nodes == 3  # the target stays what the queue needs
    assert plan.observed.quota_wait.startswith("quota: total dedicated vCPUs: 2 of 3 in use, room for 1 of 3")
    assert plan.waiting["j1"] == ("position 1 in the queue of cpu-cluster: waiting for 1 node: 0 idle, 1 starting, "
                                  f"max 3; {plan.observed.quota_wait}")
    assert plan.waiting["j3"].startswith("position 3 in the queue of cpu-cluster: waiting for the 2 jobs ahead")


def test_the_headroom_grows_by_the_nodes_a_plan_launched():
    room = headroom(total=4, used=1).with_nodes(NodeUse(SIZE.family, 1), 2)
    assert room.fit(family=SIZE.family, vcpus_per_node=1, low_priority=False, wanted=3)[0] == 1
    assert headroom(total=4).with_nodes(NodeUse(SIZE.family, 1, low_priority=True), 3).usage.total == 0


def test_a_node_that_dies_preparing_starts_the_back_off_stored_in_the_status():
    clock = FrozenClock()
    gone = node(clock, "n1", "preparing", present=False, start_error="its launch failed: no capacity")
    before = ComputeStatus(start_failures=StartFailures(count=2, retry_at=clock.now()))
    plan = decide_cluster(cfg(min_instances=1), [gone], [], [], clock.now(), observed=before)
    assert plan.node_transitions == [("n1", "removed", "it did not start: its launch failed: no capacity")]
    failures = plan.observed.start_failures
    assert (failures.count, failures.retry_at, failures.last_node) == (3, clock.now() + timedelta(seconds=4), "n1")
    assert plan.launch == 0  # not again before the retry time
    [error] = plan.observed.provisioning_errors
    assert error.code == "NodeStartFailed"
    assert error.message == ("3 node(s) in a row failed to start; the last, n1: its launch failed: no capacity; "
                             "trying again in 4 s")


def test_the_back_off_holds_launches_until_its_retry_time_and_a_ready_node_ends_it():
    clock = FrozenClock()
    failing = ComputeStatus(start_failures=StartFailures(count=7, retry_at=clock.now() + timedelta(seconds=60)),
                            provisioning_errors=[ProvisioningError(code="NodeStartFailed", message="7 in a row")])
    job = [queued(clock, "j1")]
    held = decide_cluster(cfg(), [], job, [], clock.now(), observed=failing)
    assert held.launch == 0 and held.observed.start_failures == failing.start_failures
    assert held.waiting["j1"].endswith("; nodes fail to start: 7 in a row")
    clock.advance(60)
    assert decide_cluster(cfg(), [], job, [], clock.now(), observed=failing).launch == 1
    ready = node(clock, "n1", "preparing", last_heartbeat=clock.now())
    over = decide_cluster(cfg(max_instances=2), [ready], [*job, queued(clock, "j2")], [], clock.now(), observed=failing)
    assert over.observed.start_failures is None and over.observed.provisioning_errors is None and over.launch == 1


def test_a_requeued_job_keeps_its_place_in_the_stored_queue():
    clock = FrozenClock()
    first = clock.now()
    waiting = queued(clock, "later")
    lost = node(clock, "n1", "running", job_name="early", present=False)
    running = [RunningJob(name="early", node_ids=("n1",), submitted_at=first)]
    plan = decide_cluster(cfg(max_instances=1), [lost], [waiting], running, clock.now())
    assert plan.requeue and plan.observed.queue.jobs == ["early", "later"]
    assert plan.waiting["later"].startswith("position 2 in the queue of cpu-cluster")


def snapshot(**kw: object) -> ComputeSnapshot:
    spec = AmlCompute(name="pool", size=SIZE.name, max_instances=2)
    return ComputeSnapshot(**{"name": "c", "kind": "amlcompute", "spec": spec, "size": SIZE, **kw})


def test_a_stopped_instance_keeps_no_node_and_its_jobs_say_how_to_start_it():
    clock = FrozenClock()
    power = InstanceState(power="off", power_reason="stopped by alice")
    running_node = node(clock, "n1", "running", job_name="other")
    base = {"name": "ci", "kind": "computeinstance", "spec": ComputeInstance(name="ci", size=SIZE.name),
            "observed": ComputeStatus(instance=power), "queued": (queued(clock, "j"),)}
    stopping = decide_compute(snapshot(**base, nodes=(running_node,),
                                       running=(RunningJob(name="other", node_ids=("n1",)),)), clock.now())
    assert stopping.launch == 0
    assert stopping.waiting["j"] == ("compute instance ci is Stopping (stopped by alice); the job starts once it "
                                     "runs again: `cible compute start ci`")
    stopped = decide_compute(snapshot(**base), clock.now())
    assert stopped.waiting["j"].startswith("compute instance ci is Stopped (stopped by alice)")


def test_a_serverless_pool_waits_for_its_own_nodes_and_goes_once_its_job_ended():
    clock = FrozenClock()
    base = {"name": "serverless:j", "kind": "serverless", "pool_job": "j"}
    waiting = decide_compute(snapshot(**base, queued=(queued(clock, "j", 2),)), clock.now())
    assert waiting.launch == 2
    assert waiting.waiting["j"] == "waiting for its serverless nodes: 2 x Standard_DS1_v2, 2 starting, 0 ready"
    idle = node(clock, "n1")
    ended = decide_compute(snapshot(**base, nodes=(idle,), pool_job_ended=True), clock.now())
    assert ended.provisioning == ("Deleting", "job j ended: the serverless nodes made for it go with it")
    assert [(n, t.value) for n, t, _ in ended.node_transitions] == [("n1", "leaving")]


def test_nothing_changes_while_the_provider_cannot_tell_its_nodes():
    clock = FrozenClock()
    held = decide_compute(snapshot(seen=False, nodes=(node(clock, "n1"),), queued=(queued(clock, "j"),)),
                          clock.now())
    assert held.hold and not held.node_transitions and held.launch == 0


def test_the_reason_of_a_job_not_decided_yet():
    status = ComputeStatus(instance=InstanceState(power="off", power_reason="idle shutdown"))
    assert queued_reason("ci", status, "j", 1).startswith("compute instance ci is Stopped (idle shutdown)")
    assert queued_reason("serverless:j", ComputeStatus(), "j", 3, pool_size="Standard_DS1_v2") == (
        "waiting for its serverless nodes: 3 x Standard_DS1_v2, 0 starting, 0 ready")
    assert queued_reason("cpu", ComputeStatus(), "j", 1) == "queued on cpu: the scheduler places it on its next pass"


def test_an_engine_without_room_is_said_after_the_position():
    clock = FrozenClock()
    nodes: list[NodeView] = [node(clock, "n1", "preparing")]
    plan = decide_cluster(cfg(max_instances=1), nodes, [queued(clock, "j")], [], clock.now(),
                          engine_waiting="Ray has no room for node n1 yet")
    assert plan.waiting["j"] == ("position 1 in the queue of cpu-cluster: waiting for 1 node: 0 idle, 1 starting, "
                                 "max 1; Ray has no room for node n1 yet")
