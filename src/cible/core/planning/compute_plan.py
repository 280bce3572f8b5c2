"""One compute with nodes, as its pass decides it: a cluster, a compute instance or a serverless pool.

    plan = decide_compute(snapshot, now)

The snapshot holds everything the decision reads: the compute's parsed spec and observed status
(start failures, an instance's power), its node rows with what the provider said of them, its
queue and running jobs, the workspace's quota headroom, and whether the engine has room. Each
kind is the cluster planner (`decide_cluster`) with its own config: an instance is a cluster of
exactly one node, or none while its power is off; a serverless pool is the nodes of its one job,
drained once that job ends. No clock, database or I/O; the plan is applied as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cible.core.catalog import VmSize
from cible.core.lifecycle.computes import ProvisioningState
from cible.core.models.computes import AmlCompute, ComputeInstance
from cible.core.models.records import ComputeStatus, InstanceState
from cible.core.planning.clusters import (
    ClusterConfig,
    ClusterPlan,
    NodeView,
    QueuedJob,
    RunningJob,
    decide_cluster,
    fill_waiting,
)
from cible.core.planning.quotas import QuotaHeadroom
from cible.core.planning.scheduling import Holder, instance_stopped, serverless_wait

NEVER_S = 1e9  # an instance's node is never scaled down for idleness (idle shutdown is its own)
ComputeKind = Literal["amlcompute", "computeinstance", "serverless", "virtualmachine"]


@dataclass(frozen=True, kw_only=True)
class ComputeSnapshot:
    """One compute as its pass sees it: what is stored, and what was observed this pass."""

    name: str
    kind: ComputeKind
    spec: AmlCompute | ComputeInstance  # a serverless pool's reads as the cluster of its nodes
    size: VmSize
    deleting: bool = False  # its provisioning state is Deleting: drain, then the row goes
    observed: ComputeStatus = field(default_factory=ComputeStatus)
    nodes: tuple[NodeView, ...] = ()  # its node rows, not removed, with what the provider said of them
    queued: tuple[QueuedJob, ...] = ()  # the queue, or its head when `queue_more`
    queue_more: bool = False  # more jobs wait behind `queued` (see cluster_pass's load)
    running: tuple[RunningJob, ...] = ()
    quota: QuotaHeadroom = field(default_factory=QuotaHeadroom)
    pool_job: str | None = None  # a serverless pool: the job its nodes are for
    pool_job_ended: bool = False  # … which ended (or is gone)
    seen: bool = True  # False: its provider cannot tell yet which nodes it holds
    engine_waiting: str | None = None  # why the engine has no room for its next node (Ray)
    holders: tuple[Holder, ...] | None = None  # jobs on the hardware its nodes share, kept to one user (None: free)
    heartbeat_timeout_s: float = 30.0
    prepare_timeout_s: float = 600.0


def decide_compute(snapshot: ComputeSnapshot, now: datetime) -> ClusterPlan:
    if not snapshot.seen:  # neither lose nor start nodes while its engine is not seen
        return ClusterPlan(hold=True, observed=snapshot.observed)
    config = compute_config(snapshot)
    plan = decide_cluster(config, snapshot.nodes, snapshot.queued, snapshot.running, now,
                          observed=snapshot.observed, quota=snapshot.quota, engine_waiting=snapshot.engine_waiting,
                          queue_more=snapshot.queue_more, holders=snapshot.holders)
    waiting = plan.queue_jobs
    queue = plan.observed.queue
    if snapshot.kind == "serverless":
        if snapshot.pool_job_ended and not snapshot.deleting:
            plan.provisioning = (ProvisioningState.DELETING.value, config.stopped)
        if waiting:  # its own nodes: no queue, no one ahead
            queue = queue.model_copy(update={"reason_for_all": serverless_wait(
                waiting[0].instance_count, snapshot.size.name, starting=plan.starting, ready=plan.idle)})
    elif snapshot.kind == "computeinstance" and _power(snapshot).power == "off":
        state = "Stopping" if plan.idle + plan.starting + plan.busy else "Stopped"
        queue = queue.model_copy(update={"reason_for_all": instance_stopped(snapshot.name, state,
                                                                            _power(snapshot).power_reason)})
    if queue is not plan.observed.queue:
        plan.observed = plan.observed.model_copy(update={"queue": queue})
        fill_waiting(plan, snapshot.name)
    return plan


def compute_config(snapshot: ComputeSnapshot) -> ClusterConfig:
    """The cluster a compute is to the planner: a cluster as it is; an instance a cluster of
    exactly one node, or none while it is off; a serverless pool the nodes of its one job."""
    size, spec = snapshot.size, snapshot.spec
    common = {"name": snapshot.name, "vcpus_per_node": size.vcpus, "memory_gb_per_node": size.memory_gb,
              "family": size.family, "deleting": snapshot.deleting,
              "heartbeat_timeout_s": snapshot.heartbeat_timeout_s, "prepare_timeout_s": snapshot.prepare_timeout_s}
    if isinstance(spec, ComputeInstance):
        power = _power(snapshot)
        stopped = None if power.power == "on" else (
            f"compute instance {snapshot.name} is {'restarting' if power.power == 'restart' else 'stopping'}: "
            f"{power.power_reason or 'requested'}")
        return ClusterConfig(min_instances=1, max_instances=1, idle_time_before_scale_down=NEVER_S,
                             stopped=stopped, **common)
    if snapshot.kind == "serverless" and (snapshot.deleting or snapshot.pool_job_ended):
        common.update(deleting=True,
                      stopped=f"job {snapshot.pool_job} ended: the serverless nodes made for it go with it")
    return ClusterConfig(min_instances=spec.min_instances, max_instances=spec.max_instances,
                         idle_time_before_scale_down=spec.idle_time_before_scale_down, tier=spec.tier, **common)


def _power(snapshot: ComputeSnapshot) -> InstanceState:
    return snapshot.observed.instance or InstanceState()
