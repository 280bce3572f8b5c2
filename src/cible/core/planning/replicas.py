"""Pure decisions for one online deployment: how many replicas, and which to start and stop.

Two functions, both of (typed inputs, `now`); neither reads a clock, a store or a process:

`desired_count(policy, load, previous, now) -> ScaleState`: the replica count to aim for.
- `default` scale settings: `instance_count`, at once.
- `target_utilization` (Azure's Kubernetes autoscaler, on in-flight requests here, not CPU):
  need = ceil(mean in-flight / target_concurrency), clamped to [min_instances, max_instances].
  Up: at most once per `polling_interval`. Down: only once fewer replicas would have done for
  `scale_down_delay_s` (60 s, as Knative's stable window and the Kubernetes HPA's 5-minute
  stabilisation in spirit), and then to the most that was needed in that window, so a short lull
  does not drop replicas that the next burst needs. A new deployment starts with max(min, 1)
  replicas, so its creation proves that `init()` works.
- Scale to zero (cible; Azure's managed endpoints cannot): with `min_instances: 0`, one replica
  stays warm until no request came, the count did not change and no replica got ready, for
  `idle_to_zero_s` (the scale settings' `idle_time_before_scale_to_zero`; 120 s, AmlCompute's
  idle_time_before_scale_down default, when not set); then 0. A replica still starting
  (`Load.warming`) is never scaled away: the window starts once it serves, so a cold start longer
  than the window neither strands the request that asked for it nor lets a new deployment
  succeed without its `init()` having run. A request that waits while there are
  no replicas (the gateway's `on_demand`, `Load.waiting`) brings one back at once, whatever the
  polling interval.
- min/max changed by an update apply at once.

`decide_replicas(version, desired, replicas, probes, now, crash=...) -> ReplicaPlan`: after the
cluster planner's sync/step shape:
1. sync, mirroring the world: a Stopping replica whose process ended is Stopped; a live one whose
   process ended, that says it cannot serve (`init()` raised), or that did not get ready within
   Azure's readiness window (initial_delay + failure_threshold × period) is Failed; one whose
   liveness probe failed `failure_threshold` times in a row (counted after `initial_delay`) is
   restarted: stopped, and replaced below; readiness moves Starting/Unready → Ready after
   `success_threshold` passes in a row, and Ready → Unready after `failure_threshold` failures.
2. step: replicas of the current version above `desired` are stopped (unready ones first);
   a rolling update (replicas of an older version) starts one new replica at a time (surge 1)
   and retires an old one only while the ready replicas left are still at least `desired`
   (max unavailable 0), so no request fails during the update; old replicas that are not ready
   serve nothing and go at once. Missing replicas are started, unless a back-off holds them:
   after replicas of the current version fail (or are restarted) in a row, the next start waits
   0, 1, 2, 4 … 60 s, so a broken `init()` does not spin; after `fail_after` of them the
   plan says why the deployment has failed. The count resets on a new version, or once a
   replica has stayed ready for `CRASH_RESET_S`.

The reconciler applies a plan as it is: each move in `transitions` through
`cible.core.lifecycle.endpoints.check_replica_transition` (entering Ready sets ready_since=now;
its probe counters restart at 0), cancels the jobs of `stop`, submits one replica job per entry
of `start`, stores `crash`, and publishes `in_traffic` to the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cible.core.lifecycle.endpoints import LIVE_REPLICAS, ProvisioningState, ReplicaState, check_replica_transition
from cible.core.models.endpoints import OnlineDeployment, ProbeSettings, TargetUtilizationScaleSettings
from cible.core.planning.durations import span

__all__ = [
    "CRASH_RESET_S",
    "FAIL_AFTER",
    "MAX_RESTART_BACKOFF_S",
    "SCALE_DOWN_DELAY_S",
    "SCALE_TO_ZERO_IDLE_S",
    "CrashLoop",
    "Load",
    "Probe",
    "Probes",
    "ReplicaPlan",
    "ReplicaView",
    "ScalePolicy",
    "ScaleState",
    "StartReplica",
    "decide_replicas",
    "deployment_provisioning",
    "desired_count",
    "next_probe_at",
]

SCALE_DOWN_DELAY_S = 60.0
SCALE_TO_ZERO_IDLE_S = 120.0
MAX_RESTART_BACKOFF_S = 60
FAIL_AFTER = 3  # failed replicas in a row before the deployment reports Failed
CRASH_RESET_S = 60.0  # ready this long: the crash count starts again

R = ReplicaState


# ---- how many ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ScalePolicy:
    """A deployment's scale settings, in seconds."""

    type: Literal["default", "target_utilization"] = "default"
    instance_count: int = 1
    min_instances: int = 1
    max_instances: int = 1
    polling_interval_s: float = 1.0
    target_concurrency: float = 1.0  # in-flight requests per replica to aim for
    scale_down_delay_s: float = SCALE_DOWN_DELAY_S
    idle_to_zero_s: float = SCALE_TO_ZERO_IDLE_S

    @classmethod
    def of(cls, deployment: OnlineDeployment) -> ScalePolicy:
        settings = deployment.scale_settings
        if isinstance(settings, TargetUtilizationScaleSettings):
            idle = settings.idle_time_before_scale_to_zero
            return cls(type="target_utilization", instance_count=deployment.instance_count,
                       min_instances=settings.min_instances, max_instances=settings.max_instances,
                       polling_interval_s=float(settings.polling_interval),
                       target_concurrency=deployment.target_concurrency,
                       idle_to_zero_s=SCALE_TO_ZERO_IDLE_S if idle is None else float(idle))
        return cls(instance_count=deployment.instance_count, target_concurrency=deployment.target_concurrency)


@dataclass(frozen=True, kw_only=True)
class Load:
    """What the gateway saw of a deployment."""

    in_flight: float = 0.0  # mean in-flight requests over the last polling interval
    last_request_at: datetime | None = None  # the latest request (None: none yet)
    waiting: bool = False  # a request waits for a replica (no replica is ready): wanted on demand
    # No replica is ready: the one wanted is still starting (a cold start: an environment to build, a
    # slow init()) or restarting. Nothing warm is idle, so nothing is scaled to zero under way.
    warming: bool = False
    ready_since: datetime | None = None  # when the newest ready replica got ready: the idle window starts there


@dataclass(frozen=True, kw_only=True)
class ScaleState:
    """The count decided, and what the next decision needs to remember (store it, pass it back)."""

    count: int
    changed_at: datetime | None = None  # when `count` last changed
    low_since: datetime | None = None  # since when fewer replicas would do (the scale-down clock)
    low_peak: int = 0  # the most replicas needed since low_since
    reason: str = ""


def desired_count(policy: ScalePolicy, load: Load, previous: ScaleState | None, now: datetime) -> ScaleState:
    """The replica count to aim for now; `previous`: what the last call returned (None: a new deployment)."""
    if policy.type == "default":
        count = policy.instance_count
        changed = previous is None or previous.count != count
        return ScaleState(count=count, changed_at=now if changed else previous.changed_at,
                          reason=f"instance_count {count}")
    low, high = policy.min_instances, policy.max_instances

    def moved(count: int, reason: str) -> ScaleState:
        return ScaleState(count=count, changed_at=now, reason=reason)

    if previous is None:
        return moved(max(low, min(1, high)), "a new deployment starts with max(min_instances, 1) replicas")
    current = previous.count
    if current > high:
        return moved(high, f"max_instances is {high}")
    if current < low:
        return moved(low, f"min_instances is {low}")

    need = _need(policy, load, previous, now)
    polled = previous.changed_at is None or now - previous.changed_at >= span(policy.polling_interval_s)
    if need > current:
        if current == 0:
            return moved(need, "a request waits and there is no replica: scale from zero")
        if not polled:
            return ScaleState(count=current, changed_at=previous.changed_at,
                              reason=f"{need} wanted; at most one change per polling_interval")
        return moved(need, f"{load.in_flight:g} requests in flight, {policy.target_concurrency:g} per replica")
    if need == current:
        return ScaleState(count=current, changed_at=previous.changed_at, reason="steady")
    if need == 0:
        if not polled:
            return ScaleState(count=current, changed_at=previous.changed_at, reason="idle")
        return moved(0, f"no request for {policy.idle_to_zero_s:g} s: scaled to zero (min_instances 0)")
    low_since = previous.low_since or now
    peak = max(need, previous.low_peak if previous.low_since else 0)
    if now - low_since >= span(policy.scale_down_delay_s) and polled:
        return moved(peak, f"{peak} replica(s) were enough for {policy.scale_down_delay_s:g} s")
    return ScaleState(count=current, changed_at=previous.changed_at, low_since=low_since, low_peak=peak,
                      reason=f"{peak} would do; waiting {policy.scale_down_delay_s:g} s before scaling down")


def _need(policy: ScalePolicy, load: Load, previous: ScaleState, now: datetime) -> int:
    """Replicas the load needs, within [min, max]; one stays warm (min 0) until the idle window passes."""
    low, high = policy.min_instances, policy.max_instances
    in_flight = load.in_flight
    per_replica = policy.target_concurrency if policy.target_concurrency > 0 else 1.0
    if math.isnan(in_flight) or in_flight <= 0:
        need = 0
    elif math.isinf(in_flight):
        need = high
    else:  # the epsilon: 2.0000000001 in flight for 1 per replica is 2 replicas, not 3
        need = math.ceil(in_flight / per_replica - 1e-9)
    if load.waiting:
        need = max(need, 1)
    if need == 0 and low == 0 and previous.count > 0:
        if load.warming:
            return min(high, 1)  # the idle window starts once a replica serves
        quiet_since = max((t for t in (load.last_request_at, previous.changed_at, load.ready_since)
                           if t is not None), default=now)
        if now - quiet_since < span(policy.idle_to_zero_s):
            need = 1  # stay warm: scale to zero only after the idle window
    return min(high, max(low, need))


# ---- which replicas ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Probe:
    """A probe's settings in seconds (Azure's ProbeSettings)."""

    initial_delay: float = 10.0
    period: float = 10.0
    timeout: float = 2.0
    success_threshold: int = 1
    failure_threshold: int = 30

    @classmethod
    def of(cls, settings: ProbeSettings) -> Probe:
        return cls(initial_delay=settings.initial_delay, period=settings.period, timeout=settings.timeout,
                   success_threshold=settings.success_threshold, failure_threshold=settings.failure_threshold)

    @property
    def ready_within_s(self) -> float:
        """How long a replica may take to get ready (Azure's readiness window)."""
        return self.initial_delay + self.failure_threshold * self.period


@dataclass(frozen=True, kw_only=True)
class Probes:
    liveness: Probe = field(default_factory=Probe)
    readiness: Probe = field(default_factory=Probe)

    @classmethod
    def of(cls, deployment: OnlineDeployment) -> Probes:
        return cls(liveness=Probe.of(deployment.liveness_probe), readiness=Probe.of(deployment.readiness_probe))


def next_probe_at(started_at: datetime, last_probe_at: datetime | None, probe: Probe) -> datetime:
    """When a replica's next probe is due on Azure's schedule: `initial_delay` after it started,
    then every `period`. (The reconciler may probe a Starting replica's readiness sooner: a replica
    that answers is ready, and Azure's initial delay only makes it wait.)"""
    if last_probe_at is None:
        return started_at + span(probe.initial_delay)
    return last_probe_at + span(probe.period)


@dataclass(frozen=True, kw_only=True)
class ReplicaView:
    """A replica as recorded, with what was observed of it this pass."""

    name: str
    version: int  # the deployment spec generation it serves
    state: ReplicaState | str  # a record's text ("Ready") is taken as its ReplicaState
    started_at: datetime
    liveness_failures: int = 0  # consecutive failed liveness probes
    readiness_failures: int = 0  # consecutive failed readiness probes
    readiness_successes: int = 0  # consecutive passed readiness probes
    ready_since: datetime | None = None
    ended: bool = False  # its process is gone (its job ended)
    error: str | None = None  # why it cannot serve (its exit, or init()'s error), when it says so


@dataclass(frozen=True, kw_only=True)
class CrashLoop:
    """Replicas of one version that failed in a row, and when the next may start (store it, pass it back)."""

    version: int
    count: int
    retry_at: datetime
    last_replica: str
    last_reason: str


@dataclass(frozen=True, kw_only=True)
class StartReplica:
    version: int
    reason: str


@dataclass
class ReplicaPlan:
    start: list[StartReplica] = field(default_factory=list)  # new replicas, each of the current version
    stop: list[tuple[str, str]] = field(default_factory=list)  # (replica, why): cancel its job
    # Every state change, in order, each valid by the replica table.
    transitions: list[tuple[str, ReplicaState, str]] = field(default_factory=list)
    in_traffic: tuple[str, ...] = ()  # Ready replicas after the plan, by name: the gateway's
    crash: CrashLoop | None = None  # to store for the next pass
    retry_at: datetime | None = None  # starts are held by the back-off until then
    failure: str | None = None  # why the deployment is failing (it reports Failed)
    ready: int = 0  # Ready replicas of the current version
    settled: bool = False  # exactly `desired` replicas, all of the current version and Ready
    awaiting_replica: bool = False  # replicas are wanted and none is in traffic yet


class _Replicas:
    """The replicas' states as the plan changes them; every move is checked and recorded."""

    def __init__(self, plan: ReplicaPlan, replicas: Sequence[ReplicaView]) -> None:
        self.plan = plan
        self.view = {r.name: r for r in replicas}
        self.state = {r.name: ReplicaState(r.state) for r in replicas}

    def move(self, name: str, target: ReplicaState, reason: str) -> None:
        check_replica_transition(self.state[name], target)
        self.state[name] = target
        self.plan.transitions.append((name, target, reason))

    def stop(self, name: str, reason: str) -> None:
        if self.state[name] in LIVE_REPLICAS:
            self.move(name, R.STOPPING, reason)
        self.plan.stop.append((name, reason))

    def live(self) -> list[ReplicaView]:
        return [self.view[n] for n in sorted(self.state) if self.state[n] in LIVE_REPLICAS]

    def ready(self, name: str) -> bool:
        return self.state[name] == R.READY


def decide_replicas(version: int, desired: int, replicas: Sequence[ReplicaView], probes: Probes, now: datetime,
                    *, crash: CrashLoop | None = None, fail_after: int = FAIL_AFTER) -> ReplicaPlan:
    """Plan one pass for one deployment: `version` is its current spec generation, `desired` the
    count from `desired_count`, `replicas` its replicas not yet Stopped, `crash` what the last
    plan stored."""
    plan = ReplicaPlan()
    world = _Replicas(plan, replicas)
    failed: list[tuple[str, str]] = []
    for replica in sorted(replicas, key=lambda r: r.name):
        why = _sync(replica, probes, now, world)
        if why and replica.version == version:
            failed.append((replica.name, why))

    plan.crash = _crash_loop(crash, version, failed, world, now)
    held = plan.crash is not None and now < plan.crash.retry_at
    _step(version, max(0, desired), world, held)
    if held and _missing(version, desired, world) > 0:
        plan.retry_at = plan.crash.retry_at

    current = [r for r in world.live() if r.version == version]
    plan.ready = sum(1 for r in current if world.ready(r.name))
    plan.in_traffic = tuple(r.name for r in world.live() if world.ready(r.name))
    plan.settled = plan.ready == len(current) == desired and len(world.live()) == desired
    plan.awaiting_replica = desired > 0 and not plan.in_traffic
    if plan.crash is not None and plan.crash.count >= fail_after and plan.ready < desired:
        wait = (plan.crash.retry_at - now).total_seconds()
        plan.failure = (f"{plan.crash.count} replicas in a row failed; the last, {plan.crash.last_replica}: "
                        f"{plan.crash.last_reason}" + (f"; trying again in {wait:.0f} s" if wait > 0 else ""))
    return plan


def _sync(replica: ReplicaView, probes: Probes, now: datetime, world: _Replicas) -> str | None:
    """Mirror what was observed; returns why the replica failed or was restarted (a crash), if it was."""
    name, state = replica.name, world.state[replica.name]
    if state == R.STOPPED:
        return None
    if state in (R.STOPPING, R.FAILED):
        if replica.ended:
            world.move(name, R.STOPPED, "its process has ended")
        elif state == R.FAILED:
            world.plan.stop.append((name, "it failed; stopping what is left of it"))
        return None
    age = now - replica.started_at
    why = None
    if replica.ended:
        why = f"its process ended: {replica.error}" if replica.error else "its process ended"
    elif replica.error:
        why = f"it cannot serve: {replica.error}"
    elif state == R.STARTING and age > span(probes.readiness.ready_within_s):
        why = f"it did not get ready within {probes.readiness.ready_within_s:g} s"
    if why:
        world.move(name, R.FAILED, why)
        if not replica.ended:
            world.plan.stop.append((name, why))
        return why
    liveness = probes.liveness
    if age >= span(liveness.initial_delay) and replica.liveness_failures >= liveness.failure_threshold:
        why = f"its liveness probe failed {replica.liveness_failures} times in a row: restarted"
        world.stop(name, why)
        return why
    readiness = probes.readiness
    if state in (R.STARTING, R.UNREADY) and replica.readiness_successes >= readiness.success_threshold:
        world.move(name, R.READY, "its readiness probe passed")
    elif state == R.READY and replica.readiness_failures >= readiness.failure_threshold:
        world.move(name, R.UNREADY, f"its readiness probe failed {replica.readiness_failures} times in a row: "
                   "out of traffic")
    return None


def _crash_loop(previous: CrashLoop | None, version: int, failed: list[tuple[str, str]], world: _Replicas,
                now: datetime) -> CrashLoop | None:
    """The back-off after this pass: a new version, or a replica ready for CRASH_RESET_S, starts it
    again. The first failure is replaced at once (a one-off crash costs nothing), each next one
    waits twice as long as the last: 1, 2, 4 … MAX_RESTART_BACKOFF_S (Kubernetes' CrashLoopBackOff)."""
    crash = previous if previous is not None and previous.version == version else None
    stable = any(world.ready(r.name) and r.version == version and r.ready_since is not None
                 and now - r.ready_since >= span(CRASH_RESET_S) for r in world.live())
    if stable:
        crash = None
    if not failed:
        return crash
    count = (crash.count if crash else 0) + len(failed)
    wait_s = 0 if count == 1 else min(2 ** min(count - 2, 16), MAX_RESTART_BACKOFF_S)
    name, why = failed[-1]
    return CrashLoop(version=version, count=count, retry_at=now + timedelta(seconds=wait_s), last_replica=name,
                     last_reason=why)


def _missing(version: int, desired: int, world: _Replicas) -> int:
    return desired - sum(1 for r in world.live() if r.version == version)


def _step(version: int, desired: int, world: _Replicas, held: bool) -> None:
    # Above the count: stop replicas of this version, unready ones first, then the newest.
    current = [r for r in world.live() if r.version == version]
    surplus = len(current) - desired
    if surplus > 0:
        order = sorted(current, key=lambda r: (world.ready(r.name), -r.started_at.timestamp(), r.name))
        for replica in order[:surplus]:
            world.stop(replica.name, f"scaled down to {desired} replica(s)")
    # A rolling update: older replicas go, a ready one only while `desired` ready replicas remain.
    old = [r for r in world.live() if r.version != version]
    for replica in old:
        if not world.ready(replica.name):
            world.stop(replica.name, f"replaced by version {version} (it was not ready)")
    ready = sum(1 for r in world.live() if world.ready(r.name))
    for replica in sorted((r for r in world.live() if r.version != version), key=lambda r: (r.started_at, r.name)):
        if ready - 1 < desired:
            break
        world.stop(replica.name, f"replaced by a ready replica of version {version}")
        ready -= 1
    # Start what is missing: all at once, or one at a time (surge 1) while old replicas remain.
    missing = _missing(version, desired, world)
    rolling = any(r.version != version for r in world.live())
    if rolling:
        missing = min(missing, desired + 1 - len(world.live()))
    if missing <= 0 or held:
        return
    reason = (f"rolling update to version {version}, one replica at a time" if rolling
              else f"{desired} replica(s) of version {version} wanted")
    world.plan.start.extend(StartReplica(version=version, reason=reason) for _ in range(missing))


def deployment_provisioning(current: ProvisioningState | str,
                            plan: ReplicaPlan) -> tuple[ProvisioningState, str] | None:
    """The deployment's provisioning move this plan calls for, with why; None: it stays as it is.
    Failed while replicas keep failing; Succeeded once settled; Creating/Updating otherwise."""
    state = ProvisioningState(current)
    if state in (ProvisioningState.DELETING, ProvisioningState.CANCELED):
        return None
    if plan.failure is not None:
        return None if state == ProvisioningState.FAILED else (ProvisioningState.FAILED, plan.failure)
    if plan.settled and state != ProvisioningState.SUCCEEDED:
        return ProvisioningState.SUCCEEDED, f"{plan.ready} replica(s) ready"
    return None
