"""The cluster reconciler: one pass over every compute with nodes (clusters, compute instances,
serverless pools), each compute's pass in the one reconciler shape (see cluster_pass.py).

A pass reads what is shared once: the providers' listings, errors and room, and the workspace's
quota headroom. It then runs each compute's pass; the headroom grows by the nodes each applied
plan launched, so the next compute's decide sees them (quotas are workspace-wide). A compute
instance's own pass (idle shutdown, schedules: its power) runs first, in its own transaction,
and the compute's pass reads the power it left.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from cible.backends.base.contract import NodeProvider, ProviderNode
from cible.core.clock import Clock
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.records import ProvisioningError
from cible.core.planning.clusters import RECONCILE_ERROR
from cible.core.planning.compute_plan import compute_config
from cible.core.planning.durations import span
from cible.server.clusters.cluster_pass import ClusterPass, Loaded, PassTools, PassWorld
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.provider_calls import ProviderCalls
from cible.server.reconcilers.failures import DATABASE_DOWN, Troubles, describe
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.reconcilers.shape import run_pass
from cible.server.services.compute_spec import attached_spark_names, instance_spec, provider_name
from cible.server.services.computes import NODE_COMPUTE_TYPES
from cible.server.services.instance_state import instance_pass, record_pass_failure
from cible.server.services.quotas import QuotaService
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, NodeRow
from cible.workspace import WorkspacePaths

log = logging.getLogger("cible.reconciler.clusters")
IDLE_POLL_S = 2.0
MAX_POLL_S = 1.0  # while a cluster has nodes: heartbeat and preparing timeouts are seen within this


class ClusterReconciler(ReconcilerLoop):
    name = "cluster-reconciler"

    def __init__(self, store: Store, paths: WorkspacePaths, providers: dict[str, NodeProvider], hub: AgentHub,
                 clock: Clock, *, heartbeat_timeout_s: float, prepare_timeout_s: float,
                 quotas: QuotaService | None = None, on_jobs_changed: Callable[[], None] = lambda: None,
                 seed: int | None = None) -> None:
        self.store = store
        self.quotas = quotas or QuotaService(store, clock)
        self.providers = providers
        self.clock = clock
        self.on_jobs_changed = on_jobs_changed  # the server sets it once the job reconciler exists
        self._last_pass: datetime | None = None
        # Records whose handling raised (computes, instance passes, providers): each backs off alone.
        self._troubles = Troubles(log)
        self.calls = ProviderCalls(providers, self._troubles, log)
        # Heartbeats recorded before this server started count from its start: agents
        # get a full timeout to find a restarted server before they are written off.
        self.tools = PassTools(paths=paths, calls=self.calls, hub=hub, rng=random.Random(seed),
                               started_at=clock.now(), heartbeat_timeout_s=heartbeat_timeout_s,
                               prepare_timeout_s=prepare_timeout_s, on_jobs_changed=lambda: self.on_jobs_changed())
        super().__init__()

    def step(self) -> float:
        return self.reconcile_once()

    def reconcile_once(self) -> float:
        """One pass over every compute with nodes; returns how soon the next pass is due."""
        now = self.clock.now()
        elapsed = (now - self._last_pass).total_seconds() if self._last_pass else 0.0
        self._last_pass = now
        with self.store.session() as session:
            not_ours = attached_spark_names(session)  # an attached Spark: no nodes of cible's
            computes = [(name, kind) for name, kind in session.execute(select(ComputeRow.name, ComputeRow.compute_type)
                        .where(ComputeRow.compute_type.in_(NODE_COMPUTE_TYPES))) if name not in not_ours]
        if not computes:
            return IDLE_POLL_S
        listing = self.calls.listings(now)  # None: cannot tell yet
        world = PassWorld(listing=listing, errors=self.calls.errors(now), engine_waits=self.calls.engine_waits(now),
                          quota=self.quotas.snapshot(), elapsed_s=elapsed)
        self.calls.retry_terminations(now)
        delay = IDLE_POLL_S
        for name, kind in computes:
            if self._troubles.backing_off(name, now):
                continue
            try:  # one compute's failure is that compute's: the others go on (see failures.py)
                if kind == "computeinstance":
                    self._instance_pass(name, listing, now)
                delay = min(delay, self._compute_pass(name, world, now))
                self._troubles.succeeded(name)
            except DATABASE_DOWN:
                raise
            except Exception as error:  # noqa: BLE001
                self._cluster_failed(name, error, now)
        return delay

    def _compute_pass(self, name: str, world: PassWorld, now: datetime) -> float:
        """One compute's pass; returns how soon its next is due."""
        result = run_pass(self.store, ClusterPass(name, world, self.tools), now,
                          on_collision=lambda error: log.info("compute %r: %s; decided again next pass", name, error))
        if result.snapshot is None:
            return IDLE_POLL_S
        if result.collided or result.plan.hold:  # decide again soon / its engine not seen yet
            return MAX_POLL_S
        actions = result.actions
        if actions.launch and actions.node_use is not None:  # they hold quota from now on
            world.quota = world.quota.with_nodes(actions.node_use, len(actions.launch))
        return _next_due(result.snapshot, now)

    def _instance_pass(self, name: str, listing: dict[str, dict[str, ProviderNode] | None], now: datetime) -> None:
        """The instance's own decisions (idle shutdown, schedules: its power), before its compute's
        pass reads the power. Should they raise, nothing of them is kept, the failure is an event
        of the instance (and logged once), and its node is still kept by its power."""
        key = ("instance", name)
        if self._troubles.backing_off(key, now):
            return
        try:
            with self.store.session() as session:
                row = session.get(ComputeRow, name)
                listed = listing.get(provider_name(instance_spec(row))) if row is not None else None
                if listed is None:  # gone, or its engine not seen yet
                    return
                node = session.scalars(select(NodeRow).where(
                    NodeRow.compute == name, NodeRow.state.in_([s.value for s in LIVE]))).first()
                instance_pass(row, node, listed.get(node.node_id) if node else None, now, session=session)
        except DATABASE_DOWN:
            raise
        except Exception as error:  # noqa: BLE001
            trouble = self._troubles.failed(key, error, now, what=f"compute instance {name!r}'s pass")
            with self.store.session() as session:
                row = session.get(ComputeRow, name)
                if row is not None:
                    record_pass_failure(row, f"idle shutdown and schedules are not applied: {trouble.message}", now)
        else:
            self._troubles.succeeded(key)

    def _cluster_failed(self, name: str, error: Exception, now: datetime) -> None:
        """Its pass raised: back off, and say why in the compute's provisioning_errors (`compute show`,
        and the queue reason of its jobs). The next pass that goes through clears it."""
        trouble = self._troubles.failed(name, error, now, what=f"compute {name!r}")
        message = (f"the server could not manage this compute ({trouble.count} tries in a row, next in "
                   f"{trouble.wait_s(now):.0f} s): {trouble.message}")
        try:
            with self.store.session() as session:
                row = session.get(ComputeRow, name)
                errors = [ProvisioningError(code=RECONCILE_ERROR, message=message)]
                if row is not None and row.observed.provisioning_errors != errors:
                    row.observed = row.observed.model_copy(update={"provisioning_errors": errors})
        except DATABASE_DOWN:
            raise
        except (Exception, StaleDataError) as again:  # noqa: BLE001
            log.warning("compute %r: its failure could not be recorded: %s", name, describe(again))


def _next_due(loaded: Loaded, now: datetime) -> float:
    """Seconds to the next idle scale-down deadline, so it is met to the tick; at most MAX_POLL_S."""
    snapshot = loaded.snapshot
    if not snapshot.nodes and not snapshot.queued:
        return IDLE_POLL_S
    due = MAX_POLL_S
    idle_time = span(compute_config(snapshot).idle_time_before_scale_down)  # clamped, as the planner does
    for v in snapshot.nodes:
        if v.state == NodeState.IDLE and v.idle_since is not None:
            due = min(due, max(0.01, (idle_time - (now - v.idle_since)).total_seconds() + 0.005))
    return due
