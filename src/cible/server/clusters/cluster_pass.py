"""One compute's pass (a cluster, a compute instance or a serverless pool), in the one shape of
every reconciler (cible.server.reconcilers.shape): load → observe → decide → apply → act.

    load     one read: the compute's parsed spec and observed status (start failures, an
             instance's power), its node rows as plain data, its queue, its running jobs, the
             quota headroom the reconciler carries through the pass
    observe  the provider's listing and errors folded into the nodes, the engine's room, the
             preemption drill (it stands for the cloud taking a low-priority node back)
    decide   `decide_compute` (cible.core.planning.compute_plan): pure, and applied as it is
    apply    one transaction: node moves through the node table, placements, requeues, fails,
             new node rows, the compute's provisioning state (`move_compute`) and observed status
    act      after commit: start and stop nodes, wake agents, keep a requeued attempt's logs,
             remove a deleted instance's home

A crash between apply and act is healed by the next pass: a preparing row with no agent is not
listed by the provider and is replaced; an assignment is re-sent by the agent's next heartbeat,
which reads the database. A row changed since the load (the compute's version, a job no longer
queued) fails the whole apply, and the next pass decides again.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cible.backends.base.contract import NodeRequest, ProviderNode
from cible.core.lifecycle.computes import ProvisioningState
from cible.core.lifecycle.jobs import JobStatus, is_terminal
from cible.core.lifecycle.nodes import LIVE, NodeState, check_transition
from cible.core.models.computes import ComputeInstance, idle_time_seconds
from cible.core.models.records import ClusterHandle, JobError, NodeInfo, Requeue
from cible.core.planning.clusters import ClusterPlan, NodeView, QueuedJob, RunningJob, preemptions
from cible.core.planning.compute_plan import ComputeSnapshot, compute_config, decide_compute
from cible.core.planning.costs import effective_price
from cible.core.planning.quotas import NodeUse, QuotaHeadroom
from cible.core.planning.scheduling import Holder
from cible.launch.distribution import free_port
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.provider_calls import ProviderCalls
from cible.server.reconcilers.shape import check_unchanged
from cible.server.services.compute_spec import attached_spark, cible_settings, node_spec, provider_name
from cible.server.services.jobs import set_status
from cible.server.services.kubernetes import POOL_TYPE
from cible.server.services.lifecycle import move_compute
from cible.server.store.rows import ComputeRow, JobRow, NodeRow, NodeStateRow, job_is_live, job_is_queued
from cible.workspace import WorkspacePaths

log = logging.getLogger("cible.reconciler.clusters")
QUEUED = JobStatus.QUEUED.value
LOCAL_PROVIDER, LOCAL_COMPUTE = "local", "local"  # the provider whose nodes run on this machine; the compute too
NODE_TYPES = ("amlcompute", "computeinstance", "serverless", "synapsespark", POOL_TYPE)
# The observed fields this pass owns (an instance's own state is its pass's, instance_state.py).
OWNED = ("target_node_count", "provisioning_errors", "quota_wait", "start_failures", "queue")


@dataclass
class PassWorld:
    """What every compute's pass of one reconciler pass shares: the providers' view, read once,
    and the quota headroom, which grows by the nodes each applied plan launched."""

    listing: dict[str, dict[str, ProviderNode] | None]
    errors: dict[str, dict[str, str]]
    engine_waits: dict[str, dict[str, str]]  # provider → compute → why its next node waits (Ray)
    quota: QuotaHeadroom
    elapsed_s: float  # since the previous reconciler pass (the drill's odds)
    # The computes whose nodes run on this machine -> whether their size is isolated: read once a pass,
    # by the first compute that needs it (the jobs running here are read by each: a compute's pass
    # places jobs the next one must see).
    local_computes: dict[str, bool] | None = None


@dataclass(frozen=True)
class HostJob:
    """A job running on this machine (the `local` provider's nodes, or the local compute)."""

    target: str
    holder: Holder
    isolated: bool  # its compute's size is an isolated one


@dataclass
class PassTools:
    """The reconciler's long-lived parts a compute's pass uses."""

    paths: WorkspacePaths
    calls: ProviderCalls
    hub: AgentHub
    rng: random.Random
    started_at: datetime  # heartbeats before this server started count from its start
    heartbeat_timeout_s: float
    prepare_timeout_s: float
    on_jobs_changed: Callable[[], None]
    unreadable: set[str] = field(default_factory=set)  # node rows left out of the plans (logged once)


@dataclass(frozen=True)
class StoredNode:
    """A node row as loaded: plain data, detached from any session."""

    node_id: str
    state: str
    job_name: str | None
    created_at: datetime
    idle_since: datetime | None
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class Loaded:
    """The snapshot of one compute: what decide reads, and what apply and act need besides."""

    snapshot: ComputeSnapshot
    provider: str
    version: int  # the compute row's, at load: a row changed since fails the apply
    stored_nodes: tuple[StoredNode, ...] = ()
    on_node_failure: str = "requeue"
    preemptions_per_node_hour: float = 0.0
    overcommit: bool = False
    instance_disk_gb: float | None = None


@dataclass
class Actions:
    """What to do once the apply is committed."""

    provider: str
    now: datetime
    launch: list[NodeRequest] = field(default_factory=list)
    terminate: list[str] = field(default_factory=list)
    wake: set[str] = field(default_factory=set)
    archive: list[tuple[str, int]] = field(default_factory=list)  # (job, attempt): keep its logs aside
    remove_home: str | None = None  # a deleted instance
    jobs_changed: bool = False
    node_use: NodeUse | None = None  # what each launched node holds of the quotas


class ClusterPass:
    """The steps of one compute's pass, for `run_pass`."""

    def __init__(self, name: str, world: PassWorld, tools: PassTools) -> None:
        self.name = name
        self.world = world
        self.tools = tools

    # -- load ----------------------------------------------------------------------------
    def load(self, session: Session, now: datetime) -> Loaded | None:
        row = session.get(ComputeRow, self.name)
        if row is None:
            return None
        spec, size = node_spec(row)
        settings = cible_settings(spec)
        on_node_failure = getattr(settings, "on_node_failure", "requeue")  # instances: requeue
        nodes = tuple(StoredNode(*r) for r in session.execute(select(
            NodeRow.node_id, NodeRow.state, NodeRow.job_name, NodeRow.created_at, NodeRow.idle_since,
            NodeRow.last_heartbeat).where(NodeRow.compute == self.name, NodeRow.state != NodeState.REMOVED.value)))
        running = tuple(RunningJob(name=name, node_ids=tuple(run.cluster_nodes()), on_node_failure=on_node_failure,
                                   submitted_at=created_at, instance_count=count, user=user)
                        for name, run, created_at, count, user in session.execute(select(
                            JobRow.name, JobRow.run, JobRow.created_at, JobRow.instance_count, JobRow.created_by).where(
                            job_is_live(), JobRow.target == self.name, JobRow.status != QUEUED))
                        if run.cluster_nodes())
        pool_job, pool_job_ended = None, False
        if row.compute_type == "serverless":  # its nodes are for its job only
            pool_job = row.spec["job"]
            status = session.scalar(select(JobRow.status).where(JobRow.name == pool_job))
            pool_job_ended = status is None or is_terminal(status)
        snapshot = ComputeSnapshot(
            name=self.name, kind="amlcompute" if row.compute_type == POOL_TYPE else row.compute_type,  # pods: a cluster
            spec=spec, size=size, observed=row.observed,
            deleting=row.provisioning_state == ProvisioningState.DELETING.value, running=running,
            quota=self.world.quota, pool_job=pool_job, pool_job_ended=pool_job_ended,
            heartbeat_timeout_s=self.tools.heartbeat_timeout_s, prepare_timeout_s=self.tools.prepare_timeout_s,
            holders=self._holders(session, size.isolated, provider_name(spec), running))
        snapshot = self._load_queue(session, snapshot, on_node_failure)
        return Loaded(snapshot=snapshot, provider=provider_name(spec), version=row.version, stored_nodes=nodes,
                      on_node_failure=on_node_failure,
                      preemptions_per_node_hour=getattr(settings, "preemptions_per_node_hour", 0.0),
                      overcommit=settings.overcommit,
                      instance_disk_gb=getattr(settings, "os_disk_gb", None))

    def _holders(self, session: Session, isolated: bool, provider: str, running: tuple[RunningJob, ...],
                 ) -> tuple[Holder, ...] | None:
        """The jobs on the hardware this compute's nodes share, which an isolated size shares with no
        other user: its own running jobs, and on this machine (the `local` provider) every other job
        running here when this size is isolated, or the jobs of isolated sizes when it is not. None:
        nothing to keep apart."""
        own = [Holder(job.user, job.name) for job in running] if isolated else []
        if provider == LOCAL_PROVIDER:
            if self.world.local_computes is None:
                self.world.local_computes = local_computes(session)
            own += [job.holder for job in host_jobs(session, self.world.local_computes)
                    if job.target != self.name and (isolated or job.isolated)]
        return tuple(own) if isolated or own else None

    def _load_queue(self, session: Session, snapshot: ComputeSnapshot, on_node_failure: str) -> ComputeSnapshot:
        """The queue's head, FIFO, its columns only (never the jobs' JSON): max_instances + 1 jobs give
        the plan the whole queue would (see decide_cluster), so a pass costs the same behind a queue
        of 10 or 10,000 jobs."""
        depth = compute_config(snapshot).max_instances + 1
        head = [QueuedJob(name=name, submitted_at=created_at, instance_count=count, on_node_failure=on_node_failure,
                          user=user)
                for name, created_at, count, user in session.execute(select(
                    JobRow.name, JobRow.created_at, JobRow.instance_count, JobRow.created_by)
                    .where(job_is_queued(), JobRow.target == self.name)
                    .order_by(JobRow.created_at, JobRow.name).limit(depth + 1))]
        return replace(snapshot, queued=tuple(head[:depth]), queue_more=len(head) > depth)

    # -- observe -------------------------------------------------------------------------
    def observe(self, loaded: Loaded, now: datetime) -> Loaded:
        listed = self.world.listing.get(loaded.provider)
        if listed is None:  # its engine not seen yet: decide holds everything as it is
            return replace(loaded, snapshot=replace(loaded.snapshot, seen=False))
        errors = self.world.errors.get(loaded.provider, {})
        views = [view for stored in loaded.stored_nodes
                 if (view := self._view(stored, listed.get(stored.node_id), errors)) is not None]
        views = self._preempt_at_random(loaded, views)
        waiting = self.world.engine_waits.get(loaded.provider, {}).get(self.name)
        return replace(loaded, snapshot=replace(loaded.snapshot, nodes=tuple(views), engine_waiting=waiting))

    def _view(self, stored: StoredNode, seen: ProviderNode | None, errors: dict[str, str]) -> NodeView | None:
        try:
            state = NodeState(stored.state)
        except ValueError:
            # A node row no table knows is left out of the plan: its cluster goes on without it,
            # and its job, if any, is requeued as on a lost node.
            if stored.node_id not in self.tools.unreadable:
                self.tools.unreadable.add(stored.node_id)
                log.exception("node %r of %r cannot be read; it is left out", stored.node_id, self.name)
            return None
        error = errors.get(stored.node_id)
        if error:
            log.warning("node %s: %s", stored.node_id, error)
        heartbeat = stored.last_heartbeat
        if heartbeat is not None:
            heartbeat = max(heartbeat, self.tools.started_at)
        created = stored.created_at
        if state == NodeState.PREPARING:
            created = max(created, self.tools.started_at)
        return NodeView(node_id=stored.node_id, state=state, created_at=created, job_name=stored.job_name,
                        idle_since=stored.idle_since, last_heartbeat=heartbeat,
                        present=seen is not None and error is None, preempted=bool(seen and seen.preempted),
                        start_error=error)

    def _preempt_at_random(self, loaded: Loaded, views: list[NodeView]) -> list[NodeView]:
        """The drill: `cible.preemptions_per_node_hour` on a low-priority cluster evicts nodes at random,
        as the cloud would; decide then sees them preempted like any other."""
        rate, elapsed_s = loaded.preemptions_per_node_hour, self.world.elapsed_s
        if rate <= 0 or elapsed_s <= 0 or not self.tools.calls.can_preempt(loaded.provider):
            return views
        probability = 1 - math.exp(-rate * elapsed_s / 3600)
        draws = [self.tools.rng.random() for _ in views]
        victims = preemptions(compute_config(loaded.snapshot), views, probability, draws)
        for node_id in victims:
            self.tools.calls.providers[loaded.provider].preempt(node_id)
        return [replace(v, preempted=True) if v.node_id in victims else v for v in views]

    # -- decide --------------------------------------------------------------------------
    def decide(self, loaded: Loaded, now: datetime) -> ClusterPlan:
        return decide_compute(loaded.snapshot, now)

    # -- apply ---------------------------------------------------------------------------
    def apply(self, session: Session, loaded: Loaded, plan: ClusterPlan, now: datetime) -> Actions:
        actions = Actions(provider=loaded.provider, now=now)
        if plan.hold:
            return actions
        compute = session.get(ComputeRow, self.name, with_for_update=True)
        check_unchanged(compute, loaded.version, f"compute {self.name}")
        if plan.provisioning is not None:
            move_compute(session, compute, plan.provisioning[0], plan.provisioning[1], now)
        job_of = {node_id: job for job, node_ids in plan.assign for node_id in node_ids}
        for node_id, target, reason in plan.node_transitions:
            row = session.get(NodeRow, node_id, with_for_update=True)
            if target == NodeState.REMOVED and NodeState(row.state) in LIVE:
                actions.terminate.append(node_id)  # removed without a terminate: its working root still needs it
            move_node(session, row, target, reason, now, job_name=job_of.get(node_id))
            actions.wake.add(node_id)
        for job_name, why in plan.requeue:
            self._requeue(session, job_name, why, now, actions)
        for job_name, why in plan.fail:
            self._fail(session, job_name, why, now, actions)
        for job_name, node_ids in plan.assign:
            self._assign(session, job_name, list(node_ids), now)
            actions.wake.update(node_ids)
        actions.jobs_changed = bool(plan.requeue or plan.fail or plan.assign)
        actions.terminate = [node_id for node_id, _ in plan.terminate] + actions.terminate
        size, low = loaded.snapshot.size, _tier(loaded) == "low_priority"
        actions.node_use = NodeUse(size.family, size.vcpus, low)
        actions.launch = [self._new_node(session, loaded, now) for _ in range(plan.launch)]
        changes = {key: getattr(plan.observed, key) for key in OWNED
                   if getattr(compute.observed, key) != getattr(plan.observed, key)}
        if changes:  # no write on a quiet pass: every write bumps the row's version
            compute.observed = compute.observed.model_copy(update=changes)
        if plan.drained:
            session.delete(compute)
            if compute.compute_type == "computeinstance":  # its home goes with it, once committed
                actions.remove_home = self.name
        return actions

    def _assign(self, session: Session, job_name: str, node_ids: list[str], now: datetime) -> None:
        job = session.get(JobRow, job_name, with_for_update=True)
        if job is None or job.status != QUEUED:  # canceled (or gone) since the load
            raise StaleDataError(f"job {job_name} is no longer queued")
        attempt = job.run.attempts + 1
        addrs = []
        for node_id in node_ids:
            node = session.get(NodeRow, node_id, with_for_update=True)
            node.job_name = job_name
            addrs.append(node.address or "127.0.0.1")
        # Placed: the job leaves the queue. Preparing from here on (its nodes get ready for it);
        # the launchers' own reports take it on from there.
        set_status(session, job, JobStatus.PREPARING, now,
                   reason=f"assigned to node{'s' if len(node_ids) > 1 else ''} {', '.join(node_ids)}")
        handle = ClusterHandle(
            job_name=job_name, compute=job.target, attempt=attempt, nodes=node_ids, node_addrs=addrs,
            # The nodes of the `local` provider share this host, so a port free here is free for rank 0.
            master_port=free_port(addrs[0]) if addrs[0].startswith("127.") else 29500)
        job.run = job.run.model_copy(update={"attempts": attempt, "queue_reason": None, "handle": handle})
        job.updated_at = now

    def _requeue(self, session: Session, job_name: str, why: str, now: datetime, actions: Actions) -> None:
        """Put a job whose node was lost back in the queue (its place kept); the nodes it still
        holds drop it on their next heartbeat."""
        job = session.get(JobRow, job_name, with_for_update=True)
        if job is None or is_terminal(job.status):
            return
        handle = job.run.handle if isinstance(job.run.handle, ClusterHandle) else None
        run = job.run.model_copy(update={"handle": None})
        if job.status == JobStatus.CANCEL_REQUESTED.value:
            set_status(session, job, JobStatus.CANCELED, now, reason=f"canceled; {why}")
            job.error = JobError(code="Canceled", message=f"canceled by the user; {why}")
        else:
            set_status(session, job, JobStatus.QUEUED, now, reason=f"requeued: {why}")
            attempt = handle.attempt if handle else None
            run = run.model_copy(update={"requeues": [*run.requeues, Requeue(attempt=attempt, reason=why, at=now)]})
            if attempt:
                actions.archive.append((job_name, attempt))
        job.run = run
        actions.wake.update(handle.nodes if handle else [])

    def _fail(self, session: Session, job_name: str, why: str, now: datetime, actions: Actions) -> None:
        job = session.get(JobRow, job_name, with_for_update=True)
        if job is None or is_terminal(job.status):
            return
        set_status(session, job, JobStatus.FAILED, now, reason=why)
        job.error = JobError(code="NodeLost" if job.run.launched else "CannotRun", message=why)
        actions.wake.update(job.run.cluster_nodes())

    def _new_node(self, session: Session, loaded: Loaded, now: datetime) -> NodeRequest:
        low = _tier(loaded) == "low_priority"
        # Azure's node ids look like tvmps_<hex>_d (dedicated) or _p (low priority). They come from
        # the pass's random source, so a seeded reconciler (the simulation tests) is repeatable.
        node_id = f"tvmps_{self.tools.rng.getrandbits(96):024x}_{'p' if low else 'd'}"
        size = loaded.snapshot.size
        session.add(NodeRow(node_id=node_id, compute=self.name, provider=loaded.provider,
                            state=NodeState.PREPARING.value, address="127.0.0.1", created_at=now, updated_at=now,
                            info=NodeInfo(size=size.name, family=size.family, vcpus=size.vcpus, low_priority=low,
                                          price_per_hour=effective_price(size.price_per_hour, low))))
        session.flush()
        session.add(NodeStateRow(node_id=node_id, from_state=None, to_state=NodeState.PREPARING.value,
                                 reason="requested by the autoscaler", at=now))
        instance = {}
        spec = loaded.snapshot.spec
        if isinstance(spec, ComputeInstance):
            instance = {"disk_gb": loaded.instance_disk_gb,
                        "idle_shutdown_s": idle_time_seconds(spec.idle_time_before_shutdown_minutes,
                                                             spec.idle_time_before_shutdown),
                        "persistent_dir": str(self.tools.paths.instance_home(self.name))}
        return NodeRequest(node_id=node_id, compute=self.name, size=size.name, vcpus=size.vcpus,
                           memory_gb=size.memory_gb, gpus=size.gpus, low_priority=low,
                           overcommit=loaded.overcommit, **instance)

    # -- act -----------------------------------------------------------------------------
    def act(self, actions: Actions) -> None:
        calls = self.tools.calls
        if actions.launch:
            calls.launch(actions.provider, actions.launch)
        if actions.terminate:
            calls.terminate(actions.provider, actions.terminate, actions.now)
        for job_name, attempt in actions.archive:
            self._archive_attempt(job_name, attempt)
        if actions.remove_home:
            try:
                self.tools.paths.remove_instance_home(actions.remove_home)
            except OSError:
                log.exception("compute instance %r: its home could not be removed", actions.remove_home)
        if actions.wake:
            self.tools.hub.notify(*actions.wake)
        if actions.jobs_changed:
            self.tools.on_jobs_changed()

    def _archive_attempt(self, job_name: str, attempt: int) -> None:
        """Keep a requeued attempt's logs beside the new attempt's, under artifacts/attempt-<k>/."""
        try:
            artifacts = self.tools.paths.run_dir(job_name) / "artifacts"
            keep = artifacts / f"attempt-{attempt}"
            for name in ("user_logs", "system_logs"):
                if (artifacts / name).is_dir():
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(artifacts / name), str(keep / name))
        except Exception:  # its logs stay where they are; the job runs again all the same
            log.exception("job %r: the logs of attempt %d could not be kept aside", job_name, attempt)


def move_node(session: Session, row: NodeRow, target: NodeState, reason: str, now: datetime, *,
              job_name: str | None = None) -> None:
    """The one place a node's state changes: the move checked by the node table, a history row
    written (with the job it starts running: cost is counted from it). Entering idle starts its
    idle time; idle or removed, it holds no job."""
    check_transition(row.state, target)
    session.add(NodeStateRow(node_id=row.node_id, from_state=row.state, to_state=target.value, reason=reason, at=now,
                             job_name=job_name if target == NodeState.RUNNING else None))
    row.state, row.updated_at = target.value, now
    if target in (NodeState.IDLE, NodeState.REMOVED):
        row.job_name = None
    if target == NodeState.IDLE:
        row.idle_since = now


def _tier(loaded: Loaded) -> str:
    """dedicated or low_priority (an instance is dedicated)."""
    spec = loaded.snapshot.spec
    return "dedicated" if isinstance(spec, ComputeInstance) else spec.tier


def local_computes(session: Session) -> dict[str, bool]:
    """The computes whose jobs run on this machine (the `local` compute, the `local` provider's) -> whether
    their size is isolated. A compute row that cannot be read is left out, alone."""
    targets: dict[str, bool] = {LOCAL_COMPUTE: False}
    for row in session.scalars(select(ComputeRow).where(ComputeRow.compute_type.in_(NODE_TYPES))):
        if attached_spark(row):  # not cible's nodes
            continue
        try:
            spec, size = node_spec(row)
            if provider_name(spec) == LOCAL_PROVIDER:
                targets[row.name] = size.isolated
        except Exception:  # noqa: BLE001 - one bad row must not stop every compute's pass
            log.warning("compute %r cannot be read for isolation; it is left out", row.name)
    return targets


def host_jobs(session: Session, targets: dict[str, bool]) -> list[HostJob]:
    """The jobs running on this machine, when a compute of an isolated size has its nodes here (none
    otherwise: nothing to hold apart, and nothing read)."""
    if not any(targets.values()):
        return []
    rows = session.execute(select(JobRow.target, JobRow.created_by, JobRow.name).where(
        job_is_live(), JobRow.status != QUEUED, JobRow.target.in_(list(targets))))
    return [HostJob(target, Holder(user, name), targets[target]) for target, user, name in rows]
