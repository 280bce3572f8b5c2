"""decide_deployment: the glue between a deployment's stored record, this pass's observations
(jobs, probes, the gateway's demand) and the pure replica decisions. Fixed times, no processes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cible.core.models.endpoint_records import DeploymentStatus, ReplicaRecord
from cible.core.planning.deployments import ProbeOutcome, ReplicaObservation, decide_deployment, probe_due

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPEC = {"name": "blue", "endpoint_name": "my-ep", "instance_type": "Standard_DS1_v2", "instance_count": 1,
        "code_configuration": {"code": "cible://snapshots/x", "scoring_script": "score.py"},
        "environment": "azureml:env:1",
        "liveness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 3},
        "readiness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 3}}


def record(job: str = "r1", state: str = "Starting", **extra) -> ReplicaRecord:  # noqa: ANN003
    return ReplicaRecord(job=job, generation=1, port=5000, started_at=T0, state=state, **extra)


def observe(rec: ReplicaRecord, *, status: str | None = "Running", probe: ProbeOutcome | None = None,
            ended: bool = False, error: str | None = None) -> ReplicaObservation:
    return ReplicaObservation(record=rec, job_status=status, job_error=error, url="http://127.0.0.1:5000",
                              ended=ended, probe=probe)


def decide(replicas: list[ReplicaObservation], *, spec: dict | None = None, state: str = "Creating",
           status: DeploymentStatus | None = None, demand: dict | None = None, at: float = 2.0):  # noqa: ANN202
    return decide_deployment(spec=spec or SPEC, generation=1, provisioning_state=state,
                             status=status or DeploymentStatus(), replicas=replicas, demand=demand or {},
                             now=T0 + timedelta(seconds=at))


def test_a_new_deployment_starts_its_replicas():
    plan = decide([])
    assert plan.start == 1 and not plan.stop and plan.provisioning_state is None
    assert plan.status_changes["reason"] == "0 of 1 replica(s) ready"


def test_a_starting_replica_that_answers_is_ready_and_the_deployment_succeeds():
    plan = decide([observe(record(), probe=ProbeOutcome(ok=True))])
    (rec,) = plan.replicas
    assert rec.state == "Ready" and rec.ready_since == T0 + timedelta(seconds=2) and rec.url
    assert plan.provisioning_state == "Succeeded" and plan.start == 0


def test_a_starting_replica_that_does_not_answer_yet_is_not_counted_as_failing():
    plan = decide([observe(record(), probe=ProbeOutcome(ok=False, detail="GET / did not answer"))])
    (rec,) = plan.replicas
    assert rec.state == "Starting" and rec.liveness_failures == 0 and rec.readiness_failures == 0
    assert not plan.stop


def test_a_starting_replica_whose_init_raised_fails_at_once_and_is_replaced():
    plan = decide([observe(record(), probe=ProbeOutcome(ok=False, init_failed="ValueError: no model"))])
    assert plan.stop == {"r1": "it cannot serve: its scoring script's init() raised: ValueError: no model"}
    assert plan.start == 1  # the first failure is replaced at once
    assert plan.status_changes["crash"].count == 1


def test_a_ready_replica_that_a_reload_broke_only_leaves_traffic():
    rec = record(state="Ready", ready_since=T0)
    plan = decide([observe(rec, probe=ProbeOutcome(ok=False, init_failed="SyntaxError"))], state="Succeeded")
    (kept,) = plan.replicas
    assert kept.state == "Ready" and kept.readiness_failures == 1 and not plan.stop


def test_probes_of_a_running_replica_come_on_its_period():
    rec = record(state="Ready", ready_since=T0, last_probe_at=T0 + timedelta(seconds=1.5))
    assert not probe_due(observe(rec), SPEC, T0 + timedelta(seconds=2))
    assert probe_due(observe(rec), SPEC, T0 + timedelta(seconds=2.5))
    assert probe_due(observe(record()), SPEC, T0)  # a starting one: every pass
    assert not probe_due(observe(record(), status="Queued"), SPEC, T0)


def test_a_deleted_deployment_stops_its_replicas_then_goes():
    running = decide([observe(record(state="Ready"))], state="Deleting")
    assert running.stop == {"r1": "the deployment is being deleted"} and not running.remove
    assert [r.state for r in running.replicas] == ["Stopping"]
    gone = decide([observe(record(state="Stopping"), status="Canceled", ended=True)], state="Deleting")
    assert gone.remove and not gone.stop


def test_a_request_waiting_for_a_deployment_scaled_to_zero_starts_a_replica():
    spec = {**SPEC, "scale_settings": {"type": "target_utilization", "min_instances": 0, "max_instances": 2}}
    from cible.core.models.endpoint_records import ScaleRecord

    idle = DeploymentStatus(scale=ScaleRecord(count=0, changed_at=T0))
    assert decide([], spec=spec, status=idle, state="Succeeded").start == 0
    assert decide([], spec=spec, status=idle, state="Succeeded", demand={"waiting": True}).start == 1


def test_a_replica_slower_to_start_than_the_idle_window_is_not_scaled_to_zero_under_way():
    """A cold start longer than idle_time_before_scale_to_zero: the replica is kept until it serves (its
    deployment then succeeds, having run init()), and the idle window starts from then."""
    from cible.core.models.endpoint_records import ScaleRecord

    spec = {**SPEC, "scale_settings": {"type": "target_utilization", "min_instances": 0, "max_instances": 1,
                                       "idle_time_before_scale_to_zero": 2}}
    status = DeploymentStatus(scale=ScaleRecord(count=1, changed_at=T0))
    starting = decide([observe(record())], spec=spec, status=status, at=3)  # past the idle window
    assert starting.status_changes["scale"].count == 1 and not starting.stop
    served = record(state="Ready", ready_since=T0 + timedelta(seconds=3.5))
    assert decide([observe(served)], spec=spec, status=status, at=5).status_changes["scale"].count == 1
    idle = decide([observe(served)], spec=spec, status=status, at=5.6)
    assert idle.status_changes["scale"].count == 0
    assert [(r.state, r.reason) for r in idle.replicas] == [("Stopping", "scaled down to 0 replica(s)")]


def test_a_replica_leaving_traffic_drains_before_its_process_is_stopped():
    """Out of the routes at once (Stopping), cancelled request_timeout_ms + DRAIN_MARGIN_S later: the
    requests the gateway sent it, some queued in its scoring server, are answered, not cut."""
    spec = {**SPEC, "instance_count": 1, "request_settings": {"request_timeout_ms": 3000}}
    ready = [observe(record("r1", state="Ready", ready_since=T0)), observe(record("r2", state="Ready", ready_since=T0))]
    scaled = decide(ready, spec=spec, state="Updating", at=10)
    (stopping,) = [r for r in scaled.replicas if r.state == "Stopping"]
    assert stopping.drain_until == T0 + timedelta(seconds=14) and not scaled.stop
    draining = [observe(r) for r in scaled.replicas]
    assert not decide(draining, spec=spec, state="Succeeded", at=13.9).stop
    assert decide(draining, spec=spec, state="Succeeded", at=14).stop == {stopping.job: "scaled down to 1 replica(s)"}
    cancelling = [observe(r, status="CancelRequested" if r.job == stopping.job else "Running") for r in scaled.replicas]
    assert not decide(cancelling, spec=spec, state="Succeeded", at=15).stop  # asked once
    # One that never served (still starting) has nothing to drain: cancelled at once.
    starting = [observe(record("r1", state="Ready", ready_since=T0)), observe(record("r2"))]
    assert decide(starting, spec=spec, state="Updating", at=2).stop == {"r2": "scaled down to 1 replica(s)"}
