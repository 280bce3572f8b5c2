"""Pure decisions for one compute cluster: node health, scaling and job placement.

`decide_cluster` is a function of (config, recorded nodes plus what was observed of
them, the queue, the jobs holding nodes, the compute's observed status, the quota
headroom, now). It reads no clock, database or process, and returns a `ClusterPlan`
that the reconciler applies as it is: nothing edits the plan after decide. It works
in two halves, after Ray autoscaler v2:

1. sync (passive), mirroring the world: a node the provider no longer lists is
   removed; one it reports preempted is preempted; one whose agent is silent past
   `heartbeat_timeout_s` (or that never got ready within `prepare_timeout_s`) is
   unusable; a preparing node that heartbeats is idle; a running node whose job no
   longer holds it is idle. A job on a preempted node is requeued; on an unusable
   or vanished node it is requeued or failed by its `on_node_failure`.
2. step (active): drain nodes above the cap (max_instances, or 0 while deleting);
   place the queue FIFO (see scheduling.py); size the cluster to
   clamp(min_instances, busy + queued demand, max_instances), counting preparing
   nodes so nothing is launched twice; remove idle nodes only past
   `idle_time_before_scale_down` and only down to that size. What is launched is
   then held back while nodes keep failing to start (1, 2, 4 … 60 s after the last
   failure, kept in the status so it survives a restart) and cut to the quotas.

`decide_compute` (compute_plan.py) turns a whole compute (cluster, instance, serverless
pool) into this cluster's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from cible.core.lifecycle.nodes import LIVE, NodeState, check_transition
from cible.core.models.records import ComputeStatus, ProvisioningError, StartFailures
from cible.core.planning.durations import span
from cible.core.planning.quotas import QuotaHeadroom
from cible.core.planning.scheduling import Holder, admission_error, decided_queue, place_fifo, reason_at

__all__ = [
    "RECONCILE_ERROR",
    "ClusterConfig",
    "ClusterPlan",
    "NodeView",
    "QueuedJob",
    "RunningJob",
    "admission_error",
    "decide_cluster",
    "preemptions",
]

RECONCILE_ERROR = "ReconcileError"  # a compute's provisioning_errors code when its own pass fails
START_FAILED = "NodeStartFailed"  # … when its nodes die before they are ready
MAX_START_BACKOFF_S = 60

N = NodeState
OnNodeFailure = Literal["requeue", "fail"]


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    name: str
    min_instances: int = 0
    max_instances: int = 1
    idle_time_before_scale_down: float = 120.0  # seconds
    vcpus_per_node: int = 0
    memory_gb_per_node: float = 0.0
    family: str = ""  # the VM family its nodes count against in the quotas
    tier: Literal["dedicated", "low_priority"] = "dedicated"
    deleting: bool = False
    stopped: str | None = None  # why it must have no nodes now (a compute instance that is off)
    heartbeat_timeout_s: float = 30.0
    prepare_timeout_s: float = 600.0  # preparing → unusable when no first heartbeat by then


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """A node as recorded (state, job, times) plus what was observed of it this pass."""

    node_id: str
    state: NodeState
    created_at: datetime
    job_name: str | None = None
    idle_since: datetime | None = None  # set when it entered idle; created_at if missing
    last_heartbeat: datetime | None = None  # the agent's latest heartbeat
    present: bool = True  # False: the provider's listing no longer has it
    preempted: bool = False  # the provider reported it evicted (low priority)
    start_error: str | None = None  # why the provider says it failed (its launch raised, its agent died)


@dataclass(frozen=True, kw_only=True)
class QueuedJob:
    name: str
    submitted_at: datetime  # FIFO key; a requeued job keeps its original time
    instance_count: int = 1
    on_node_failure: OnNodeFailure = "requeue"
    user: str | None = None  # who submitted it (an isolated size serves one user at a time)


@dataclass(frozen=True, kw_only=True)
class RunningJob:
    """A job holding nodes: assigned and not yet ended (or requeued)."""

    name: str
    node_ids: tuple[str, ...] = ()
    on_node_failure: OnNodeFailure = "requeue"
    submitted_at: datetime | None = None  # its place in the queue, should it go back there
    instance_count: int = 1
    user: str | None = None


@dataclass
class ClusterPlan:
    launch: int = 0  # new nodes to request (insert as preparing rows)
    terminate: list[tuple[str, str]] = field(default_factory=list)  # (node_id, reason)
    assign: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (job, its N nodes)
    mark_unusable: list[str] = field(default_factory=list)
    requeue: list[tuple[str, str]] = field(default_factory=list)  # (job, reason)
    fail: list[tuple[str, str]] = field(default_factory=list)  # (job, reason)
    # Every state change, in order, each valid by the node table. A node may move twice
    # in one pass (running → idle → leaving when its job ends on a draining cluster).
    node_transitions: list[tuple[str, NodeState, str]] = field(default_factory=list)
    target_nodes: int = 0  # ARM's target_node_count; current ≠ target means Resizing
    drained: bool = False  # deleting and every node removed: the cluster row can go
    # The compute's observed status after this pass (target node count, start failures and the
    # provisioning errors that say so, quota wait, the queue as decided): the apply stores it.
    observed: ComputeStatus = field(default_factory=ComputeStatus)
    waiting: dict[str, str] = field(default_factory=dict)  # job → `job show`'s reason, from `observed`
    # The queue after this plan, head first: the jobs left waiting, and the requeued ones back in their place.
    queue_jobs: list[QueuedJob] = field(default_factory=list)
    idle: int = 0  # after this plan: idle nodes,
    starting: int = 0  # preparing ones (those launched now included)
    busy: int = 0  # and running ones
    hold: bool = False  # the provider cannot tell which nodes it holds yet: change nothing
    # A provisioning-state move of the compute (a serverless pool whose job ended → Deleting), with why.
    provisioning: tuple[str, str] | None = None


def decide_cluster(
    config: ClusterConfig,
    nodes: Sequence[NodeView],
    queued: Sequence[QueuedJob],
    running: Sequence[RunningJob],
    now: datetime,
    *,
    observed: ComputeStatus | None = None,
    quota: QuotaHeadroom | None = None,
    engine_waiting: str | None = None,
    queue_more: bool = False,
    holders: Sequence[Holder] | None = None,
) -> ClusterPlan:
    """Plan one pass for one cluster. `nodes` are its non-removed node rows with this pass's
    observations; `queued` its Queued jobs (any order: FIFO is by submitted_at); `running`
    the jobs holding its nodes; `observed` its status as the last pass left it (start
    failures); `quota` the workspace's quota headroom (None: no limits); `engine_waiting`
    why the engine has no room for its next node (a note in the jobs' reasons); `queue_more`: `queued`
    is the queue's head only, of at least max_instances + 1 jobs (the plan is then the same as with the
    whole queue: no more of it can be placed, and it already asks for every node the cluster may have).
    `holders` (None: nothing to keep apart): for an isolated size, the jobs on the hardware its nodes share
    (its own running jobs, and others' on the same host): another user's job waits until they end, and
    no node is started for it.

    Applying the plan, in this order, is the reconciler's part: each node transition
    through `check_transition` (entering idle sets idle_since=now and clears job_name;
    the nodes in `assign` get job_name); `launch` new preparing rows; `terminate` and
    `launch` with request ids derived from node ids / the pass; for `requeue` and
    `fail`, stop the job and release its nodes, so it no longer appears in `running`;
    store `observed`.
    """
    observed = observed or ComputeStatus()
    plan = ClusterPlan()
    world = _World(plan, nodes)
    holding = {job.name for job in running}

    for node in sorted(nodes, key=lambda n: n.node_id):
        _sync_node(config, node, holding, now, world)
    _jobs_on_lost_nodes(nodes, running, world)

    cap = 0 if config.deleting or config.stopped else config.max_instances
    _drain_above(cap, config, world)

    # Most recently idle first, so the longest-idle nodes are the ones left to time out.
    free = sorted(world.in_state(N.IDLE), key=lambda i: world.idle_since[i], reverse=True)
    placement = place_fifo(config, [q for q in queued if q.name not in holding], free, holders)
    for job_name, node_ids in placement.assign:
        for node_id in node_ids:
            world.move(node_id, N.RUNNING, f"assigned to job {job_name}")
        plan.assign.append((job_name, node_ids))
    plan.fail.extend(placement.fail)

    live = sum(1 for s in world.state.values() if s in LIVE)
    busy = len(world.in_state(N.RUNNING))
    # A head that waits for another user's jobs to end gets no new node: one would only stand idle.
    demand = 0 if placement.isolated else sum(job.instance_count for job in placement.waiting)
    floor = 0 if config.deleting or config.stopped else min(config.min_instances, config.max_instances)
    plan.target_nodes = min(cap, max(floor, busy + demand))
    wanted = max(0, plan.target_nodes - live)
    _scale_down_idle(live - plan.target_nodes, config, now, world)

    failures, errors = _start_failures(nodes, world, observed, now)
    held_back = failures is not None and failures.retry_at is not None and now < failures.retry_at
    plan.launch, quota_wait = 0, None
    if wanted and not held_back:
        plan.launch, quota_wait = (quota or QuotaHeadroom()).fit(
            family=config.family, vcpus_per_node=config.vcpus_per_node,
            low_priority=config.tier == "low_priority", wanted=wanted)

    plan.idle, plan.busy = len(world.in_state(N.IDLE)), busy
    plan.starting = len(world.in_state(N.PREPARING)) + plan.launch
    plan.queue_jobs = _queue_after(placement.waiting, running, plan, queue_more)
    notes = [n for n in (placement.isolated, engine_waiting) if n]
    queue = decided_queue(config, plan.queue_jobs, idle=plan.idle, starting=plan.starting, busy=busy,
                          notes=notes, more=queue_more)
    plan.observed = observed.model_copy(update={
        "target_node_count": plan.target_nodes, "start_failures": failures, "provisioning_errors": errors,
        "quota_wait": quota_wait, "queue": queue})
    fill_waiting(plan, config.name)
    plan.drained = config.deleting and all(s == N.REMOVED for s in world.state.values())
    return plan


def fill_waiting(plan: ClusterPlan, compute: str) -> None:
    """Each waiting job's reason, as `job show` will read it from the stored status."""
    plan.waiting = {job.name: reason_at(compute, plan.observed, position, job.instance_count)
                    for position, job in enumerate(plan.queue_jobs, start=1)}


def _queue_after(waiting: Sequence[QueuedJob], running: Sequence[RunningJob], plan: ClusterPlan,
                 more: bool) -> list[QueuedJob]:
    """The queue as it stands once the plan is applied: a requeued job is queued again in its FIFO
    place, so its reason is stored with the others'. Behind a head (`more`), a requeued job that falls
    past the head's last job is left out: jobs unread lie between, and it counts them (queued_reason)."""
    requeued = {name for name, _ in plan.requeue}
    back = [QueuedJob(name=job.name, submitted_at=job.submitted_at, instance_count=job.instance_count,
                      on_node_failure=job.on_node_failure, user=job.user)
            for job in running if job.name in requeued and job.submitted_at is not None]
    if more:
        last = waiting[-1].submitted_at if waiting else None
        back = [job for job in back if last is not None and job.submitted_at <= last]
    return sorted([*waiting, *back], key=lambda job: job.submitted_at) if back else list(waiting)


def preemptions(
    config: ClusterConfig, nodes: Sequence[NodeView], probability: float, draws: Sequence[float]
) -> list[str]:
    """Nodes a simulated low-priority eviction takes: the i-th node that is up (idle or
    running, by node_id) goes when draws[i] < probability. Nodes still preparing are spared,
    so a drill evicts work, not boots. The caller supplies the draws from its seeded RNG and
    reports the victims back as `NodeView(preempted=True)`."""
    if config.tier != "low_priority":
        return []
    candidates = sorted(n.node_id for n in nodes if n.state in (N.IDLE, N.RUNNING) and not n.preempted)
    return [node_id for node_id, draw in zip(candidates, draws) if draw < probability]


class _World:
    """The nodes' states as the plan changes them; every move is checked and recorded."""

    def __init__(self, plan: ClusterPlan, nodes: Sequence[NodeView]) -> None:
        self.plan = plan
        self.state: dict[str, NodeState] = {n.node_id: NodeState(n.state) for n in nodes}
        self.idle_since: dict[str, datetime] = {n.node_id: n.idle_since or n.created_at for n in nodes}
        self.created_at: dict[str, datetime] = {n.node_id: n.created_at for n in nodes}
        self.why_lost: dict[str, str] = {}  # node → why, for nodes lost this pass

    def move(self, node_id: str, target: NodeState, reason: str, now: datetime | None = None) -> None:
        check_transition(self.state[node_id], target)
        self.state[node_id] = target
        if target == N.IDLE and now is not None:
            self.idle_since[node_id] = now
        self.plan.node_transitions.append((node_id, target, reason))

    def remove(self, node_id: str, target: NodeState, reason: str) -> None:
        """Move a node out of the cluster and ask the provider to terminate it."""
        self.move(node_id, target, reason)
        self.plan.terminate.append((node_id, reason))

    def in_state(self, state: NodeState) -> list[str]:
        return sorted(i for i, s in self.state.items() if s == state)


def _sync_node(config: ClusterConfig, node: NodeView, holding: set[str], now: datetime, world: _World) -> None:
    node_id, state = node.node_id, world.state[node.node_id]
    if state == N.REMOVED:
        return
    if not node.present:
        # The provider's word on why, where it gave one (a Kubernetes pod deleted or evicted).
        said = f": {node.start_error}" if node.start_error else ""
        world.why_lost[node_id] = f"node {node_id} disappeared from the provider{said}"
        did_not_start = state == N.PREPARING
        world.move(node_id, N.REMOVED, f"it did not start: {node.start_error or 'its agent is gone'}"
                   if did_not_start else f"the provider no longer lists it{said}")
        return
    if state not in LIVE:
        return  # leaving, preempted or unusable: waiting for the provider to let go
    if node.preempted:
        world.remove(node_id, N.PREEMPTED, f"node {node_id} was preempted (low priority)")
        return
    silence = _silence(config, node, now)
    if silence:
        world.why_lost[node_id] = silence
        world.plan.mark_unusable.append(node_id)
        world.remove(node_id, N.UNUSABLE, silence)
    elif state == N.PREPARING and node.last_heartbeat is not None:
        world.move(node_id, N.IDLE, "agent ready", now)
    elif state == N.RUNNING and node.job_name not in holding:
        world.move(node_id, N.IDLE, f"job {node.job_name} ended", now)


def _silence(config: ClusterConfig, node: NodeView, now: datetime) -> str | None:
    """Why the node counts as dead, or None. Strictly past the timeout, not at it."""
    if node.state == N.PREPARING and node.last_heartbeat is None:
        if now - node.created_at > span(config.prepare_timeout_s):
            return f"node {node.node_id} did not become ready within {config.prepare_timeout_s:g} s"
        return None
    quiet = now - (node.last_heartbeat or node.created_at)
    if quiet > span(config.heartbeat_timeout_s):
        return (
            f"node {node.node_id} stopped heartbeating: none for {quiet.total_seconds():.0f} s "
            f"(timeout {config.heartbeat_timeout_s:g} s)"
        )
    return None


def _start_failures(nodes: Sequence[NodeView], world: _World, observed: ComputeStatus,
                    now: datetime) -> tuple[StartFailures | None, list[ProvisioningError] | None]:
    """Nodes that died before they were ready, in a row, and when the next may start (1, 2, 4 …
    60 s after the last), so a node that cannot start is not replaced in a tight loop; and
    Azure's provisioning_errors that say so (cleared once a node gets ready)."""
    died = {n.node_id: n.start_error or "its agent is gone"
            for n in nodes if not n.present and n.state == N.PREPARING}
    ready = any(n.state == N.PREPARING and world.state[n.node_id] in (N.IDLE, N.RUNNING) for n in nodes)
    failures = None if ready else observed.start_failures
    if not died:
        if failures is None:
            return None, None
        # Still failing starts, and said so already; a failure of the pass itself is over.
        kept = [e for e in observed.provisioning_errors or [] if e.code != RECONCILE_ERROR]
        return failures, kept or None
    count = (failures.count if failures else 0) + len(died)
    wait_s = min(2 ** min(count - 1, 16), MAX_START_BACKOFF_S)
    node_id, why = max(died.items())  # the last by node id, as said before
    failures = StartFailures(count=count, retry_at=now + timedelta(seconds=wait_s), last_node=node_id, last_reason=why)
    message = (f"{count} node(s) in a row failed to start; the last, {node_id}: {why}; "
               f"trying again in {wait_s:.0f} s")
    return failures, [ProvisioningError(code=START_FAILED, message=message)]


def _jobs_on_lost_nodes(nodes: Sequence[NodeView], running: Sequence[RunningJob], world: _World) -> None:
    """Requeue or fail each job that holds a node that is gone, preempted or unusable.

    Checked every pass, not only when the node falls, so a crash between act and apply
    cannot leave a job holding a dead node. The job's other nodes stay running until
    the reconciler has stopped it and it no longer holds them.
    """
    for job in running:
        node_ids = set(job.node_ids) | {n.node_id for n in nodes if n.job_name == job.name and n.state == N.RUNNING}
        why, preempted = None, False
        for node_id in sorted(node_ids):
            state = world.state.get(node_id)
            if state == N.PREEMPTED:
                why, preempted = f"preempted: node {node_id} was reclaimed (low-priority tier)", True
                break
            if state is None or state not in LIVE:
                gone = f"node {node_id} is {state.value if state else 'gone'}"
                why = why or world.why_lost.get(node_id, gone)
        if why is None:
            continue
        if preempted or job.on_node_failure == "requeue":
            world.plan.requeue.append((job.name, why))
        else:
            world.plan.fail.append((job.name, why))


def _drain_above(cap: int, config: ClusterConfig, world: _World) -> None:
    """Bring live nodes down to the cap: idle ones (longest idle first), then preparing ones
    (newest first). Busy nodes above the cap are removed after their job ends, on the
    pass that sees them idle."""
    excess = sum(1 for s in world.state.values() if s in LIVE) - cap
    if excess <= 0:
        return
    if config.stopped:
        reason = config.stopped
    elif config.deleting:
        reason = f"compute cluster {config.name} is being deleted"
    else:
        reason = f"above max_instances {config.max_instances}"
    idle = sorted(world.in_state(N.IDLE), key=lambda i: world.idle_since[i])
    preparing = sorted(world.in_state(N.PREPARING), key=lambda i: world.created_at[i], reverse=True)
    for node_id in (idle + preparing)[:excess]:
        world.remove(node_id, N.LEAVING, reason)


def _scale_down_idle(surplus: int, config: ClusterConfig, now: datetime, world: _World) -> None:
    """Remove up to `surplus` idle nodes whose idle time has run out, longest idle first.

    A node idle since t goes at t + idle_time_before_scale_down exactly, not before.
    """
    if surplus <= 0:
        return
    idle_time = span(config.idle_time_before_scale_down)  # clamped: a stored 10^29 must not overflow
    expired = [i for i in world.in_state(N.IDLE) if now - world.idle_since[i] >= idle_time]
    for node_id in sorted(expired, key=lambda i: world.idle_since[i])[:surplus]:
        world.remove(node_id, N.LEAVING, f"idle for {idle_time.total_seconds():g} s (idle_time_before_scale_down)")
