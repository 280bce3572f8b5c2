"""The job reconciler: load → decide → act → apply, in a background thread.

It launches queued jobs through the target's runner, relays what launchers
report into status transitions, delivers cancels, and notices lost launchers.
Act (spawning, signalling) happens outside any database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cible.backends.base.contract import JobRunner
from cible.core.clock import Clock
from cible.core.lifecycle.jobs import TERMINAL, JobStatus, can_transition
from cible.core.planning.jobs import decide_job
from cible.server.reconcilers.failures import DATABASE_DOWN, Troubles, describe
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.services.jobs import set_status
from cible.server.store.db import Store
from cible.server.store.rows import JobRow

ACTIVE_POLL_S = 0.05  # while a job is live: how soon a launcher's report shows
IDLE_POLL_S = 2.0
FAIL_AFTER = 3  # failures in a row (1 s, then 2 s apart) before a job whose handling raises is failed
RECONCILE_ERROR = "ReconcileError"


@dataclass
class _Slots:
    """The `local` concurrency limit as one pass uses it up."""

    limit: int
    running: int
    waiting: int = 0


class JobReconciler(ReconcilerLoop):
    name = "job-reconciler"

    def __init__(self, store: Store, runners: dict[str, JobRunner], clock: Clock, max_concurrent: int,
                 cluster_runner: JobRunner | None = None, cluster_names=lambda: set(),  # noqa: ANN001
                 on_job_ended=lambda: None) -> None:  # noqa: ANN001
        self.store = store
        self.runners = runners  # by target name (local)
        # Jobs on clusters: placed by the cluster reconciler, followed through this runner.
        self.cluster_runner = cluster_runner
        self.cluster_names = cluster_names
        self.on_job_ended = on_job_ended  # a cluster job ended: its nodes are free
        self.clock = clock
        self.max_concurrent = max_concurrent
        super().__init__()
        self.troubles = Troubles(self._log)

    def start(self) -> None:
        for runner in self.runners.values():
            runner.prepare()
        super().start()

    def stop(self) -> None:
        super().stop()
        for runner in self.runners.values():
            runner.close()

    def step(self) -> float:
        return ACTIVE_POLL_S if self.reconcile_once() else IDLE_POLL_S

    def reconcile_once(self) -> bool:
        """One pass over every live job; True while any job is live (and not backing off)."""
        clusters = self.cluster_names()
        live = JobRow.status.notin_([s.value for s in TERMINAL])
        if clusters:  # a job queued on a cluster is the cluster reconciler's until it places it
            live = live & ~((JobRow.status == JobStatus.QUEUED.value) & JobRow.target.in_(clusters))
        with self.store.session() as session:
            jobs = session.execute(
                select(JobRow.name, JobRow.status, JobRow.target, JobRow.run).where(live).order_by(JobRow.created_at)
            ).all()
        slots = _Slots(limit=self.max_concurrent, running=sum(
            1 for _, _, target, run in jobs if target in self.runners and isinstance(run, dict) and run.get("handle")))
        now = self.clock.now()
        handled = False
        for name, status, target, run in jobs:
            if self.troubles.backing_off(name, now):
                continue
            handled = True
            try:  # one job's failure is that job's: the others go on (see failures.py)
                if self._reconcile_job(name, status, target, dict(run or {}), clusters, slots):
                    self.troubles.succeeded(name)
            except DATABASE_DOWN:
                raise
            except Exception as error:  # noqa: BLE001
                self._job_failed(name, run if isinstance(run, dict) else {}, error, now)
        return handled

    def _reconcile_job(self, name: str, status: str, target: str, run: dict[str, Any], clusters: set[str],
                       slots: _Slots) -> bool:
        """Handle one job; False when it only waits (for a slot, or the cluster reconciler)."""
        runner = self.runners.get(target) or (self.cluster_runner if target in clusters else None)
        handle = run.get("handle")
        if runner is None and handle and handle.get("runner") == "cluster":
            runner = self.cluster_runner  # placed on nodes: its reports still count, whatever became of the row
        if runner is None:  # its compute lost the means to run it (deleted, or its backend is gone)
            self._apply(name, steps=[JobStatus.FAILED],
                        error={"code": "ComputeUnavailable", "message": f"compute '{target}' no longer exists"})
            return True
        observation = runner.poll(handle) if handle else None
        decision = decide_job(status, handle is not None, observation)
        if decision.launch and getattr(runner, "places_jobs", False):
            return False  # the cluster reconciler places it and says why it waits
        if decision.launch:
            if slots.running >= slots.limit:  # FIFO: stays Queued until a slot frees
                slots.waiting += 1
                reason = (f"position {slots.waiting} in the queue of {target}: waiting for a free slot, "
                          f"{slots.running} of {slots.limit} jobs running")
                if run.get("queue_reason") != reason:
                    self._apply(name, queue_reason=reason)
                return False  # a launch that failed before is still to be tried: its failures still count
            handle = runner.submit(name, run["plan"])
            slots.running += 1
            self._apply(name, handle=handle)
        if decision.signal_cancel and handle:
            runner.cancel(handle)
        if decision.steps:
            self._apply(name, steps=decision.steps, error=decision.error, seen_handle=handle)
            if decision.steps[-1] in TERMINAL and runner is self.cluster_runner:
                self.on_job_ended()
        return True

    def _job_failed(self, name: str, run: dict[str, Any], error: Exception, now: datetime) -> None:
        """Handling this job raised: back off; after FAIL_AFTER failures in a row, fail the job
        with the reason (a launch that cannot work, a run that cannot be followed)."""
        trouble = self.troubles.failed(name, error, now, what=f"job {name!r}")
        if trouble.count < FAIL_AFTER:
            return
        try:
            self._apply(name, steps=[JobStatus.FAILED], error={"code": RECONCILE_ERROR, "message": (
                f"the server could not handle this job ({trouble.count} tries): {trouble.message}")})
        except DATABASE_DOWN:
            raise
        except Exception as again:  # noqa: BLE001  (kept backing off, up to a minute between tries)
            self._log.warning("job %r: its failure could not be recorded: %s", name, describe(again))
            return
        self.troubles.succeeded(name)  # it is Failed now: out of the live set
        handle = run.get("handle")
        if not isinstance(handle, dict):
            return
        cluster = handle.get("runner") == "cluster"
        try:  # best effort: a launcher that may still run is told to stop
            runner = self.cluster_runner if cluster else self.runners.get(handle.get("runner"))
            if runner is not None:
                runner.cancel(handle)
        except Exception as again:  # noqa: BLE001
            self._log.warning("job %r: its launcher could not be told to stop: %s", name, describe(again))
        if cluster:
            self.on_job_ended()  # its nodes are free

    def _apply(self, name: str, *, handle: dict[str, Any] | None = None, queue_reason: str | None = None,
               steps: list[JobStatus] = (), error: dict[str, Any] | None = None,
               seen_handle: dict[str, Any] | None = None) -> None:
        now = self.clock.now()
        with self.store.session() as session:
            row = session.get(JobRow, name, with_for_update=True)
            if row is None:
                return
            if seen_handle is not None and (row.run or {}).get("handle") != seen_handle:
                return  # decided on a run that was requeued since: its reports no longer count
            if handle is not None:
                row.run = {**(row.run or {}), "handle": handle, "queue_reason": None}
            if queue_reason is not None:
                row.run = {**(row.run or {}), "queue_reason": queue_reason}
            for step in steps:
                # Decided on an older read: a cancel may have moved the job since.
                if row.status == step.value or not can_transition(row.status, step):
                    continue
                reason = (error or {}).get("message") if step in TERMINAL else "reported by the launcher"
                set_status(session, row, step, now, reason=reason)
            if error and steps and steps[-1] in TERMINAL:
                row.error = error
