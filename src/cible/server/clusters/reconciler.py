"""The cluster reconciler: load → observe → decide → apply → act, for every amlcompute cluster.

`decide_cluster` (pure) says what to do; this module feeds it the database and the
provider's view, writes the plan in one transaction (node states through the node
transition table, job placements, requeues), and only then acts: starting and
stopping nodes, waking agents. A crash between apply and act is healed by the next
pass: a preparing row with no agent is not listed by the provider and is replaced;
an assignment is re-sent by the agent's next heartbeat, which reads the database.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from cible.backends.base.contract import NodeProvider, NodeRequest, ProviderNode
from cible.core import catalog
from cible.core.clock import Clock
from cible.core.lifecycle.jobs import JobStatus, is_terminal
from cible.core.lifecycle.nodes import LIVE, NodeState, check_transition
from cible.core.models.computes import idle_time_seconds, provider_of
from cible.core.planning.clusters import (
    ClusterConfig,
    ClusterPlan,
    NodeView,
    QueuedJob,
    RunningJob,
    decide_cluster,
    preemptions,
)
from cible.core.planning.costs import effective_price
from cible.core.planning.durations import span
from cible.launch.distribution import free_port
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.provider_calls import ProviderCalls
from cible.server.reconcilers.failures import DATABASE_DOWN, Troubles, describe
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.services.computes import DELETING, NODE_COMPUTE_TYPES
from cible.server.services.instance_state import instance_pass, record_pass_failure
from cible.server.services.jobs import set_status
from cible.server.services.quotas import QuotaGate, QuotaService
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow, NodeStateRow
from cible.workspace import WorkspacePaths

log = logging.getLogger("cible.reconciler.clusters")
IDLE_POLL_S = 2.0
MAX_POLL_S = 1.0  # while a cluster has nodes: heartbeat and preparing timeouts are seen within this
NEVER_S = 1e9  # an instance's node is never scaled down for idleness (idle shutdown is its own)
RECONCILE_ERROR = "ReconcileError"  # a compute's provisioning_errors code when its own pass fails


@dataclass
class Loaded:
    """One cluster as read from the database, detached from the session."""

    config: ClusterConfig
    size: catalog.VmSize
    spec: dict[str, Any]
    nodes: list[NodeRow] = field(default_factory=list)
    queued: list[QueuedJob] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    kind: str = "amlcompute"


class ClusterReconciler(ReconcilerLoop):
    name = "cluster-reconciler"

    def __init__(self, store: Store, paths: WorkspacePaths, providers: dict[str, NodeProvider], hub: AgentHub,
                 clock: Clock, *, heartbeat_timeout_s: float, prepare_timeout_s: float,
                 quotas: QuotaService | None = None, on_jobs_changed=lambda: None,  # noqa: ANN001
                 seed: int | None = None) -> None:
        self.store = store
        self.quotas = quotas or QuotaService(store, clock)
        self.paths = paths
        self.providers = providers
        self.hub = hub
        self.clock = clock
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.prepare_timeout_s = prepare_timeout_s
        self.on_jobs_changed = on_jobs_changed
        self.rng = random.Random(seed)
        # Heartbeats recorded before this server started count from its start: agents
        # get a full timeout to find a restarted server before they are written off.
        self.started_at = clock.now()
        self._last_pass: datetime | None = None
        # Nodes that died before they were ready, in a row, per cluster; and when it may try again.
        self._failed_starts: dict[str, int] = {}
        self._retry_at: dict[str, datetime] = {}
        # Records whose handling raised (computes, instance passes, providers): each backs off alone.
        self._troubles = Troubles(log)
        self.calls = ProviderCalls(providers, self._troubles, log)
        self._unreadable: set[str] = set()  # node rows left out of the plans (logged once)
        super().__init__()

    def step(self) -> float:
        return self.reconcile_once()

    def reconcile_once(self) -> float:
        """One pass over every cluster; returns how soon the next pass is due."""
        now = self.clock.now()
        elapsed = (now - self._last_pass).total_seconds() if self._last_pass else 0.0
        self._last_pass = now
        with self.store.session() as session:
            names = session.scalars(select(ComputeRow.name).where(ComputeRow.compute_type.in_(NODE_COMPUTE_TYPES))).all()
        if not names:
            return IDLE_POLL_S
        listing = self.calls.listings(now)  # None: cannot tell yet
        errors = self.calls.errors(now)
        self.calls.retry_terminations(now)
        quotas = self.quotas.snapshot()  # the workspace's vCPU quotas and what its live nodes use
        delay = IDLE_POLL_S
        for name in names:
            if self._troubles.backing_off(name, now):
                continue
            try:  # one compute's failure is that compute's: the others go on (see failures.py)
                delay = min(delay, self._reconcile(name, listing, errors, quotas, now, elapsed))
                self._troubles.succeeded(name)
            except DATABASE_DOWN:
                raise
            except Exception as error:  # noqa: BLE001
                self._cluster_failed(name, error, now)
        return delay

    def _reconcile(self, name: str, listing: dict[str, dict[str, ProviderNode] | None],
                   errors: dict[str, dict[str, str]], quotas: QuotaGate, now: datetime, elapsed: float) -> float:
        """One compute's pass; returns how soon its next is due."""
        loaded = self._load(name, listing, now)
        if loaded is None:
            return IDLE_POLL_S
        provider = provider_of(loaded.spec)
        if listing.get(provider) is None:  # its engine not seen yet: neither lose nor start nodes
            return MAX_POLL_S
        views = self._observe(loaded, listing.get(provider, {}), errors.get(provider, {}), now)
        views = self._preempt_at_random(loaded, views, provider, elapsed)
        plan = decide_cluster(loaded.config, views, loaded.queued, loaded.running, now)
        failures = self._hold_back_failing_starts(loaded, plan, views, errors.get(provider, {}), now)
        quota_wait = quotas.admit(plan, loaded.size, low_priority=loaded.config.tier == "low_priority")
        self._apply(loaded, plan, provider, now, failures, quota_wait)
        return self._next_due(loaded, views, now)

    def _cluster_failed(self, name: str, error: Exception, now: datetime) -> None:
        """Its pass raised: back off, and say why in the compute's provisioning_errors (`compute show`,
        and the queue reason of its jobs). The next pass that goes through clears it."""
        trouble = self._troubles.failed(name, error, now, what=f"compute {name!r}")
        message = (f"the server could not manage this compute ({trouble.count} tries in a row, next in "
                   f"{trouble.wait_s(now):.0f} s): {trouble.message}")
        try:
            with self.store.session() as session:
                row = session.get(ComputeRow, name, with_for_update=True)
                if row is not None:
                    row.spec = {**row.spec, "provisioning_errors": [{"code": RECONCILE_ERROR, "message": message}]}
        except DATABASE_DOWN:
            raise
        except Exception as again:  # noqa: BLE001
            log.warning("compute %r: its failure could not be recorded: %s", name, describe(again))

    # -- load and observe -----------------------------------------------------------------
    def _load(self, name: str, listing: dict[str, dict[str, ProviderNode] | None], now: datetime) -> Loaded | None:
        with self.store.session() as session:
            row = session.get(ComputeRow, name, with_for_update=True)
            if row is None:
                return None
            nodes = list(session.scalars(select(NodeRow).where(
                NodeRow.compute == name, NodeRow.state != NodeState.REMOVED.value)).all())
            if row.compute_type == "computeinstance":
                live = [n for n in nodes if n.state in LIVE]
                listed = listing.get(provider_of(row.spec))
                node = live[0] if live else None
                if listed is not None:
                    self._instance_pass(row, node, listed.get(node.node_id) if node else None, now)
            elif row.compute_type == "serverless" and row.provisioning_state != DELETING:
                job = session.get(JobRow, row.spec["job"])
                if job is None or is_terminal(job.status):  # its nodes were for that job only
                    row.provisioning_state = DELETING
            spec = dict(row.spec)
            size = catalog.get_size(spec["size"])
            config = cluster_config(row, size, heartbeat_timeout_s=self.heartbeat_timeout_s,
                                    prepare_timeout_s=self.prepare_timeout_s)
            policy = (spec.get("cible") or {}).get("on_node_failure", "requeue")
            loaded = Loaded(config=config, size=size, spec=spec, kind=row.compute_type)
            loaded.nodes = nodes
            # The queue is read on every pass: its columns only, never the jobs' JSON.
            queued = session.execute(select(JobRow.name, JobRow.created_at, JobRow.instance_count).where(
                JobRow.target == name, JobRow.status == JobStatus.QUEUED.value)).all()
            loaded.queued = [QueuedJob(name=job_name, submitted_at=created_at, instance_count=count,
                                       on_node_failure=policy) for job_name, created_at, count in queued]
            placed = session.execute(select(JobRow.name, JobRow.run).where(
                JobRow.target == name, JobRow.status.notin_(["Queued", "Completed", "Failed", "Canceled"]))).all()
            for job_name, run in placed:
                handle = (run or {}).get("handle")
                if handle:
                    loaded.running.append(RunningJob(name=job_name, node_ids=tuple(handle["nodes"]),
                                                     on_node_failure=policy))
            session.flush()  # the instance's and serverless pool's own changes, before detaching
            session.expunge_all()
        return loaded

    def _instance_pass(self, row: ComputeRow, node: NodeRow | None, listed: ProviderNode | None,
                       now: datetime) -> None:
        """The instance's own decisions (idle shutdown, schedules). Should they raise, the failure is
        an event of the instance (and logged once) and its node is still kept by its power."""
        key = ("instance", row.name)
        if self._troubles.backing_off(key, now):
            return
        try:
            instance_pass(row, node, listed, now)
        except Exception as error:  # noqa: BLE001
            trouble = self._troubles.failed(key, error, now, what=f"compute instance {row.name!r}'s pass")
            record_pass_failure(row, f"idle shutdown and schedules are not applied: {trouble.message}", now)
        else:
            self._troubles.succeeded(key)

    def _observe(self, loaded: Loaded, listed: dict[str, ProviderNode], errors: dict[str, str],
                 now: datetime) -> list[NodeView]:
        views = []
        for row in loaded.nodes:
            try:
                views.append(self._view(row, listed.get(row.node_id), errors))
            except Exception:  # noqa: BLE001
                # A node row that cannot be read (a state no table knows) is left out of the plan:
                # its cluster goes on without it, and its job, if any, is requeued as on a lost node.
                if row.node_id not in self._unreadable:
                    self._unreadable.add(row.node_id)
                    log.exception("node %r of %r cannot be read; it is left out", row.node_id, loaded.config.name)
        return views

    def _view(self, row: NodeRow, seen: ProviderNode | None, errors: dict[str, str]) -> NodeView:
        present = seen is not None and row.node_id not in errors
        if row.node_id in errors:
            log.warning("node %s: %s", row.node_id, errors[row.node_id])
        heartbeat = row.last_heartbeat
        if heartbeat is not None:
            heartbeat = max(heartbeat, self.started_at)
        created = row.created_at
        if row.state == NodeState.PREPARING.value:
            created = max(created, self.started_at)
        return NodeView(
            node_id=row.node_id, state=NodeState(row.state), created_at=created, job_name=row.job_name,
            idle_since=row.idle_since, last_heartbeat=heartbeat, present=present,
            preempted=bool(seen and seen.preempted),
        )

    def _preempt_at_random(self, loaded: Loaded, views: list[NodeView], provider: str,
                           elapsed_s: float) -> list[NodeView]:
        """The drill: `cible.preemptions_per_node_hour` on a low-priority cluster evicts nodes at random."""
        rate = float(loaded.spec.get("cible", {}).get("preemptions_per_node_hour", 0) or 0)
        if rate <= 0 or elapsed_s <= 0:
            return views
        probability = 1 - math.exp(-rate * elapsed_s / 3600)
        victims = preemptions(loaded.config, views, probability, [self.rng.random() for _ in views])
        for node_id in victims:
            self.providers[provider].preempt(node_id)
        return [replace(v, preempted=True) if v.node_id in victims else v for v in views]

    def _hold_back_failing_starts(self, loaded: Loaded, plan: ClusterPlan, views: list[NodeView],
                                  errors: dict[str, str], now: datetime) -> dict[str, str]:
        """Back off when nodes die before they are ready (1, 2, 4 … 60 s between tries), so a node
        that cannot start is not replaced in a tight loop; returns why each such node died."""
        name = loaded.config.name
        died = {v.node_id: errors.get(v.node_id, "its agent is gone")
                for v in views if not v.present and v.state == NodeState.PREPARING}
        ready = any(target == NodeState.IDLE and node_id in {v.node_id for v in views if v.state == NodeState.PREPARING}
                    for node_id, target, _ in plan.node_transitions)
        if ready:
            self._failed_starts.pop(name, None)
            self._retry_at.pop(name, None)
        if died:
            count = self._failed_starts.get(name, 0) + len(died)
            self._failed_starts[name] = count
            self._retry_at[name] = now + timedelta(seconds=min(2 ** (count - 1), 60))
        retry_at = self._retry_at.get(name)
        if retry_at is not None and now < retry_at:
            plan.launch = 0
        return died

    # -- apply, then act ----------------------------------------------------------------
    def _apply(self, loaded: Loaded, plan: ClusterPlan, provider_name: str, now: datetime,
               failures: dict[str, str], quota_wait: str | None = None) -> None:
        name = loaded.config.name
        wake: set[str] = set()
        vanished: list[str] = []  # removed without a terminate: their working roots still need it
        requests: list[NodeRequest] = []
        jobs_changed = bool(plan.requeue or plan.fail or plan.assign)
        job_of = {node_id: job for job, node_ids in plan.assign for node_id in node_ids}
        with self.store.session() as session:
            for node_id, target, reason in plan.node_transitions:
                row = session.get(NodeRow, node_id, with_for_update=True)
                check_transition(row.state, target)
                if target == NodeState.REMOVED and NodeState(row.state) in LIVE:
                    vanished.append(node_id)
                    if node_id in failures:
                        reason = f"it did not start: {failures[node_id]}"
                session.add(NodeStateRow(node_id=node_id, from_state=row.state, to_state=target.value,
                                         reason=reason, at=now,
                                         job_name=job_of.get(node_id) if target == NodeState.RUNNING else None))
                row.state, row.updated_at = target.value, now
                if target in (NodeState.IDLE, NodeState.REMOVED):
                    row.job_name = None
                if target == NodeState.IDLE:
                    row.idle_since = now
                wake.add(node_id)
            for job_name, why in plan.requeue:
                wake.update(self._requeue(session, job_name, why, now))
            for job_name, why in plan.fail:
                wake.update(self._fail(session, job_name, why, now))
            for job_name, node_ids in plan.assign:
                self._assign(session, job_name, list(node_ids), now)
                wake.update(node_ids)
            # plan.waiting is not stored: `job show` works the reason out when asked (the queue's
            # positions all change whenever its head starts; writing them would cost a row each).
            for _ in range(plan.launch):
                requests.append(self._new_node(session, loaded, provider_name, now))
            compute = session.get(ComputeRow, name)
            if compute is not None:
                shown = {"target_node_count": plan.target_nodes,
                         "provisioning_errors": self._start_errors(name, failures, compute.spec, now)}
                if any(compute.spec.get(k) != v for k, v in shown.items()):  # no write on a quiet pass
                    compute.spec = {**compute.spec, **shown}
                if (compute.status or {}).get("quota_wait") != quota_wait:
                    compute.status = {**(compute.status or {}), "quota_wait": quota_wait}
                if plan.drained:
                    session.delete(compute)
                    if compute.compute_type == "computeinstance":  # its home goes with it
                        self.paths.remove_instance_home(name)
        if requests:
            self.calls.launch(provider_name, requests)
        if plan.terminate or vanished:
            self.calls.terminate(provider_name, [node_id for node_id, _ in plan.terminate] + vanished, now)
        if wake:
            self.hub.notify(*wake)
        if jobs_changed:
            self.on_jobs_changed()

    def _start_errors(self, name: str, failures: dict[str, str], spec: dict[str, Any],
                      now: datetime) -> list[dict[str, str]] | None:
        """Azure's provisioning_errors: why nodes fail to start, and when the next try is; cleared
        once a node gets ready."""
        if name not in self._failed_starts:
            return None
        if not failures:  # still failing starts; a failure of the pass itself is over
            return [e for e in spec.get("provisioning_errors") or [] if e.get("code") != RECONCILE_ERROR] or None
        node_id, why = sorted(failures.items())[-1]
        wait = max(0.0, (self._retry_at[name] - now).total_seconds())
        return [{"code": "NodeStartFailed", "message": (
            f"{self._failed_starts[name]} node(s) in a row failed to start; the last, {node_id}: {why}; "
            f"trying again in {wait:.0f} s")}]

    def _assign(self, session, job_name: str, node_ids: list[str], now: datetime) -> None:  # noqa: ANN001
        job = session.get(JobRow, job_name, with_for_update=True)
        run = dict(job.run or {})
        attempt = int(run.get("attempts", 0)) + 1
        addrs = []
        for node_id in node_ids:
            node = session.get(NodeRow, node_id, with_for_update=True)
            node.job_name = job_name
            addrs.append(node.address or "127.0.0.1")
        # Placed: the job leaves the queue. Preparing from here on (its nodes get ready for it);
        # the launchers' own reports take it on from there.
        set_status(session, job, JobStatus.PREPARING, now,
                   reason=f"assigned to node{'s' if len(node_ids) > 1 else ''} {', '.join(node_ids)}")
        run.update(attempts=attempt, queue_reason=None, handle={
            "runner": "cluster", "job_name": job_name, "compute": job.target, "attempt": attempt,
            "nodes": node_ids, "node_addrs": addrs,
            # The nodes of the `local` provider share this host, so a port free here is free for rank 0.
            "master_port": free_port(addrs[0]) if addrs[0].startswith("127.") else 29500,
        })
        job.run = run
        job.updated_at = now

    def _requeue(self, session, job_name: str, why: str, now: datetime) -> list[str]:  # noqa: ANN001
        """Put a job whose node was lost back in the queue (its place kept); the nodes it
        still holds drop it on their next heartbeat."""
        job = session.get(JobRow, job_name, with_for_update=True)
        if job is None or is_terminal(job.status):
            return []
        run = dict(job.run or {})
        handle = run.pop("handle", None) or {}
        if job.status == JobStatus.CANCEL_REQUESTED.value:
            set_status(session, job, JobStatus.CANCELED, now, reason=f"canceled; {why}")
            job.error = {"code": "Canceled", "message": f"canceled by the user; {why}"}
        else:
            set_status(session, job, JobStatus.QUEUED, now, reason=f"requeued: {why}")
            run["requeues"] = [*run.get("requeues", []), {"attempt": handle.get("attempt"), "reason": why,
                                                         "at": now.isoformat()}]
            self._archive_attempt(job_name, handle.get("attempt"))
        job.run = run
        return list(handle.get("nodes", []))

    def _fail(self, session, job_name: str, why: str, now: datetime) -> list[str]:  # noqa: ANN001
        job = session.get(JobRow, job_name, with_for_update=True)
        if job is None or is_terminal(job.status):
            return []
        set_status(session, job, JobStatus.FAILED, now, reason=why)
        job.error = {"code": "NodeLost" if (job.run or {}).get("handle") else "CannotRun", "message": why}
        return list(((job.run or {}).get("handle") or {}).get("nodes", []))

    def _archive_attempt(self, job_name: str, attempt: int | None) -> None:
        """Keep a requeued attempt's logs beside the new attempt's, under artifacts/attempt-<k>/."""
        if not attempt:
            return
        artifacts = self.paths.run_dir(job_name) / "artifacts"
        keep = artifacts / f"attempt-{attempt}"
        for name in ("user_logs", "system_logs"):
            if (artifacts / name).is_dir():
                keep.mkdir(parents=True, exist_ok=True)
                shutil.move(str(artifacts / name), str(keep / name))

    def _new_node(self, session, loaded: Loaded, provider: str, now: datetime) -> NodeRequest:  # noqa: ANN001
        low = loaded.config.tier == "low_priority"
        # Azure's node ids look like tvmps_<hex>_d (dedicated) or _p (low priority).
        node_id = f"tvmps_{uuid.uuid4().hex[:24]}_{'p' if low else 'd'}"
        size = loaded.size
        session.add(NodeRow(node_id=node_id, compute=loaded.config.name, provider=provider,
                            state=NodeState.PREPARING.value, address="127.0.0.1", created_at=now, updated_at=now,
                            info={"size": size.name, "family": size.family, "vcpus": size.vcpus, "low_priority": low,
                                  "price_per_hour": effective_price(size.price_per_hour, low)}))
        session.flush()
        session.add(NodeStateRow(node_id=node_id, from_state=None, to_state=NodeState.PREPARING.value,
                                 reason="requested by the autoscaler", at=now))
        settings = loaded.spec.get("cible") or {}
        instance = {}
        if loaded.kind == "computeinstance":
            instance = dict(disk_gb=float(settings.get("os_disk_gb", 120.0)),
                            idle_shutdown_s=idle_time_seconds(loaded.spec.get("idle_time_before_shutdown_minutes"),
                                                              loaded.spec.get("idle_time_before_shutdown")),
                            persistent_dir=str(self.paths.instance_home(loaded.config.name)))
        return NodeRequest(node_id=node_id, compute=loaded.config.name, size=size.name, vcpus=size.vcpus,
                           memory_gb=size.memory_gb, gpus=size.gpus, low_priority=low,
                           overcommit=bool(settings.get("overcommit", False)), **instance)

    def _next_due(self, loaded: Loaded, views: list[NodeView], now: datetime) -> float:
        """Seconds to the next idle scale-down deadline, so it is met to the tick; at most MAX_POLL_S."""
        if not views and not loaded.queued:
            return IDLE_POLL_S
        due = MAX_POLL_S
        idle_time = span(loaded.config.idle_time_before_scale_down)  # clamped, as the planner does
        for v in views:
            if v.state == NodeState.IDLE and v.idle_since is not None:
                due = min(due, max(0.01, (idle_time - (now - v.idle_since)).total_seconds() + 0.005))
        return due


def cluster_config(row: ComputeRow, size: catalog.VmSize, **timeouts: float) -> ClusterConfig:
    """The cluster a compute row is to the scheduler: a cluster as it is; an instance a cluster of
    exactly one node, or none while it is off; a serverless pool the nodes of its one job."""
    spec = row.spec
    common = dict(name=row.name, vcpus_per_node=size.vcpus, memory_gb_per_node=size.memory_gb,
                  deleting=row.provisioning_state == DELETING, **timeouts)
    if row.compute_type == "computeinstance":
        status = row.status or {}
        power = status.get("power", "on")
        stopped = None if power == "on" else (
            f"compute instance {row.name} is {'restarting' if power == 'restart' else 'stopping'}: "
            f"{status.get('power_reason', 'requested')}")
        return ClusterConfig(min_instances=1, max_instances=1, idle_time_before_scale_down=NEVER_S,
                             stopped=stopped, **common)
    if row.compute_type == "serverless" and row.provisioning_state == DELETING:
        common["stopped"] = f"job {spec['job']} ended: the serverless nodes made for it go with it"
    return ClusterConfig(min_instances=spec.get("min_instances", 0), max_instances=spec.get("max_instances", 1),
                         # Not float(): a stored 10**400 would raise there; the planner clamps it.
                         idle_time_before_scale_down=spec.get("idle_time_before_scale_down", 120),
                         tier=spec.get("tier", "dedicated"), **common)
