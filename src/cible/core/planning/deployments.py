"""One pass's decision for one online deployment, from its stored record and what was observed.

The glue between the reconciler's records and the two pure decisions of replicas.py:
`desired_count` (how many) and `decide_replicas` (which to start, stop and route to). Probe
results are folded into each replica's counters first; the plan that comes back is turned into
the records to store. Pure: no clock, no store, no process.

Draining: a replica that leaves traffic (scaled down, replaced by a rolling update, restarted) is
Stopping at once, so the next route table leaves it out, but its job is cancelled only after
`request_timeout_ms` (+ DRAIN_MARGIN_S): requests the gateway had already sent it, some still
queued in its scoring server, are answered rather than cut (no request fails during an update).

Probing: a Starting replica is probed on every pass (it takes traffic as soon as it answers;
its failures do not count, it has Azure's readiness window to get ready); a running one on its
probes' period, and then its failures count for liveness and readiness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cible.core.lifecycle.endpoints import ProvisioningState, ReplicaState
from cible.core.lifecycle.jobs import JobStatus
from cible.core.models.endpoint_records import CrashRecord, DeploymentStatus, ReplicaRecord, ScaleRecord
from cible.core.models.endpoints import OnlineDeployment
from cible.core.planning import replicas as rp
from cible.core.planning.durations import span

DELETING = "the deployment is being deleted"
# A replica that leaves traffic keeps running request_timeout_ms + this: what the gateway sent it just
# before the new route table reached it still gets its answer (the table is published after each pass).
DRAIN_MARGIN_S = 1.0


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    init_failed: str | None = None  # init()'s error, when the replica says it raised
    detail: str = ""


@dataclass(frozen=True)
class ReplicaObservation:
    """A replica as recorded, with its job and this pass's probe."""

    record: ReplicaRecord
    job_status: str | None  # None: no such job (its submit was refused)
    job_error: str | None
    url: str | None
    ended: bool
    probe: ProbeOutcome | None = None
    running_since: datetime | None = None  # when its job first ran (None: not yet)


@dataclass
class DeploymentPlan:
    start: int = 0  # new replicas of the current generation
    stop: dict[str, str] = field(default_factory=dict)  # replica job -> why: cancel it
    replicas: tuple[ReplicaRecord, ...] = ()  # the records to keep (Stopped ones are dropped)
    status_changes: dict[str, Any] = field(default_factory=dict)  # DeploymentStatus fields to set
    provisioning_state: str | None = None
    remove: bool = False  # being deleted and nothing of it runs: the row goes
    busy: bool = False  # something moves: the next pass comes soon


def probe_due(observation: ReplicaObservation, spec: dict[str, Any], now: datetime) -> bool:
    record = observation.record
    if observation.ended or not observation.url or observation.job_status != "Running":
        return False
    if record.state == ReplicaState.STOPPING.value:  # draining: out of traffic, nothing to decide from a probe
        return False
    if record.state == ReplicaState.STARTING.value:
        return True
    probes = rp.Probes.of(OnlineDeployment.model_validate(spec))
    period = min(probes.liveness.period, probes.readiness.period)
    return record.last_probe_at is None or now - record.last_probe_at >= span(period)


def decide_deployment(*, spec: dict[str, Any], generation: int, provisioning_state: str, status: DeploymentStatus,
                      replicas: list[ReplicaObservation], demand: dict[str, Any], now: datetime,
                      local: bool = False) -> DeploymentPlan:
    """`local`: a --local deployment, which runs `instance_count` replicas (no gateway sees its demand,
    and Azure's local endpoints ignore scale settings)."""
    records = {o.record.job: _probed(o, now) for o in replicas}
    if provisioning_state == ProvisioningState.DELETING.value:
        return _deleting(replicas, records)
    deployment = OnlineDeployment.model_validate(spec)
    last_request = demand.get("last_request_at") or status.last_request_at
    previous = rp.ScaleState(**status.scale.model_dump()) if status.scale else None
    ready = [r for r in records.values() if r.state == ReplicaState.READY.value]
    load = rp.Load(in_flight=float(demand.get("in_flight") or 0.0), last_request_at=last_request,
                   waiting=bool(demand.get("waiting")), warming=not ready,
                   ready_since=max((r.ready_since for r in ready if r.ready_since is not None), default=None))
    policy = rp.ScalePolicy(instance_count=deployment.instance_count) if local else rp.ScalePolicy.of(deployment)
    scale = rp.desired_count(policy, load, previous, now)
    crash = rp.CrashLoop(**status.crash.model_dump()) if status.crash else None
    views = [_view(o, records[o.record.job], now) for o in replicas]
    plan = rp.decide_replicas(generation, scale.count, views, rp.Probes.of(deployment), now, crash=crash)

    stop = dict(plan.stop)
    drain = span(deployment.request_settings.request_timeout_ms / 1000 + DRAIN_MARGIN_S)
    routed = {o.record.job for o in replicas if o.record.state == ReplicaState.READY.value and not o.ended}
    for name, state, why in plan.transitions:
        update: dict[str, Any] = {"state": state.value, "reason": why}
        if state == ReplicaState.READY:
            update.update(ready_since=now, liveness_failures=0, readiness_failures=0)
        if state == ReplicaState.STOPPING and name in routed:  # the gateway may have requests at it: drain
            update["drain_until"] = now + drain
            stop.pop(name, None)
        records[name] = records[name].model_copy(update=update)
    for o in replicas:  # drained (or never in traffic): its process is stopped, again if a stop was lost
        record = records[o.record.job]
        if (record.state in (ReplicaState.STOPPING.value, ReplicaState.FAILED.value) and not o.ended
                and (record.drain_until is None or now >= record.drain_until)):
            stop.setdefault(record.job, record.reason or "stopped")
    cancelling = {o.record.job for o in replicas if o.job_status == JobStatus.CANCEL_REQUESTED.value or o.ended}
    stop = {job: why for job, why in stop.items() if job not in cancelling}  # asked once is enough
    kept = tuple(r for r in records.values() if r.state != ReplicaState.STOPPED.value)
    move = rp.deployment_provisioning(provisioning_state, plan)
    state = move[0].value if move else None
    reason = plan.failure or (f"waiting for a back-off until {plan.retry_at.isoformat()}" if plan.retry_at else None)
    if reason is None and not plan.settled:
        reason = _progress(plan, scale.count)
    return DeploymentPlan(
        start=len(plan.start), stop=stop, replicas=kept, provisioning_state=state,
        status_changes={"scale": ScaleRecord(**vars(scale)),
                        "crash": CrashRecord(**vars(plan.crash)) if plan.crash else None,
                        "last_request_at": last_request, "reason": reason},
        busy=bool(plan.start or stop or plan.transitions) or not plan.settled)


def _probed(observation: ReplicaObservation, now: datetime) -> ReplicaRecord:
    """The record with this pass's probe counted (and its URL, once known)."""
    record, probe = observation.record, observation.probe
    update: dict[str, Any] = {}
    if record.url != observation.url:  # where its job runs now (None while it is requeued)
        update["url"] = observation.url
    if probe is not None:
        update["last_probe_at"] = now
        if probe.ok:
            update.update(liveness_failures=0, readiness_failures=0,
                          readiness_successes=record.readiness_successes + 1)
        elif record.state != ReplicaState.STARTING.value:  # a starting replica has its readiness window
            update.update(liveness_failures=record.liveness_failures + 1,
                          readiness_failures=record.readiness_failures + 1, readiness_successes=0)
    return record.model_copy(update=update) if update else record


def _view(observation: ReplicaObservation, record: ReplicaRecord, now: datetime) -> rp.ReplicaView:
    error = None
    serving = record.state in (ReplicaState.READY.value, ReplicaState.UNREADY.value)
    # A starting replica whose init() raised will not get ready by waiting. (A ready one that a --reload
    # broke is only out of traffic until the script is fixed.)
    if (observation.probe is not None and observation.probe.init_failed
            and record.state == ReplicaState.STARTING.value):
        error = f"its scoring script's init() raised: {observation.probe.init_failed}"
    elif observation.ended:
        error = observation.job_error or ("its job was not started" if observation.job_status is None else None)
    elif serving and observation.job_status != JobStatus.RUNNING.value:  # requeued: its node was lost
        error = f"its job went back to {observation.job_status} (its node was lost)"
    # Its readiness window counts from when its job ran, not from its submit: a node to start or an
    # environment to build is not the scoring script's slowness.
    started = observation.running_since or now
    return rp.ReplicaView(name=record.job, version=record.generation, state=record.state, started_at=started,
                          liveness_failures=record.liveness_failures, readiness_failures=record.readiness_failures,
                          readiness_successes=record.readiness_successes, ready_since=record.ready_since,
                          ended=observation.ended, error=error)


def _deleting(replicas: list[ReplicaObservation], records: dict[str, ReplicaRecord]) -> DeploymentPlan:
    running = [o for o in replicas if not o.ended]
    stopping = tuple(records[o.record.job].model_copy(update={"state": ReplicaState.STOPPING.value,
                                                                 "reason": DELETING}) for o in running)
    return DeploymentPlan(stop={o.record.job: DELETING for o in running}, replicas=stopping,
                          remove=not running, busy=True, status_changes={"reason": DELETING})


def _progress(plan: rp.ReplicaPlan, desired: int) -> str:
    return f"{plan.ready} of {desired} replica(s) ready"
