"""The job reconciler: a background thread that makes a pass over the live jobs, in the shape of
shape.py, one transaction per job so that one job's failure stays that job's (failures.py):

    load     one read: each live job's name, status, target, run and version, parsed (a job that
             does not parse is that job's failure), and how many jobs hold each compute's slots
    observe  runner.poll of each launched job, outside any transaction
    decide   cible.core.planning.jobs.decide_jobs (pure): each job's move, and the FIFO queue of
             the `local` compute's slots with the wait reason of each job that stays queued
    apply    per job that has something to write (status steps, its error, a changed wait
             reason), refused when the job changed since the load: the next pass decides again
    act      after commit: launches, cancels, and waking the cluster reconciler when a cluster
             job ended (its nodes are free)

A launch's handle exists only once its runner started it, so it is recorded after the launch. The
local runner keys launches by job name (a second submit answers the first launch's handle): a
launch whose handle could not be recorded is found again by the next pass, never started twice.
A launch that raised holds no slot: the pass is made again without that job, so the slot goes to
the next job in line at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import JSON, select, type_coerce
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.exc import StaleDataError

from cible.backends.base.contract import EngineUnavailable, JobRunner
from cible.core.clock import Clock
from cible.core.errors import UnreadableRecordError
from cible.core.lifecycle.jobs import TERMINAL, JobStatus, is_terminal
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import ClusterHandle, JobError, LocalHandle, RunHandle, RunRecord, SlurmHandle
from cible.core.planning.jobs import ENGINE, PLACED, SLOTS, JobDecision, LiveJob, RunsOn, decide_jobs
from cible.server.reconcilers.failures import DATABASE_DOWN, Troubles, describe
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.reconcilers.shape import check_unchanged
from cible.server.services.jobs import PARENT_TYPES, set_status
from cible.server.store.columns import read_record
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, job_is_live

ACTIVE_POLL_S = 0.05  # while a job is live on local slots or an engine: how soon a launcher's state shows
# While only jobs on cluster nodes are live: their nodes' reports (and cancels, placements, lost nodes)
# wake the reconciler, so the poll is a safety net, not the way news arrives. Polling those at
# ACTIVE_POLL_S cost the server most of a core under a queue of short jobs.
PLACED_POLL_S = 1.0
IDLE_POLL_S = 2.0
LOCAL = "local"  # the runner of local's slots (an attached Spark's drivers run on it too)
FAIL_AFTER = 3  # failures in a row (1 s, then 2 s apart) before a job whose handling raises is failed
RECONCILE_ERROR = "ReconcileError"
HANDLE = TypeAdapter(RunHandle)  # a runner's handle (plain JSON, as the runners keep it) as the run stores it


@dataclass
class Snapshot:
    jobs: list[LiveJob] = field(default_factory=list)  # FIFO order; a job backing off is left out
    versions: dict[str, int] = field(default_factory=dict)  # each job's row version as loaded
    running: dict[str, int] = field(default_factory=dict)  # compute of slots -> jobs holding one


class JobReconciler(ReconcilerLoop):
    name = "job-reconciler"

    def __init__(self, store: Store, runners: dict[str, JobRunner], clock: Clock, max_concurrent: int,
                 cluster_runner: JobRunner | None = None, cluster_names=lambda: set(),  # noqa: ANN001
                 on_job_ended=lambda: None, on_any_end=lambda ended: None,  # noqa: ANN001
                 engine_runner: JobRunner | None = None, engine_names=lambda: set(),  # noqa: ANN001
                 slot_computes=lambda: set()) -> None:  # noqa: ANN001
        self.store = store
        self.runners = runners  # by target name (local): each a compute of `max_concurrent` slots
        # Jobs on clusters: placed by the cluster reconciler, followed through this runner.
        self.cluster_runner = cluster_runner
        self.cluster_names = cluster_names
        # Jobs on computes whose engine queues them itself (Slurm): submitted at once, no slot counted.
        self.engine_runner = engine_runner
        self.engine_names = engine_names
        # Computes whose jobs run on local's runner, with slots of their own: an attached Spark, whose jobs'
        # drivers run here (its master has the executors).
        self.slot_computes = slot_computes
        self.on_job_ended = on_job_ended  # a cluster job ended: its nodes are free
        self.on_any_end = on_any_end  # jobs ended (the LiveJobs): their sweep or pipeline may go on
        self.clock = clock
        self.max_concurrent = max_concurrent
        super().__init__()
        self.troubles = Troubles(self._log)
        self._polled = True  # set by each pass (see step)

    def _all_runners(self) -> list[JobRunner]:
        return [*self.runners.values(), *([self.engine_runner] if self.engine_runner else [])]

    def start(self) -> None:
        for runner in self._all_runners():
            runner.prepare()
        super().start()

    def stop(self) -> None:
        super().stop()
        for runner in self._all_runners():
            runner.close()

    def step(self) -> float:
        if not self.reconcile_once():
            return IDLE_POLL_S
        return ACTIVE_POLL_S if self._polled else PLACED_POLL_S

    def reconcile_once(self) -> bool:
        """One pass over every live job; True while any job is live (and not backing off)."""
        now = self.clock.now()
        live, launch_failed = self._pass(now)
        while launch_failed:  # the failed launch backs off (left out at `now`): its slot goes to the next job
            _, launch_failed = self._pass(now)
        return live

    def _pass(self, now: datetime) -> tuple[bool, bool]:
        """(any job handled, a launch raised)."""
        snapshot = self._load(now)
        # Whether a live job's news is read only by polling its runner (local slots, engines).
        self._polled = any(job.runs_on != PLACED for job in snapshot.jobs)
        if not snapshot.jobs:
            return False, False
        snapshot = self._observe(snapshot, now)
        decisions = decide_jobs(snapshot.jobs, slots=self.max_concurrent, running=snapshot.running)
        applied = [job for job in snapshot.jobs
                   if self._apply(job, snapshot.versions[job.name], decisions[job.name], now)]
        launch_failed = ended_on_cluster = False
        ended: list[LiveJob] = []
        for job in applied:  # after every job's write committed
            decision = decisions[job.name]
            try:
                self._act(job, decision)
            except DATABASE_DOWN:
                raise
            except EngineUnavailable as error:
                self._engine_unavailable(job.name, error, now, launching=decision.launch)
                continue
            except Exception as error:  # noqa: BLE001
                self._job_failed(job.name, job.run.handle, error, now)
                launch_failed |= decision.launch
                continue
            if not decision.waits:  # a job waiting for a slot keeps its failures: its launch is still to be tried
                self.troubles.succeeded(job.name)
            ended_on_cluster |= decision.ends and job.runs_on == PLACED
            if decision.ends:
                ended.append(job)
        if ended_on_cluster:
            self.on_job_ended()
        if ended:
            self.on_any_end(ended)
        return True, launch_failed

    # -- load and observe ----------------------------------------------------------------------
    def _load(self, now: datetime) -> Snapshot:
        clusters = self.cluster_names()
        engines = self.engine_names() if self.engine_runner is not None else set()
        slotted = self.slot_computes()
        # Sweeps and pipelines run as their child jobs: the orchestrator's.
        live = job_is_live() & JobRow.job_type.notin_(PARENT_TYPES)
        if clusters:  # a job queued on a cluster is the cluster reconciler's until it places it
            live = live & ~((JobRow.status == JobStatus.QUEUED.value) & JobRow.target.in_(clusters))
        with self.store.session() as session:
            # The run as plain JSON, parsed here job by job: one that does not parse is that job's failure.
            rows = session.execute(
                select(JobRow.name, JobRow.status, JobRow.target, type_coerce(JobRow.run, JSON), JobRow.version,
                       JobRow.job_type, JobRow.parent_job_name)
                .where(live).order_by(JobRow.created_at, JobRow.name)).all()
        snapshot = Snapshot()
        if any(target not in clusters and target not in slotted and target not in self.runners
               for _, _, target, *_ in rows):
            # Computes made since they were read (a serverless job's pool is made with its job): read again, so
            # that a job read here is never taken for one whose compute is gone.
            clusters, slotted = self.cluster_names(), self.slot_computes()
        for name, status, target, run, version, job_type, parent in rows:
            if status == JobStatus.QUEUED.value and target in clusters:
                continue  # the cluster reconciler's until it places it (its compute was made since the query)
            backing_off = self.troubles.backing_off(name, now)
            try:
                record = read_record(RunRecord, run or {}, "jobs.run")
                job = LiveJob(name=name, status=JobStatus(status), target=target, run=record,
                              runs_on=self._runs_on(target, record, clusters, engines, slotted), job_type=job_type,
                              parent=parent)
            except (ValueError, UnreadableRecordError) as error:  # a status no table knows, a run that does not read
                if not backing_off:
                    self._job_failed(name, None, error, now)
                continue
            if job.runs_on == SLOTS and job.run.launched:  # it holds a slot, backing off or not
                snapshot.running[target] = snapshot.running.get(target, 0) + 1
            if not backing_off:
                snapshot.jobs.append(job)
                snapshot.versions[name] = version
        return snapshot

    def _runs_on(self, target: str, run: RunRecord, clusters: set[str], engines: set[str],
                 slotted: set[str]) -> RunsOn | None:
        if target in self.runners or target in slotted or isinstance(run.handle, LocalHandle):
            return SLOTS
        if self.engine_runner is not None and (target in engines or isinstance(run.handle, SlurmHandle)):
            return ENGINE  # its engine's reports count, whatever became of its compute
        if self.cluster_runner is not None and (target in clusters or isinstance(run.handle, ClusterHandle)):
            return PLACED  # placed on nodes: its reports still count, whatever became of its compute
        return None  # its compute lost the means to run it (deleted, or its backend is gone)

    def _runner(self, job: LiveJob) -> JobRunner:
        if job.runs_on == ENGINE:
            return self.engine_runner
        if job.runs_on == SLOTS:
            return self.runners.get(job.target) or self.runners[LOCAL]
        return self.cluster_runner

    def _observe(self, snapshot: Snapshot, now: datetime) -> Snapshot:
        """What each launched job's runner sees of it; a job whose poll raises is left out of this pass."""
        jobs = []
        for job in snapshot.jobs:
            if job.run.handle is not None and job.runs_on is not None:
                try:
                    job = replace(job, observation=readable(self._runner(job).poll(as_json(job.run.handle))))
                except EngineUnavailable as error:
                    self._engine_unavailable(job.name, error, now, launching=False)
                    continue
                except Exception as error:  # noqa: BLE001
                    self._job_failed(job.name, job.run.handle, error, now)
                    continue
            jobs.append(job)
        return replace(snapshot, jobs=jobs)

    # -- apply and act -------------------------------------------------------------------------
    def _apply(self, job: LiveJob, version: int, decision: JobDecision, now: datetime) -> bool:
        """Write what `decision` changes of the job; False when the job changed since the load (its
        decision is dropped: the next pass decides again) or the write raised (the job's failure)."""
        if not decision.steps and decision.queue_reason is None:
            return True
        try:
            with self.store.session() as session:
                self._write(session, job.name, version, decision, now)
        except StaleDataError as error:
            self._log.debug("job %r: %s; decided again next pass", job.name, error)
            return False
        except DATABASE_DOWN:
            raise
        except Exception as error:  # noqa: BLE001
            self._job_failed(job.name, job.run.handle, error, now)
            return False
        return True

    @staticmethod
    def _write(session: Session, name: str, version: int, decision: JobDecision, now: datetime) -> None:
        row = session.get(JobRow, name)
        check_unchanged(row, version, f"job {name!r}")
        if decision.queue_reason is not None:
            row.run = row.run.model_copy(update={"queue_reason": decision.queue_reason or None})
        why_it_ended = decision.error.message if decision.error else None
        for step in decision.steps:
            set_status(session, row, step, now, reason=why_it_ended if step in TERMINAL else "reported by the launcher")
        # Why a canceled job was canceled, when its canceler said (a sweep's early termination policy),
        # says more than its launcher's "canceled".
        kept = row.error is not None and row.status == JobStatus.CANCELED.value
        if decision.ends and decision.error is not None and not kept:
            row.error = decision.error
        elif row.status == JobStatus.COMPLETED.value:  # it finished before a cancel (and its reason) landed
            row.error = None

    def _act(self, job: LiveJob, decision: JobDecision) -> None:
        if decision.launch:
            runner = self._runner(job)
            raw = runner.submit(job.name, job.run.plan)
            try:
                handle = HANDLE.validate_python(raw)
            except ValueError:  # a handle the record cannot keep: stop the launcher it names, then fail
                runner.cancel(raw)
                raise
            if not self._record_launch(job.name, handle):
                runner.cancel(as_json(handle))  # it ended while being launched: its launcher is told to stop
            elif callable(recorded := getattr(runner, "on_launch_recorded", None)):
                recorded(as_json(handle))  # a runner that acts once the handle is kept (Slurm's warm allocations)
        elif decision.signal_cancel and job.run.handle is not None:
            self._runner(job).cancel(as_json(job.run.handle))

    def _record_launch(self, name: str, handle: RunHandle) -> bool:
        """Keep the handle of the job's launch; False when the job ended meanwhile. Written whatever
        else changed the job since the load (a cancel asked in between is delivered next pass)."""
        def write(session: Session) -> bool:
            row = session.get(JobRow, name)
            if row is None or is_terminal(row.status):
                return False
            row.run = row.run.model_copy(update={"handle": handle, "queue_reason": None})
            return True
        return self.store.transact(write)

    # -- a job whose handling raised -------------------------------------------------------------
    def _engine_unavailable(self, name: str, error: EngineUnavailable, now: datetime, *, launching: bool) -> None:
        """Its engine cannot be reached now: tried again later (backing off, up to a minute apart),
        never failed for it. A job waiting to be submitted says why in its queue reason."""
        self.troubles.failed(name, error, now, what=f"job {name!r}")
        if not launching:
            return

        def note(session: Session) -> None:
            row = session.get(JobRow, name)
            if row is not None and not is_terminal(row.status) and row.run.handle is None:
                row.run = row.run.model_copy(update={"queue_reason": str(error)})
        try:
            self.store.transact(note)
        except DATABASE_DOWN:
            raise
        except Exception as again:  # noqa: BLE001  (the reason is informative: the next try writes it again)
            self._log.warning("job %r: its queue reason could not be written: %s", name, describe(again))

    def _job_failed(self, name: str, handle: RunHandle | None, error: Exception, now: datetime) -> None:
        """Handling job `name` raised: back off; after FAIL_AFTER failures in a row, fail the job
        with the reason (a launch that cannot work, a run that cannot be followed) and tell its
        launcher (`handle`, when it has one) to stop."""
        trouble = self.troubles.failed(name, error, now, what=f"job {name!r}")
        if trouble.count < FAIL_AFTER:
            return
        message = f"the server could not handle this job ({trouble.count} tries): {trouble.message}"

        def fail(session: Session) -> None:
            # Its run and error are not loaded: a run this release cannot read (a newer cible's, or
            # damaged) is what may have failed it, and must not keep it from being failed.
            row = session.get(JobRow, name, options=[defer(JobRow.run), defer(JobRow.error)])
            if row is None or is_terminal(row.status):
                return
            failure = JobError(code=RECONCILE_ERROR, message=message)
            stored = session.scalar(select(type_coerce(JobRow.run, JSON)).where(JobRow.name == name))
            try:
                read_record(RunRecord, stored or {}, "jobs.run")
            except UnreadableRecordError as unreadable:
                # Replaced by an empty run so that the job reads again (show, list, delete); the
                # document is kept in the error, for the user (or a newer cible's reader) to see.
                row.run = RunRecord()
                failure = JobError(code=RECONCILE_ERROR, message=f"{message} (its stored run is kept in the "
                                   "error's details)", details={**unreadable.details, "unreadable_run": stored})
            set_status(session, row, JobStatus.FAILED, now, reason=message)
            row.error = failure
        try:
            self.store.transact(fail)
        except DATABASE_DOWN:
            raise
        except Exception as again:  # noqa: BLE001  (kept backing off, up to a minute between tries)
            self._log.warning("job %r: its failure could not be recorded: %s", name, describe(again))
            return
        self.troubles.succeeded(name)  # it is Failed now: out of the live set
        if handle is None:
            return
        cluster = isinstance(handle, ClusterHandle)
        try:  # best effort: a launcher that may still run is told to stop
            runner = (self.cluster_runner if cluster else self.engine_runner if isinstance(handle, SlurmHandle)
                      else self.runners.get(handle.runner))
            if runner is not None:
                runner.cancel(as_json(handle))
        except Exception as again:  # noqa: BLE001
            self._log.warning("job %r: its launcher could not be told to stop: %s", name, describe(again))
        if cluster:
            self.on_job_ended()  # its nodes are free


def readable(observation: RunObservation) -> RunObservation:
    """`observation`, checked as decide reads it: a status no table knows, or an error that is not
    Azure's {code, message}, raises here, the job's failure, rather than in decide, the pass's."""
    for status in observation.history:
        JobStatus(status)
    if observation.error is not None:
        JobError.model_validate(observation.error)
    return observation


def as_json(handle: RunHandle) -> dict[str, Any]:
    """A run's handle as its runner takes it (the runners keep plain JSON handles)."""
    return handle.model_dump(mode="json")
