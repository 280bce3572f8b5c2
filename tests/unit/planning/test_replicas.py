"""Replica planning, driven with a frozen clock: the autoscaler's count (scale up, cool-down,
scale to zero and back on demand) and the replica plan (rolling update step by step, probes,
crash-loop back-off), applied by a small fake reconciler as the real one applies them."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import pytest

from cible.core.lifecycle.endpoints import ProvisioningState, ReplicaState, check_replica_transition
from cible.core.models import OnlineDeployment
from cible.core.planning.replicas import (
    CRASH_RESET_S,
    SCALE_TO_ZERO_IDLE_S,
    CrashLoop,
    Load,
    Probe,
    Probes,
    ReplicaPlan,
    ReplicaView,
    ScalePolicy,
    ScaleState,
    decide_replicas,
    deployment_provisioning,
    desired_count,
    next_probe_at,
)
from cible.testing import FrozenClock

R = ReplicaState
P = ProvisioningState
# Azure's defaults, except a readiness failure threshold that keeps the tests short.
PROBES = Probes(liveness=Probe(), readiness=Probe(failure_threshold=3))


class FakeReconciler:
    """Applies plans to replica records as the endpoint reconciler does: moves through the table,
    entering Ready sets ready_since and restarts the probe counters, `start` adds Starting replicas."""

    def __init__(self, clock: FrozenClock, probes: Probes = PROBES) -> None:
        self.clock, self.probes = clock, probes
        self.replicas: dict[str, ReplicaView] = {}
        self.crash: CrashLoop | None = None
        self.started = 0
        self.history: list[ReplicaPlan] = []

    def add(self, version: int, state: ReplicaState = R.READY, **kw) -> str:
        self.started += 1
        name = f"r{self.started}"
        now = self.clock.now()
        self.replicas[name] = ReplicaView(name=name, version=version, state=state, started_at=now,
                                          ready_since=now if state == R.READY else None, **kw)
        return name

    def live(self) -> int:
        return sum(1 for r in self.replicas.values() if r.state in (R.STARTING, R.READY, R.UNREADY))

    def tick(self, version: int, desired: int) -> ReplicaPlan:
        live = [r for r in self.replicas.values() if r.state != R.STOPPED]
        plan = decide_replicas(version, desired, live, self.probes, self.clock.now(), crash=self.crash)
        now = self.clock.now()
        for name, target, _ in plan.transitions:
            replica = self.replicas[name]
            check_replica_transition(replica.state, target)
            update = {"state": target}
            if target == R.READY:
                update.update(ready_since=now, readiness_successes=0, readiness_failures=0)
            self.replicas[name] = replace(replica, **update)
        self.crash = plan.crash
        for start in plan.start:
            self.add(start.version, R.STARTING)
        self.history.append(plan)
        return plan

    # What the probes and the processes report between two passes.
    def passes_readiness(self, *names: str) -> None:
        for name in names:
            self.replicas[name] = replace(self.replicas[name], readiness_successes=1, readiness_failures=0)

    def observe(self, name: str, **kw) -> None:
        self.replicas[name] = replace(self.replicas[name], **kw)

    def stopping_ends(self) -> None:
        for name, replica in self.replicas.items():
            if replica.state in (R.STOPPING, R.FAILED):
                self.replicas[name] = replace(replica, ended=True)

    def named(self, state: ReplicaState, version: int | None = None) -> list[str]:
        return sorted(n for n, r in self.replicas.items()
                      if r.state == state and (version is None or r.version == version))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


# ---- the autoscaler's count ----------------------------------------------------------------------


def autoscale(**kw) -> ScalePolicy:
    return ScalePolicy(**{"type": "target_utilization", "min_instances": 1, "max_instances": 5,
                          "polling_interval_s": 1.0, "target_concurrency": 1.0, **kw})


def test_default_scale_settings_follow_instance_count(clock):
    policy = ScalePolicy(instance_count=3)
    state = desired_count(policy, Load(in_flight=50), None, clock.now())
    assert (state.count, state.changed_at) == (3, clock.now())
    clock.advance(5)
    again = desired_count(policy, Load(), state, clock.now())
    assert (again.count, again.changed_at) == (3, state.changed_at)  # unchanged: no new change time
    updated = desired_count(replace(policy, instance_count=1), Load(), again, clock.now())
    assert (updated.count, updated.changed_at) == (1, clock.now())  # at once, no cool-down


@pytest.mark.parametrize("low, high, expected", [(0, 5, 1), (1, 5, 1), (2, 5, 2), (0, 1, 1)])
def test_a_new_autoscaled_deployment_starts_with_at_least_one_replica(clock, low, high, expected):
    assert desired_count(autoscale(min_instances=low, max_instances=high), Load(), None, clock.now()).count == expected


def test_scale_up_to_the_in_flight_requests_clamped_to_max(clock):
    state = ScaleState(count=1, changed_at=clock.now())
    clock.advance(1)
    assert desired_count(autoscale(), Load(in_flight=3.2), state, clock.now()).count == 4
    assert desired_count(autoscale(), Load(in_flight=40), state, clock.now()).count == 5
    assert desired_count(autoscale(target_concurrency=4), Load(in_flight=9), state, clock.now()).count == 3
    # Floating noise does not cost a replica: 2.0000000001 in flight is 2.
    assert desired_count(autoscale(), Load(in_flight=2 + 1e-10), state, clock.now()).count == 2


def test_scale_up_at_most_once_per_polling_interval(clock):
    policy = autoscale(polling_interval_s=10, max_instances=10)
    state = ScaleState(count=1, changed_at=clock.now())
    clock.advance(10)
    state = desired_count(policy, Load(in_flight=2), state, clock.now())
    assert state.count == 2
    clock.advance(4)
    held = desired_count(policy, Load(in_flight=6), state, clock.now())
    assert held.count == 2 and "polling_interval" in held.reason
    clock.advance(6)
    assert desired_count(policy, Load(in_flight=6), held, clock.now()).count == 6


def test_scale_down_waits_for_the_cool_down_and_keeps_the_windows_peak(clock):
    policy = autoscale(max_instances=10)
    state = ScaleState(count=6, changed_at=clock.now())
    clock.advance(5)
    state = desired_count(policy, Load(in_flight=3, last_request_at=clock.now()), state, clock.now())
    assert (state.count, state.low_since, state.low_peak) == (6, clock.now(), 3)
    for _ in range(5):  # a quieter minute: 1 in flight
        clock.advance(10)
        state = desired_count(policy, Load(in_flight=1, last_request_at=clock.now()), state, clock.now())
        assert state.count == 6
    clock.advance(10)  # 60 s since fewer would do: down to the most needed in that window, not to 1
    state = desired_count(policy, Load(in_flight=1, last_request_at=clock.now()), state, clock.now())
    assert (state.count, state.changed_at, state.low_since) == (3, clock.now(), None)
    # The cool-down starts again from the first pass that sees fewer would do.
    counts = []
    for _ in range(61):
        clock.advance(1)
        state = desired_count(policy, Load(in_flight=1, last_request_at=clock.now()), state, clock.now())
        counts.append(state.count)
    assert counts == [3] * 60 + [1]


def test_a_burst_during_the_cool_down_starts_it_again(clock):
    policy = autoscale(max_instances=10)
    state = ScaleState(count=4, changed_at=clock.now())
    clock.advance(30)
    state = desired_count(policy, Load(in_flight=1, last_request_at=clock.now()), state, clock.now())
    clock.advance(50)
    state = desired_count(policy, Load(in_flight=4, last_request_at=clock.now()), state, clock.now())
    assert (state.count, state.low_since) == (4, None)
    clock.advance(20)  # 100 s after the first lull, but only 20 s after the burst
    state = desired_count(policy, Load(in_flight=1, last_request_at=clock.now()), state, clock.now())
    assert state.count == 4


def test_min_and_max_changed_by_an_update_apply_at_once(clock):
    state = ScaleState(count=5, changed_at=clock.now())
    assert desired_count(autoscale(max_instances=2), Load(in_flight=9), state, clock.now()).count == 2
    state = ScaleState(count=1, changed_at=clock.now())
    assert desired_count(autoscale(min_instances=3), Load(), state, clock.now()).count == 3


def test_scale_to_zero_after_the_idle_window_and_back_on_demand(clock):
    policy = autoscale(min_instances=0, max_instances=3, idle_to_zero_s=120)
    state = desired_count(policy, Load(), None, clock.now())
    assert state.count == 1  # created warm
    clock.advance(30)
    last_request = clock.now()
    state = desired_count(policy, Load(in_flight=1, last_request_at=last_request), state, clock.now())
    clock.advance(119)
    state = desired_count(policy, Load(last_request_at=last_request), state, clock.now())
    assert state.count == 1  # one stays warm for the idle window
    clock.advance(1)
    state = desired_count(policy, Load(last_request_at=last_request), state, clock.now())
    assert state.count == 0 and "scaled to zero" in state.reason
    clock.advance(600)
    state = desired_count(policy, Load(last_request_at=last_request), state, clock.now())
    assert state.count == 0  # no flapping back
    # A request arrives and waits: one replica at once, however recent the last change.
    state = desired_count(policy, Load(waiting=True, last_request_at=last_request), state, clock.now())
    assert (state.count, state.changed_at) == (1, clock.now())
    clock.advance(5)  # it is starting; the waiting request is not counted yet as a finished one
    state = desired_count(policy, Load(waiting=True, last_request_at=last_request), state, clock.now())
    assert state.count == 1
    clock.advance(100)  # served, then quiet: the idle window runs from the scale-up, not the old request
    state = desired_count(policy, Load(last_request_at=last_request), state, clock.now())
    assert state.count == 1


def test_a_replica_still_starting_is_not_idle_and_the_window_starts_once_one_is_ready(clock):
    policy = autoscale(min_instances=0, max_instances=3, idle_to_zero_s=10)
    state = ScaleState(count=1, changed_at=clock.now())  # scaled up from zero, or a new deployment
    clock.advance(60)  # a cold start far longer than the idle window
    state = desired_count(policy, Load(warming=True), state, clock.now())
    assert state.count == 1
    ready_at = clock.now()
    clock.advance(9)
    assert desired_count(policy, Load(ready_since=ready_at), state, clock.now()).count == 1
    clock.advance(1)
    assert desired_count(policy, Load(ready_since=ready_at), state, clock.now()).count == 0


def test_no_idle_window_without_min_zero(clock):
    policy = autoscale(min_instances=1)
    state = ScaleState(count=1, changed_at=clock.now())
    clock.advance(10_000)
    assert desired_count(policy, Load(), state, clock.now()).count == 1


@pytest.mark.parametrize("in_flight, expected", [(math.nan, 1), (-3.0, 1), (math.inf, 5)])
def test_absurd_load_readings_stay_within_bounds(clock, in_flight, expected):
    state = ScaleState(count=1, changed_at=clock.now())
    clock.advance(1)
    assert desired_count(autoscale(), Load(in_flight=in_flight), state, clock.now()).count == expected


def test_policy_and_probes_from_a_deployment_spec():
    deployment = OnlineDeployment.model_validate({
        "name": "blue", "endpoint_name": "my-endpoint", "model": {"path": "m", "type": "mlflow_model"},
        "instance_type": "Standard_DS3_v2", "request_settings": {"max_concurrent_requests_per_instance": 4},
        "scale_settings": {"type": "target_utilization", "min_instances": 0, "max_instances": 3,
                           "polling_interval": 5},
        "liveness_probe": {"initial_delay": 3, "failure_threshold": 2}})
    assert ScalePolicy.of(deployment) == ScalePolicy(type="target_utilization", instance_count=1, min_instances=0,
                                                     max_instances=3, polling_interval_s=5.0, target_concurrency=4.0)
    probes = Probes.of(deployment)
    assert (probes.liveness.initial_delay, probes.liveness.failure_threshold) == (3, 2)
    assert probes.readiness == Probe()
    assert ScalePolicy.of(deployment.model_copy(update={"scale_settings": {"type": "default"}})).type == "default"


def test_the_idle_window_before_scaling_to_zero_is_a_scale_setting():
    def policy(**settings) -> ScalePolicy:
        return ScalePolicy.of(OnlineDeployment.model_validate({
            "name": "blue", "endpoint_name": "my-endpoint", "model": {"path": "m", "type": "mlflow_model"},
            "instance_type": "Standard_DS3_v2",
            "scale_settings": {"type": "target_utilization", "min_instances": 0, **settings}}))

    assert policy().idle_to_zero_s == SCALE_TO_ZERO_IDLE_S
    assert policy(idle_time_before_scale_to_zero=5).idle_to_zero_s == 5.0


def test_next_probe_follows_azures_schedule(clock):
    started = clock.now()
    probe = Probe(initial_delay=10, period=5)
    assert next_probe_at(started, None, probe) == started + _s(10)
    assert next_probe_at(started, started + _s(10), probe) == started + _s(15)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# ---- the replica plan ----------------------------------------------------------------------------


def test_a_new_deployment_starts_its_replicas_and_succeeds_once_they_are_ready(clock):
    world = FakeReconciler(clock)
    plan = world.tick(1, 2)
    assert [s.version for s in plan.start] == [1, 1]
    assert plan.in_traffic == () and plan.awaiting_replica and not plan.settled
    assert deployment_provisioning(P.CREATING, plan) is None
    clock.advance(2)
    plan = world.tick(1, 2)
    assert plan.start == [] and plan.transitions == []  # starting: nothing to do twice
    world.passes_readiness("r1", "r2")
    plan = world.tick(1, 2)
    assert [(n, s) for n, s, _ in plan.transitions] == [("r1", R.READY), ("r2", R.READY)]
    assert plan.in_traffic == ("r1", "r2") and plan.settled and plan.ready == 2
    assert deployment_provisioning(P.CREATING, plan) == (P.SUCCEEDED, "2 replica(s) ready")
    assert deployment_provisioning(P.SUCCEEDED, plan) is None


def test_rolling_update_one_replica_at_a_time_never_below_the_ready_count(clock):
    world = FakeReconciler(clock)
    world.add(1)
    world.add(1)
    served, running = [], []  # the replicas in traffic, and those running, after each pass
    # v2: one new replica (surge 1); the old ones keep serving.
    plan = world.tick(2, 2)
    assert len(plan.start) == 1 and plan.stop == []
    served.append(plan.in_traffic)
    running.append(world.live())
    assert deployment_provisioning(P.UPDATING, plan) is None
    # While it starts, nothing else happens.
    clock.advance(3)
    plan = world.tick(2, 2)
    assert plan.start == [] and plan.stop == []
    served.append(plan.in_traffic)
    running.append(world.live())
    # Ready: one old replica goes, the next new one starts, in the same pass.
    world.passes_readiness("r3")
    clock.advance(1)
    plan = world.tick(2, 2)
    assert [name for name, _ in plan.stop] == ["r1"]
    assert len(plan.start) == 1
    assert plan.in_traffic == ("r2", "r3")
    served.append(plan.in_traffic)
    running.append(world.live())
    # The old replica's process ends: Stopped.
    world.stopping_ends()
    clock.advance(3)
    plan = world.tick(2, 2)
    assert ("r1", R.STOPPED, "its process has ended") in plan.transitions
    served.append(plan.in_traffic)
    running.append(world.live())
    # The second new one is ready: the last old one goes.
    world.passes_readiness("r4")
    plan = world.tick(2, 2)
    assert [name for name, _ in plan.stop] == ["r2"] and plan.start == []
    assert plan.in_traffic == ("r3", "r4") and plan.settled
    served.append(plan.in_traffic)
    running.append(world.live())
    assert deployment_provisioning(P.UPDATING, plan) == (P.SUCCEEDED, "2 replica(s) ready")
    assert all(len(names) >= 2 for names in served)  # never fewer ready replicas than wanted: no request fails
    assert max(running) == 3  # surge 1: never more than one replica above the count


def test_rolling_update_of_one_replica_keeps_the_old_one_until_the_new_one_is_ready(clock):
    world = FakeReconciler(clock)
    old = world.add(1)
    plan = world.tick(2, 1)
    new = world.named(R.STARTING)[0]
    assert plan.in_traffic == (old,)
    for _ in range(5):
        clock.advance(5)
        assert world.tick(2, 1).in_traffic == (old,)  # the only ready replica is never taken out
    world.passes_readiness(new)
    plan = world.tick(2, 1)
    assert plan.stop == [(old, "replaced by a ready replica of version 2")]
    assert plan.in_traffic == (new,)


def test_a_new_version_that_crashes_leaves_the_old_one_serving(clock):
    world = FakeReconciler(clock)
    old = world.add(1)
    world.tick(2, 1)
    for attempt in range(3):
        new = world.named(R.STARTING, version=2)
        assert len(new) == 1
        clock.advance(1)
        world.observe(new[0], ended=True, error="init() raised ValueError: bad model")
        plan = world.tick(2, 1)
        assert plan.in_traffic == (old,)
        assert (plan.failure is not None) == (attempt == 2)
        clock.advance(10)  # past the back-off: the next pass starts another
        world.tick(2, 1)
    assert world.replicas[old].state == R.READY
    assert "init() raised ValueError: bad model" in plan.failure


def test_old_replicas_that_are_not_ready_go_at_once(clock):
    world = FakeReconciler(clock)
    world.add(1, R.UNREADY)
    world.add(1, R.STARTING)
    ready_old = world.add(1)
    plan = world.tick(2, 2)
    assert sorted(name for name, _ in plan.stop) == ["r1", "r2"]
    assert len(plan.start) == 2  # two old ones gone: room for two new ones within the surge
    assert plan.in_traffic == (ready_old,)


def test_a_rolling_update_and_a_scale_down_together(clock):
    world = FakeReconciler(clock)
    for _ in range(3):
        world.add(1)
    plan = world.tick(2, 1)
    # Two old ready replicas are more than needed: they go at once; one stays until v2 is ready.
    assert [name for name, _ in plan.stop] == ["r1", "r2"]
    assert len(plan.start) == 1 and plan.in_traffic == ("r3",)
    assert world.tick(2, 1).start == []


def test_scale_up_starts_all_missing_replicas_at_once(clock):
    world = FakeReconciler(clock)
    world.add(1)
    plan = world.tick(1, 4)
    assert len(plan.start) == 3 and plan.stop == []


def test_scale_down_stops_unready_replicas_first_then_the_newest(clock):
    world = FakeReconciler(clock)
    world.add(1)
    clock.advance(10)
    world.add(1)
    clock.advance(10)
    world.add(1, R.STARTING)
    plan = world.tick(1, 2)
    assert plan.stop == [("r3", "scaled down to 2 replica(s)")]
    plan = world.tick(1, 1)
    assert plan.stop == [("r2", "scaled down to 1 replica(s)")]
    assert plan.in_traffic == ("r1",)


def test_scale_to_zero_and_back(clock):
    world = FakeReconciler(clock)
    world.add(1)
    plan = world.tick(1, 0)
    assert plan.stop == [("r1", "scaled down to 0 replica(s)")]
    assert plan.in_traffic == () and not plan.awaiting_replica and plan.settled
    world.stopping_ends()
    world.tick(1, 0)
    assert world.replicas["r1"].state == R.STOPPED
    clock.advance(300)
    plan = world.tick(1, 1)  # wanted on demand
    assert len(plan.start) == 1 and plan.awaiting_replica
    world.passes_readiness("r2")
    plan = world.tick(1, 1)
    assert plan.in_traffic == ("r2",) and not plan.awaiting_replica


def test_liveness_failures_restart_a_replica_after_the_initial_delay(clock):
    world = FakeReconciler(clock, Probes(liveness=Probe(initial_delay=10, failure_threshold=3)))
    name = world.add(1)
    world.observe(name, liveness_failures=3)
    clock.advance(5)  # failures before initial_delay do not count
    assert world.tick(1, 1).stop == []
    clock.advance(5)
    plan = world.tick(1, 1)
    assert plan.stop == [(name, "its liveness probe failed 3 times in a row: restarted")]
    assert (name, R.STOPPING, "its liveness probe failed 3 times in a row: restarted") in plan.transitions
    assert len(plan.start) == 1  # replaced at once: the first failure has no back-off
    assert plan.in_traffic == () and plan.awaiting_replica
    assert plan.crash.count == 1


def test_readiness_takes_an_unready_replica_out_of_traffic_and_back(clock):
    world = FakeReconciler(clock)
    a, b = world.add(1), world.add(1)
    world.observe(a, readiness_failures=2)
    assert world.tick(1, 2).in_traffic == (a, b)  # below the threshold (3)
    world.observe(a, readiness_failures=3)
    plan = world.tick(1, 2)
    assert (a, R.UNREADY, "its readiness probe failed 3 times in a row: out of traffic") in plan.transitions
    assert plan.in_traffic == (b,) and plan.stop == [] and plan.start == []  # kept running, not replaced
    assert not plan.settled
    world.passes_readiness(a)
    plan = world.tick(1, 2)
    assert plan.in_traffic == (a, b) and plan.settled


def test_readiness_success_threshold(clock):
    world = FakeReconciler(clock, Probes(readiness=Probe(success_threshold=2)))
    world.tick(1, 1)
    world.observe("r1", readiness_successes=1)
    assert world.tick(1, 1).in_traffic == ()
    world.observe("r1", readiness_successes=2)
    assert world.tick(1, 1).in_traffic == ("r1",)


def test_a_replica_that_never_gets_ready_fails_after_azures_readiness_window(clock):
    probes = Probes(readiness=Probe(initial_delay=10, period=10, failure_threshold=3))  # 40 s
    world = FakeReconciler(clock, probes)
    world.tick(1, 1)
    clock.advance(40)
    assert world.tick(1, 1).transitions == []
    clock.advance(1)
    plan = world.tick(1, 1)
    assert plan.transitions == [("r1", R.FAILED, "it did not get ready within 40 s")]
    assert plan.stop == [("r1", "it did not get ready within 40 s")]  # its process is still there
    assert len(plan.start) == 1


def test_a_broken_init_backs_off_and_reports_failed_with_the_reason(clock):
    world = FakeReconciler(clock)
    world.tick(1, 1)
    waits = []
    for _ in range(6):
        starting = world.named(R.STARTING)
        assert len(starting) == 1, "one replica at a time, never a spin"
        clock.advance(1)
        world.observe(starting[0], ended=True, error="init() raised: FileNotFoundError: model.pkl")
        plan = world.tick(1, 1)
        waits.append((plan.crash.retry_at - clock.now()).total_seconds())
        while not plan.start:  # held by the back-off: passes come every second
            assert plan.retry_at == world.crash.retry_at
            clock.advance(1)
            plan = world.tick(1, 1)
        world.stopping_ends()
    assert waits == [0, 1, 2, 4, 8, 16]
    assert plan.failure.startswith("6 replicas in a row failed; the last, r6: its process ended: init() raised: "
                                   "FileNotFoundError: model.pkl")
    assert deployment_provisioning(P.CREATING, plan) == (P.FAILED, plan.failure)
    assert deployment_provisioning(P.FAILED, plan) is None
    assert world.history[1].failure is None  # one crash is not a failed deployment


def test_the_back_off_is_capped(clock):
    crash = CrashLoop(version=1, count=20, retry_at=clock.now(), last_replica="r1", last_reason="x")
    world = FakeReconciler(clock)
    world.crash = crash
    name = world.add(1, R.STARTING)
    world.observe(name, ended=True)
    plan = world.tick(1, 1)
    assert (plan.crash.retry_at - clock.now()).total_seconds() == 60
    assert plan.start == [] and plan.retry_at == plan.crash.retry_at


def test_a_new_version_or_a_stable_replica_resets_the_back_off(clock):
    world = FakeReconciler(clock)
    world.crash = CrashLoop(version=1, count=5, retry_at=clock.now() + _s(30), last_replica="r0", last_reason="x")
    plan = world.tick(2, 1)
    assert len(plan.start) == 1 and plan.crash is None  # v2 gets a fresh start
    world.crash = CrashLoop(version=2, count=5, retry_at=clock.now() + _s(30), last_replica="r0", last_reason="x")
    world.passes_readiness("r1")
    plan = world.tick(2, 1)
    assert plan.crash is not None and plan.failure is None  # ready: not failing, but not yet stable
    clock.advance(CRASH_RESET_S)
    assert world.tick(2, 1).crash is None


def test_a_failed_replica_whose_process_lingers_is_stopped_until_it_ends(clock):
    world = FakeReconciler(clock)
    name = world.add(1)
    world.observe(name, error="init() raised")
    plan = world.tick(1, 1)
    assert plan.transitions == [(name, R.FAILED, "it cannot serve: init() raised")]
    assert plan.stop == [(name, "it cannot serve: init() raised")]
    plan = world.tick(1, 1)
    assert plan.stop == [(name, "it failed; stopping what is left of it")]
    world.stopping_ends()
    plan = world.tick(1, 1)
    assert (name, R.STOPPED, "its process has ended") in plan.transitions


def test_a_crash_of_a_ready_replica_is_replaced_at_once(clock):
    world = FakeReconciler(clock)
    a, b = world.add(1), world.add(1)
    world.observe(a, ended=True)
    plan = world.tick(1, 2)
    assert plan.transitions == [(a, R.FAILED, "its process ended")]
    assert plan.stop == [] and len(plan.start) == 1 and plan.in_traffic == (b,)


def test_every_planned_move_is_in_the_replica_table(clock):
    """The fake reconciler checks each move; a long random-ish run must never trip it."""
    world = FakeReconciler(clock)
    version, desired = 1, 2
    for step in range(60):
        if step % 15 == 0:
            version += 1
        desired = (1, 3, 2, 0)[step // 15]
        for name in world.named(R.STARTING):
            if step % 3 == 0:
                world.passes_readiness(name)
            elif step % 7 == 0:
                world.observe(name, ended=True)
        if step % 4 == 0:
            world.stopping_ends()
        world.tick(version, desired)
        clock.advance(2)
    assert all(r.state in (R.STOPPED, R.STOPPING, R.FAILED) for r in world.replicas.values())
