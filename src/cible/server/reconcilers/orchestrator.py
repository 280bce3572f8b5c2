"""The orchestrator: sweeps, pipelines and AutoML jobs, whose work is child jobs that the other
reconcilers run.

One pass per live parent, in the shape of shape.py, so that one parent's failure stays its own:

    load     the parent (spec, status, record, version) and its children (the source of truth: each
             child row names its parent and its trial index or step)
    observe  a sweep's trials' primary metric, as logged to their MLflow runs; an AutoML job's ended
             searches' result.json (read once, kept in its record)
    decide   cible.core.planning.sweeps.decide_sweep / pipelines.decide_pipeline /
             automl.decide_automl (pure)
    apply    the parent's status, record (best trial, early terminations, reused and skipped
             steps) and outputs, guarded by its version; a step whose result an earlier run already
             has (same reuse key) is recorded as Reused here instead of being started
    act      after commit: submit the new trials and steps (through the job service: every check of
             a submit) and cancel children

A child whose submit is refused (a 4xx: its spec cannot run) fails its parent with that error. A
parent whose pass keeps raising is failed after FAIL_AFTER tries, and its live children canceled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core.clock import Clock, as_utc
from cible.core.errors import CibleError, ConflictError, TrackingUnavailableError
from cible.core.lifecycle.jobs import TERMINAL, JobStatus, is_terminal, path_to
from cible.core.models.records import ChildrenRecord, JobError
from cible.core.planning.early_termination import PREFIX as EARLY_TERMINATION  # how a policy's cancel reads
from cible.core.specs.azureml import refs
from cible.core.specs.azureml.loader import load_spec_dict
from cible.server.reconcilers.failures import DATABASE_DOWN, Troubles
from cible.server.reconcilers.loop import ReconcilerLoop
from cible.server.reconcilers.shape import check_unchanged, run_pass
from cible.server.services.jobs import CHILD_KIND, PARENT_TYPES, JobService, Lineage, set_status
from cible.server.services.parent_jobs import REUSED, SKIPPED, child_name
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, job_is_live

ACTIVE_POLL_S = 0.5  # while a parent is live (a child's end wakes the orchestrator sooner)
IDLE_POLL_S = 5.0
FAIL_AFTER = 3
RUNNING = {s.value for s in JobStatus} - {s.value for s in TERMINAL} - {"NotStarted", "Queued"}
# (job, experiment, metric) -> the values as logged; None: the job has no MLflow run yet
MetricHistory = Callable[[str, str, str], "list[float] | None"]
# (job, primary metric) -> an ended AutoML search's result (automl_jobs.read_result); None: it wrote none
ResultReader = Callable[[str, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Child:
    name: str
    step: str | None
    job_type: str
    status: str
    error: dict[str, Any] | None
    params: dict[str, Any]
    outputs: dict[str, Any]  # its plan's named outputs (a sweep's or pipeline's: those it exposes)


@dataclass
class Snapshot:
    name: str
    job_type: str
    status: str
    spec: dict[str, Any]
    record: ChildrenRecord
    version: int
    started_at: datetime
    created_by: str | None
    experiment_name: str
    children: list[Child]
    metrics: dict[str, list[float]] = field(default_factory=dict)  # a sweep's trials' histories
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # an AutoML job's searches' results


@dataclass
class Plan:
    moves: list[JobStatus] = field(default_factory=list)  # the parent's status moves
    error: JobError | None = None
    record: ChildrenRecord | None = None  # None: unchanged
    outputs: dict[str, str] | None = None  # on Completed: output -> azureml://jobs/<job>/outputs/<o>
    launch: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)  # (step, spec, reuse key)
    cancel: dict[str, str] = field(default_factory=dict)  # child -> why


@dataclass
class Actions:
    submit: list[tuple[str, str, dict[str, Any], str | None]] = field(default_factory=list)  # child, step, spec, key
    cancel: dict[str, str] = field(default_factory=dict)
    terminated: set[str] = field(default_factory=set)  # cancels that are a policy's early termination


class ParentPass:
    """One pass over one sweep, pipeline or AutoML job (shape.Pass)."""

    def __init__(self, name: str, metric_history: MetricHistory, jobs: JobService,
                 fail: Callable[[str, str, str], None], final: Collection[str] = (),
                 read_result: ResultReader | None = None) -> None:
        self.name = name
        self.metric_history = metric_history
        self.read_result = read_result or (lambda job, metric: None)
        self.jobs = jobs
        self.fail = fail  # fail(parent, message, code): end the parent Failed, cancel its children
        # Trials whose stored metrics were read after they ended (and committed): read no more. A
        # history read while a trial ran lacks what it logged last; after a restart: read once again.
        self.final = final
        self.read_ended: set[str] = set()  # trials this pass read after they ended
        self.snapshot: Snapshot | None = None

    def load(self, session: Session, now: datetime) -> Snapshot | None:
        row = session.get(JobRow, self.name)
        if row is None or is_terminal(row.status) or row.job_type not in PARENT_TYPES:
            return None
        children = [Child(name=c.name, step=c.parent_step, job_type=c.job_type, status=c.status,
                          error=c.error.model_dump(mode="json") if c.error else None,
                          params=(c.spec.get("properties") or {}).get("hyperparameters", {}),
                          outputs=c.run.plan.get("outputs", {}))
                    for c in session.scalars(select(JobRow).where(JobRow.parent_job_name == self.name))]
        self.snapshot = Snapshot(
            name=row.name, job_type=row.job_type, status=row.status, spec=row.spec,
            record=row.children or ChildrenRecord(), version=row.version,
            started_at=as_utc(row.started_at or row.created_at), created_by=row.created_by,
            experiment_name=row.experiment_name, children=children)
        return self.snapshot

    def observe(self, snapshot: Snapshot, now: datetime) -> Snapshot:
        if snapshot.job_type == "automl":
            return self._observe_automl(snapshot)
        if snapshot.job_type != "sweep":
            return snapshot
        metric = snapshot.spec["objective"]["primary_metric"]
        canceling = snapshot.status == JobStatus.CANCEL_REQUESTED.value
        for child in snapshot.children:
            cached = snapshot.record.metrics.get(child.name)
            if cached is not None and is_terminal(child.status) and child.name in self.final:
                snapshot.metrics[child.name] = cached  # an ended trial logs nothing more
            elif child.status in RUNNING or is_terminal(child.status):
                try:
                    history = self.metric_history(child.name, snapshot.experiment_name, metric)
                except TrackingUnavailableError:
                    if not canceling:
                        raise  # the next pass asks again
                    snapshot.metrics[child.name] = list(cached or [])  # a cancel does not wait for MLflow
                    continue
                # NaN and infinities compare as no value does, and JSON (the record, `job show`) has none.
                snapshot.metrics[child.name] = [v for v in history or [] if math.isfinite(v)]
                if is_terminal(child.status):
                    self.read_ended.add(child.name)
        return snapshot

    def _observe_automl(self, snapshot: Snapshot) -> Snapshot:
        """An ended search's result, read once: a Completed one that wrote none is recorded as an error."""
        metric = snapshot.spec.get("primary_metric") or ""
        for child in snapshot.children:
            if not is_terminal(child.status) or child.name in snapshot.record.results:
                continue
            result = self.read_result(child.name, metric)
            if result is None and child.status == JobStatus.COMPLETED.value:
                result = {"error": "its search ended without writing result.json"}
            snapshot.results[child.name] = result or {}
        return snapshot

    def decide(self, snapshot: Snapshot, now: datetime) -> Plan:
        cancel_requested = snapshot.status == JobStatus.CANCEL_REQUESTED.value
        if snapshot.job_type == "sweep":
            return self._decide_sweep(snapshot, now, cancel_requested)
        if snapshot.job_type == "automl":
            return self._decide_automl(snapshot, now, cancel_requested)
        return self._decide_pipeline(snapshot, cancel_requested)

    def _decide_automl(self, snapshot: Snapshot, now: datetime, cancel_requested: bool) -> Plan:
        from cible.core.planning.automl import ChildView, decide_automl, search_plans, trial_job_spec

        job = load_spec_dict(snapshot.spec, "job", source=f"job {snapshot.name}").entity
        record = snapshot.record
        results = {**record.results, **snapshot.results}
        plans = search_plans(job).plans
        children = [ChildView(index=int(c.step), name=c.name, status=c.status, result=results.get(c.name),
                              error=(c.error or {}).get("message") or results.get(c.name, {}).get("error"))
                    for c in snapshot.children if (c.step or "").isdigit()]
        decision = decide_automl(job, children, groups=len(plans), elapsed_s=(now - snapshot.started_at).total_seconds(),
                                 cancel_requested=cancel_requested)
        plan = Plan(cancel=dict(decision.cancel))
        for index in decision.launch:
            plan.launch.append((str(index), trial_job_spec(job, plans[index], index=index, code=record.trial_code,
                                                           environment=record.trial_environment), None))
        updated = record.model_copy(update={"results": results, "best_trial": decision.best_child})
        plan.record = updated if updated != record else None
        self._end(plan, snapshot, decision.end, decision.error)
        if decision.end == "Completed" and decision.best_child:
            plan.outputs = {"best_model": f"azureml://jobs/{decision.best_child}/outputs/best_model"}
        return plan

    def _decide_sweep(self, snapshot: Snapshot, now: datetime, cancel_requested: bool) -> Plan:
        from cible.core.planning.sweeps import TrialView, decide_sweep, trial_job_spec

        sweep = load_spec_dict(snapshot.spec, "job", source=f"job {snapshot.name}").entity
        trials = sorted((TrialView(index=int(c.step), name=c.name, status=c.status, params=c.params,
                                   metric_history=tuple(snapshot.metrics.get(c.name, ())),
                                   error=(c.error or {}).get("message"))
                         for c in snapshot.children if (c.step or "").isdigit()), key=lambda t: t.index)
        decision = decide_sweep(sweep, trials, seed_key=snapshot.name, cancel_requested=cancel_requested,
                                elapsed_s=(now - snapshot.started_at).total_seconds())
        plan = Plan(cancel=dict(decision.cancel))
        first = max((t.index for t in trials), default=-1) + 1
        for offset, params in enumerate(decision.new_trials):
            spec = trial_job_spec(sweep, params, index=first + offset)
            spec["properties"] = {**(spec.get("properties") or {}), "hyperparameters": params}
            plan.launch.append((str(first + offset), spec, None))
        terminated = {**snapshot.record.terminated,
                      **{t: why for t, why in decision.cancel.items() if why.startswith(EARLY_TERMINATION)}}
        record = snapshot.record.model_copy(update={
            "best_trial": decision.best_trial, "terminated": terminated,
            "metrics": {**snapshot.record.metrics, **snapshot.metrics}})
        plan.record = record if record != snapshot.record else None
        self._end(plan, snapshot, decision.end, decision.error)
        if decision.end == "Completed" and decision.best_trial:
            best = next(c for c in snapshot.children if c.name == decision.best_trial)
            plan.outputs = {o: f"azureml://jobs/{best.name}/outputs/{o}" for o in best.outputs}
        return plan

    def _decide_pipeline(self, snapshot: Snapshot, cancel_requested: bool) -> Plan:
        from cible.core.planning.pipelines import StepView, decide_pipeline

        record = snapshot.record
        pipeline = load_spec_dict(snapshot.spec, "job", source=f"job {snapshot.name}").entity
        # A step's outputs' data (a sweep's or nested pipeline's: its reuse key for the steps after it).
        steps = {c.step: StepView(name=c.step, job=c.name, status=c.status, error=c.error,
                                  outputs={o: e["uri"] for o, e in c.outputs.items()
                                           if isinstance(e, dict) and e.get("uri")})
                 for c in snapshot.children if c.step is not None}
        steps.update({s: StepView(name=s, job=j, status=REUSED, error=None) for s, j in record.reused.items()})
        steps.update({s: StepView(name=s, job=None, status=SKIPPED, error=None) for s in record.skipped})
        decision = decide_pipeline(pipeline, steps, cancel_requested=cancel_requested, default_compute=None,
                                   components=record.components)
        plan = Plan(cancel={job: "its pipeline is ending" for job in decision.cancel},
                    launch=[(launch.step, launch.spec, launch.reuse_key) for launch in decision.launch])
        if decision.skip:
            plan.record = record.model_copy(update={"skipped": sorted({*record.skipped, *decision.skip})})
        self._end(plan, snapshot, decision.end, decision.error)
        if decision.end == "Completed":
            plan.outputs = dict(decision.outputs)
        return plan

    @staticmethod
    def _end(plan: Plan, snapshot: Snapshot, end: str | None, error: dict[str, Any] | None) -> None:
        if end is not None:
            plan.moves = path_to(snapshot.status, end)
            plan.error = JobError.model_validate(error) if error else None
        elif plan.launch or snapshot.children or snapshot.record.reused:
            plan.moves = path_to(snapshot.status, JobStatus.RUNNING) if snapshot.status != "CancelRequested" else []

    def apply(self, session: Session, snapshot: Snapshot, plan: Plan, now: datetime) -> Actions:
        row = session.get(JobRow, snapshot.name)
        check_unchanged(row, snapshot.version, f"job {snapshot.name!r}")
        actions = Actions(cancel=dict(plan.cancel),
                          terminated={c for c, why in plan.cancel.items() if why.startswith(EARLY_TERMINATION)})
        record = plan.record or snapshot.record
        taken = {c.name for c in snapshot.children}
        for step, spec, key in plan.launch:
            earlier = _reusable(session, key) if key else None
            if earlier is not None:  # the same step ran before, with the same inputs: its outputs serve
                record = record.model_copy(update={"reused": {**record.reused, step: earlier}})
                continue
            child = child_name(snapshot.name, step)
            if child not in taken:
                actions.submit.append((child, step, spec, key))
        if record != (row.children or ChildrenRecord()):
            row.children = record
        steps = plan.moves
        if not steps and actions.submit and snapshot.status not in ("CancelRequested",):
            steps = path_to(snapshot.status, JobStatus.RUNNING)
        reason = plan.error.message if plan.error else None
        for step in steps:
            set_status(session, row, step, now, reason=reason if step in TERMINAL else "its children run")
        if plan.error is not None:
            row.error = plan.error
        if plan.outputs is not None:
            row.run = row.run.model_copy(update={"plan": {**row.run.plan, "outputs": _outputs(session, plan.outputs)}})
        return actions

    def act(self, actions: Actions) -> None:
        snapshot = self.snapshot
        for child, why in actions.cancel.items():
            error = JobError(code="EarlyTerminated", message=why) if child in actions.terminated else None
            try:
                self.jobs.cancel(child, reason=why, error=error)
            except ConflictError:  # it ended meanwhile
                pass
        for child, step, spec, key in actions.submit:
            body = {**spec, "experiment_name": spec.get("experiment_name") or snapshot.experiment_name}
            try:
                self.jobs.create_child(child, body, Lineage(parent=snapshot.name, step=step, reuse_key=key),
                                       user=snapshot.created_by)
            except ConflictError:
                continue  # made by an earlier pass with what was decided then: the next pass sees it
            except CibleError as refused:  # its spec cannot run: the parent fails with the reason
                self.fail(snapshot.name, f"{CHILD_KIND[snapshot.job_type]} {step} could not be submitted: "
                          f"{refused.message}",
                          "ChildSubmitFailed")
                return


def _reusable(session: Session, key: str) -> str | None:
    """The latest Completed job whose result has reuse key `key`."""
    return session.scalar(select(JobRow.name).where(JobRow.reuse_key == key, JobRow.status == "Completed")
                          .order_by(JobRow.ended_at.desc()).limit(1))


def _outputs(session: Session, bound: dict[str, str]) -> dict[str, Any]:
    """A parent's named outputs: each is the plan output of the child job that produced it."""
    outputs: dict[str, Any] = {}
    for name, uri in bound.items():
        job, output, _ = refs.parse_job_output_uri(uri)
        producer = session.get(JobRow, job)
        entry = producer.run.plan.get("outputs", {}).get(output) if producer is not None else None
        if entry is not None:
            outputs[name] = entry
    return outputs


class Orchestrator(ReconcilerLoop):
    name = "orchestrator"

    def __init__(self, store: Store, jobs: JobService, clock: Clock, metric_history: MetricHistory,
                 read_result: ResultReader | None = None) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.metric_history = metric_history
        if read_result is None:
            from cible.server.services.artifacts import ArtifactService
            from cible.server.services.automl_jobs import read_result as read

            artifacts = ArtifactService(jobs, jobs.plans.paths)
            read_result = lambda job, metric: read(artifacts, job, metric)  # noqa: E731
        self.read_result = read_result
        # sweep -> its ended trials whose metrics were read and stored once ended (ParentPass.final)
        self.final: dict[str, set[str]] = {}
        super().__init__()
        self.troubles = Troubles(self._log)

    def step(self) -> float:
        return ACTIVE_POLL_S if self.reconcile_once() else IDLE_POLL_S

    def reconcile_once(self) -> bool:
        """One pass over every live sweep and pipeline; True while any is live."""
        now = self.clock.now()
        with self.store.session() as session:
            names = list(session.scalars(
                select(JobRow.name).where(job_is_live(), JobRow.job_type.in_(PARENT_TYPES))
                .order_by(JobRow.created_at, JobRow.name)))
        self.final = {name: self.final[name] for name in names if name in self.final}  # ended sweeps: forgotten
        for name in names:
            if self.troubles.backing_off(name, now):
                continue
            try:
                self._one(name, now)
            except DATABASE_DOWN:
                raise
            except TrackingUnavailableError as error:  # MLflow restarting: the sweep waits, it is not failed
                self._log.info("job %r: its trials' metrics cannot be read yet: %s", name, error.message)
            except Exception as error:  # noqa: BLE001
                self._failed(name, error, now)
            else:
                self.troubles.succeeded(name)
        return bool(names)

    def _one(self, name: str, now: datetime) -> None:
        def fail(parent: str, message: str, code: str) -> None:
            self._fail(parent, message, code=code, now=self.clock.now())

        one = ParentPass(name, self.metric_history, self.jobs, fail, self.final.get(name, set()), self.read_result)
        result = run_pass(self.store, one, now)
        if result.actions is not None:  # committed: those trials' stored metrics are their last
            self.final.setdefault(name, set()).update(one.read_ended)
        if result.actions is not None and result.plan.launch:
            self.wake()  # a pass soon: the next trials or steps may be due (a reused step's followers)

    def _failed(self, name: str, error: Exception, now: datetime) -> None:
        trouble = self.troubles.failed(name, error, now, what=f"job {name!r}")
        if trouble.count >= FAIL_AFTER:
            self._fail(name, f"the server could not handle this job ({trouble.count} tries): {trouble.message}",
                       code="ReconcileError", now=now)
            self.troubles.succeeded(name)

    def _fail(self, name: str, message: str, *, code: str, now: datetime) -> None:
        """End parent `name` Failed with `message`, and cancel its live children."""
        def fail(session: Session) -> list[str]:
            row = session.get(JobRow, name)
            if row is None or is_terminal(row.status):
                return []
            set_status(session, row, JobStatus.FAILED, now, reason=message)
            row.error = JobError(code=code, message=message)
            return list(session.scalars(select(JobRow.name).where(
                JobRow.parent_job_name == name, job_is_live())))
        for child in self.store.transact(fail):
            try:
                self.jobs.cancel(child, reason=f"its parent {name} failed")
            except ConflictError:
                pass
