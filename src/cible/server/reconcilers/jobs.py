"""The job reconciler: load → decide → act → apply, in a background thread.

It launches queued jobs through the target's runner, relays what launchers
report into status transitions, delivers cancels, and notices lost launchers.
Act (spawning, signalling) happens outside any database transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cible.backends.base.contract import JobRunner
from cible.core.clock import Clock
from cible.core.lifecycle.jobs import TERMINAL, JobStatus, can_transition
from cible.core.planning.jobs import decide_job
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.services.jobs import set_status
from cible.server.store.db import Store
from cible.server.store.rows import JobRow

ACTIVE_POLL_S = 0.05  # while a job is live: how soon a launcher's report shows
IDLE_POLL_S = 2.0


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
        """One pass over every live job; True while any job is live."""
        clusters = self.cluster_names()
        live = JobRow.status.notin_([s.value for s in TERMINAL])
        if clusters:  # a job queued on a cluster is the cluster reconciler's until it places it
            live = live & ~((JobRow.status == JobStatus.QUEUED.value) & JobRow.target.in_(clusters))
        with self.store.session() as session:
            rows = session.execute(
                select(JobRow.name, JobRow.status, JobRow.target, JobRow.run).where(live).order_by(JobRow.created_at)
            ).all()
            jobs = [(name, status, target, dict(run or {})) for name, status, target, run in rows]
        local = [run for _, _, target, run in jobs if target in self.runners]
        running = sum(1 for run in local if run.get("handle"))
        waiting = 0
        for name, status, target, run in jobs:
            runner = self.runners.get(target) or (self.cluster_runner if target in clusters else None)
            handle = run.get("handle")
            if runner is None and handle and handle.get("runner") == "cluster":
                runner = self.cluster_runner  # placed on nodes: its reports still count, whatever became of the row
            if runner is None:  # its compute lost the means to run it (deleted, or its backend is gone)
                self._apply(name, steps=[JobStatus.FAILED],
                            error={"code": "ComputeUnavailable", "message": f"compute '{target}' no longer exists"})
                continue
            observation = runner.poll(handle) if handle else None
            decision = decide_job(status, handle is not None, observation)
            if decision.launch and getattr(runner, "places_jobs", False):
                continue  # the cluster reconciler places it and says why it waits
            if decision.launch:
                if running >= self.max_concurrent:  # FIFO: stays Queued until a slot frees
                    waiting += 1
                    reason = (f"position {waiting} in the queue of {target}: waiting for a free slot, "
                              f"{running} of {self.max_concurrent} jobs running")
                    if run.get("queue_reason") != reason:
                        self._apply(name, queue_reason=reason)
                    continue
                handle = runner.submit(name, run["plan"])
                running += 1
                self._apply(name, handle=handle)
            if decision.signal_cancel and handle:
                runner.cancel(handle)
            if decision.steps:
                self._apply(name, steps=decision.steps, error=decision.error, seen_handle=handle)
                if decision.steps[-1] in TERMINAL and runner is self.cluster_runner:
                    self.on_job_ended()
        return bool(jobs)

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
