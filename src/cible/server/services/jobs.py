"""Jobs: submission, queries, cancel, and the one function that changes a job's status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cible.core import catalog, naming
from cible.core.clock import Clock
from cible.core.environments.serving import with_serving
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.jobs import TERMINAL, JobStatus, check_transition, is_terminal
from cible.core.models import CommandJob
from cible.core.models.records import JobError, RunRecord, ServerlessPool
from cible.core.models.spark import SparkJob
from cible.core.names import display_name_for
from cible.core.planning.cuda import job_gpus, submit_notes
from cible.core.specs.azureml.loader import load_spec_dict
from cible.core.specs.azureml.refs import parse_compute_ref
from cible.server.services import kubernetes
from cible.server.services.compute_spec import compute_spec
from cible.server.services.computes import ComputeService
from cible.server.services.costs import SERVERLESS_PREFIX
from cible.server.services.job_plans import PlanBuilder
from cible.server.services.job_views import (
    BATCH,
    CHILD_KIND,
    PARENT_TYPES,
    REPLICA,
    SERVERLESS,
    JobViews,
    descendants,
    live_serverless_nodes,
    on_compute,
)
from cible.server.services.paging import page
from cible.server.services.spark_jobs import spark_submission
from cible.server.services.unreadable import fetch_items
from cible.server.services.views import ALL, ARCHIVED, list_view
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, JobStatusRow
from cible.workspace import DEFAULT_DATASTORE

MUTABLE_FIELDS = ("display_name", "description", "tags")
RUN_TOKEN_GRACE = timedelta(minutes=10)  # a run token outlives its job this long (its last uploads)
SERVERLESS_POOL_MAX = 255  # computes.name is String(255)


def set_status(session: Session, row: JobRow, target: JobStatus | str, at: datetime, reason: str | None = None,
               by: str | None = None) -> None:
    """The only place a job's status changes: validate the move, record it in the history (`by`: the user
    who made it; None: cible itself)."""
    target = JobStatus(target)
    check_transition(row.status, target)
    session.add(JobStatusRow(job_name=row.name, from_status=row.status, to_status=target.value, reason=reason, at=at,
                             by=by))
    row.status = target.value
    row.updated_at = at
    if target == JobStatus.RUNNING and row.started_at is None:
        row.started_at = at
    if target in TERMINAL:
        row.ended_at = at


@dataclass(frozen=True)
class Lineage:
    """Where a child job belongs: its sweep or pipeline, its trial index or step, its reuse key."""

    parent: str | None = None
    step: str | None = None
    reuse_key: str | None = None
    # A replica of an online deployment ("<endpoint>/<deployment>"): a job of type `replica`, which runs
    # the scoring server (its environment gets the server's packages) and is not listed among jobs.
    replica_of: str | None = None
    # A job made by `batch-endpoint invoke`: "<endpoint>/<deployment>" and its plan's `batch` block (the
    # deployment's settings the server hands the job's runners: core/models/batch_endpoints.py).
    batch_of: str | None = None
    batch: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewJob:
    """A submitted job checked and planned (JobService.prepare), not yet stored (JobService.add)."""

    name: str
    job: Any  # the loaded command, sweep or pipeline job
    warnings: list[str]
    target: str
    pool: dict[str, Any] | None  # its own serverless compute's spec
    plan: dict[str, Any]
    estimate: Any
    children: Any  # a sweep's or pipeline's ChildrenRecord
    lineage: Lineage
    user: str | None
    answer_stored: Callable[[Session], dict[str, Any] | None]  # the answer once a job of its name is stored

    @property
    def is_parent(self) -> bool:
        """A sweep or pipeline: its trials or steps are the jobs that run."""
        return self.job.type in PARENT_TYPES


class LostRace(Exception):
    """Another request stored a job of this name between our read and our insert."""


class JobService:
    def __init__(self, store: Store, computes: ComputeService, plans: PlanBuilder, clock: Clock, on_submit=None,  # noqa: ANN001
                 default_compute: str = SERVERLESS, component_lookup=None) -> None:  # noqa: ANN001
        self.store = store
        # Where a job that names no compute runs: serverless (Azure's newer default) unless the
        # installation says otherwise (CIBLE_DEFAULT_COMPUTE=local).
        self.default_compute = default_compute
        self.computes = computes
        self.plans = plans
        self.clock = clock
        # Called with the jobs just stored, or with None when a job changed (a cancel): wakes the loops
        # that act on them.
        self.on_change = on_submit or (lambda new=None: None)
        # Whether a parent's submitter may use anyone's compute instance (an Owner, or the workspace token's
        # client, which has no user row): its trials and steps are checked as it was. The app sets it.
        self.is_admin: Callable[[str | None], bool] = lambda user: True
        # The environment of an AutoML job's searches (None: the launcher's own Python). The app sets it.
        self.automl_environment: str | None = None
        self.spark_environment: str | None = None  # CIBLE_SPARK_ENVIRONMENT: every Spark job's, instead of its runtime's
        from cible.server.services.parent_jobs import ParentJobs  # it submits through this service

        # Sweeps and pipelines: checked at submit, shown with their trials or steps.
        self.parents = ParentJobs(self, component_lookup)
        self.views = JobViews(plans.paths, self.parents, clock)

    # -- writes ------------------------------------------------------------
    def create_or_update(self, name: str, body: dict[str, Any], user: str | None = None,
                         as_admin: bool = True) -> dict[str, Any]:
        """`as_admin` False: `user` is held to what is theirs (another user's compute instance is refused)."""
        return self._submit(name, body, user, None, as_admin)

    def create_child(self, name: str, body: dict[str, Any], lineage: Lineage, user: str | None = None) -> dict[str, Any]:
        """A sweep's trial or a pipeline's step, submitted by the orchestrator: every check of a submit, as its
        parent's submitter (`user`, held to what is theirs unless an Owner's). A second call with the same
        body answers the job made by the first (a pass made again)."""
        return self._submit(name, body, user, lineage, self.is_admin(user))

    def _submit(self, name: str, body: dict[str, Any], user: str | None, lineage: Lineage | None,
                as_admin: bool = True) -> dict[str, Any]:
        prepared = self.prepare(name, body, user, lineage, as_admin)
        if not isinstance(prepared, NewJob):
            return prepared
        try:
            with self.store.session() as session:
                self.add(session, prepared, self.clock.now())
        except (IntegrityError, LostRace):
            # A concurrent PUT of the same name won the insert. A retry's answer must not depend on
            # timing: judge this body against the stored job exactly as if it had come second.
            updated = self.store.transact(prepared.answer_stored)
            if updated is None:  # not a same-name race after all
                raise ConflictError(f"job '{name}' could not be stored; try again",
                                    details={"field": "name"}) from None
            return updated
        self.on_change([prepared])
        return self.get(name)  # read once committed: its wait reason reads the compute (a new serverless pool)

    def prepare(self, name: str, body: dict[str, Any], user: str | None, lineage: Lineage | None,
                as_admin: bool = True) -> NewJob | dict:
        """A submit's every check and its plan, nothing new stored: the NewJob to `add`, or the answer
        for a job of that name already stored (the same job, its display name, description and tags
        updated as a PUT does; a conflict when it differs in anything else)."""
        loaded = self._load(name, body)
        job = loaded.entity

        def answer_stored(session: Session) -> dict[str, Any] | None:  # a PUT of a stored job: its tags
            existing = session.get(JobRow, name)
            if existing is None:
                return None
            if lineage is not None and (existing.parent_job_name, existing.parent_step) != (lineage.parent, lineage.step):
                # Another job has this trial's or step's name (a user's, another parent's): answering it, or a
                # conflict the orchestrator takes for its own earlier submit, would leave the parent waiting
                # forever on a child that never comes.
                raise InvalidRequestError(
                    f"name: job '{name}' already exists and is not '{lineage.step}' of job '{lineage.parent}'; "
                    f"delete that job, or submit '{lineage.parent}' again under another name",
                    details={"field": "name"})
            return self._update_mutable(session, existing, job)

        updated = self.store.transact(answer_stored)  # again from a fresh read if a reconciler wrote the job
        if updated is not None:
            return updated
        children = None
        if job.type in PARENT_TYPES:  # its trials or steps are planned as they start: checked here
            notes, children = self.parents.check(job, name, user, as_admin)
            target, pool, plan, estimate = f"({job.type})", None, {"instance_count": 0}, None
        elif job.type == "spark":
            target, notes, pool, plan, estimate = self._plan_spark(job, name, user, as_admin)
        else:
            target, notes, pool, plan, estimate = self._plan(job, name, user, as_admin)
            if lineage is not None and lineage.replica_of:
                # No MLflow run: a replica serves, it does not train.
                plan = {**plan, "environment": with_serving(plan["environment"]), "serving": True, "tracking": None}
            if lineage is not None and lineage.batch_of:
                # The runners report to the server's API (with the job's run token, added at launch).
                plan = {**plan, "batch": dict(lineage.batch or {}), "api_url": getattr(self.plans, "api_url", None)}
        return NewJob(name, job, [*loaded.warnings, *notes], target, pool, plan, estimate, children,
                      lineage or Lineage(), user, answer_stored)

    def add(self, session: Session, new: NewJob, now: datetime) -> None:
        """Store a prepared job, Queued (LostRace when a job of its name was stored since)."""
        if session.get(JobRow, new.name) is not None:  # made since it was prepared
            raise LostRace
        job, lineage, pool = new.job, new.lineage, new.pool
        serverless = pool is not None and pool.get("kind") != kubernetes.POOL_TYPE
        row = JobRow(
            name=new.name, job_type=REPLICA if lineage.replica_of else BATCH if lineage.batch_of else job.type,
            display_name=job.display_name or display_name_for(new.name),
            experiment_name=job.experiment_name or "Default", status=JobStatus.NOT_STARTED.value,
            compute=job.compute, target=new.target, instance_count=new.plan["instance_count"],
            spec=job.model_dump(mode="json", exclude_none=True, by_alias=False), warnings=new.warnings,
            run=RunRecord(plan=new.plan, cost_estimate=new.estimate,
                          serverless=ServerlessPool(size=pool["size"], tier=pool["tier"],
                                                    max_instances=pool["max_instances"]) if serverless else None),
            created_at=now, updated_at=now, created_by=new.user, parent_job_name=lineage.parent,
            parent_step=lineage.step, reuse_key=lineage.reuse_key, children=new.children, batch_of=lineage.batch_of,
        )
        session.add(row)
        if pool is not None and not serverless:  # the pool of pods of its instance type (a Kubernetes compute)
            kubernetes.upsert_pool(session, new.target, pool, new.user, now)
        elif pool is not None:  # the job's own serverless nodes: made for it, gone after it
            session.add(ComputeRow(name=new.target, compute_type=SERVERLESS, spec=pool, created_by=new.user,
                                   provisioning_state="Succeeded", created_at=now, updated_at=now))
        session.add(JobStatusRow(job_name=new.name, from_status=None, to_status=row.status, reason="submitted", at=now,
                                 by=new.user))
        set_status(session, row, JobStatus.QUEUED, now, reason=(
            f"queued: its {CHILD_KIND[job.type]}s start as it runs" if job.type in PARENT_TYPES
            else f"queued on {new.target}"), by=new.user)

    def _load(self, name: str, body: dict[str, Any]):  # noqa: ANN202 (a LoadedSpec)
        """The body as a command job, with every check that needs no lookup (submit and validate)."""
        naming.JOB.check(name)  # before anything reads or stores it: it becomes the run's folder
        if isinstance(body.get("experiment_name"), str):
            naming.EXPERIMENT.check(body["experiment_name"], field="experiment_name")
        if body.get("name") not in (None, name):
            raise InvalidRequestError(f"name: the body says '{body['name']}' but the URL says '{name}'", details={"field": "name"})
        trial = body.get("trial")  # a sweep's trial: the loader inlines its environment file as a job's
        for field, environment in (("environment", body.get("environment")),
                                   ("trial.environment", trial.get("environment") if isinstance(trial, dict) else None)):
            reference = environment.strip().lower() if isinstance(environment, str) else ""
            if reference.startswith("file:") or reference.endswith((".yml", ".yaml")):
                # Never read a file of the server's own disk on a client's behalf.
                raise InvalidRequestError(f"{field}: a YAML file reference names a file on the client; send the "
                                          "environment itself (the CLI and SDK do)", details={"field": field})
        return load_spec_dict({**body, "name": name}, "job", source="request body")

    def _plan(self, job: CommandJob, name: str, user: str | None = None, as_admin: bool = True,
              shares_memory: bool = False) -> tuple[str, list[str], dict[str, Any] | None, dict[str, Any], Any]:
        """Where a new job would run and its launch plan: the compute, sizes, inputs and environment
        checked (a 4xx when one is wrong), nothing stored. Also (target, notes, pool, plan, estimate).
        `user` submits it (a Slurm cluster runs it as their own Slurm identity)."""
        target, notes, pool, size = self._resolve_compute(job, name, user, as_admin, shares_memory)
        plan = self.plans.build(job, name=name, experiment_name=job.experiment_name or "Default", target=target)
        if gpus := job_gpus(size):  # what the launcher checks the environment's build against (CUDA preflight)
            plan["gpus"] = gpus
        notes += submit_notes(size, plan["environment"], plan["distribution"], target)
        estimate = self.computes.cost_estimate(pool or target, plan["instance_count"],
                                               job.limits.timeout if job.limits else None)
        return target, notes, pool, plan, estimate

    def _plan_spark(self, job: SparkJob, name: str, user: str | None = None,
                    as_admin: bool = True) -> tuple[str, list[str], dict[str, Any] | None, dict[str, Any], Any]:
        """A Spark job's `_plan`: spark-submit as a command job, with the master its launcher gives it."""
        submission = spark_submission(job, self.computes, default_compute=self.default_compute,
                                      environment=self.spark_environment)
        target, notes, pool, plan, estimate = self._plan(submission.command, name, user, as_admin, shares_memory=True)
        # Its inputs and outputs are staged where every node of the job sees them (cible.launch.spark_files).
        staging = self.plans.paths.datastore(DEFAULT_DATASTORE) / "azureml" / name / ".spark"
        return target, [*submission.notes, *notes], pool, {**plan, "spark": {**submission.block,
                                                                            "root": str(staging)}}, estimate

    def _update_mutable(self, session: Session, row: JobRow, job: CommandJob) -> dict[str, Any]:
        """A PUT under an existing name: the same job (as normalised by the loader, the way it was
        stored) answers the stored job; one that differs only in display_name, description or tags
        updates them by `update`'s rule (a PUT is the whole job: a field it leaves out is cleared);
        any other difference is a conflict, every time."""
        incoming = self._same_submission(row, job)
        self._change_mutable(session, row, {key: incoming.get(key) for key in MUTABLE_FIELDS})
        return self.views.resource(session, row)

    def _same_submission(self, row: JobRow, job: CommandJob) -> dict[str, Any]:
        """`job` dumped as a spec is stored, when it differs from the stored job `row` only in what can
        change (display_name, description, tags); else a conflict naming what differs."""
        incoming = job.model_dump(mode="json", exclude_none=True)
        fixed = (set(incoming) | set(row.spec)) - {*MUTABLE_FIELDS, "name", "type"}  # a field left out differs too
        changed = [k for k in fixed if row.spec.get(k) != incoming.get(k)]
        if changed:
            raise ConflictError(
                f"job '{row.name}' already exists and a submitted job cannot change "
                f"({', '.join(sorted(changed))}); only display_name, description and tags can. "
                "Submit it under a new name (omit name, or pass -n).",
                details={"fields": sorted(changed)},
            )
        return incoming

    def _resolve_compute(self, job: CommandJob, name: str, user: str | None = None, as_admin: bool = True,
                         shares_memory: bool = False,
                         ) -> tuple[str, list[str], dict[str, Any] | None, catalog.VmSize | None]:
        """The target a job runs on, notes for its warnings, its serverless pool's spec if any, and the
        size of its nodes (None on local and Slurm). `shares_memory`: serverless nodes larger than this
        machine may share its memory (a Spark job's, whose conf says what its JVMs take)."""
        compute = parse_compute_ref(job.compute) if job.compute is not None else self.default_compute
        notes = [] if job.compute is not None else [f"no compute was given: the job runs on {compute} compute"]
        instance_count = job.resources.instance_count if job.resources else 1
        if compute == SERVERLESS:
            if len(SERVERLESS_PREFIX + name) > SERVERLESS_POOL_MAX:  # the pool's name must fit the store
                raise InvalidRequestError(
                    f"name: a job on serverless compute has at most {SERVERLESS_POOL_MAX - len(SERVERLESS_PREFIX)} "
                    f"characters (its nodes are named {SERVERLESS_PREFIX}<job>); this one has {len(name)}: "
                    "use a shorter name", details={"field": "name"})
            providers = self.computes.node_providers
            pool = providers.serverless_pool(name, job.resources.instance_type if job.resources else None,
                                             instance_count, job.queue_settings.job_tier if job.queue_settings else None,
                                             overcommit=shares_memory)
            notes += providers.size_notes(pool["cible"]["provider"], pool["size"])
            if pool["cible"].get("overcommit"):
                notes.append(f"serverless nodes of {pool['size']} are larger than this machine: they share its memory "
                             "(the Spark job's JVMs take what its conf asks)")
            return f"{SERVERLESS_PREFIX}{name}", notes, pool, catalog.get_size(pool["size"])
        pool = self._kubernetes_pool(compute, job, instance_count)
        if pool is not None:  # pods of its instance type, on the pool of that type
            return kubernetes.pool_name(compute, pool["instance_type"]), notes, pool, kubernetes.pool_size(pool)
        size = self.computes.require_runnable(compute, instance_count=instance_count, user=user, as_admin=as_admin)
        if job.queue_settings and job.queue_settings.job_tier:
            notes.append(f"queue_settings.job_tier applies to serverless compute only; compute {compute} has its "
                         "own tier")
        if job.resources and job.resources.instance_type:
            notes.append(f"resources.instance_type applies to serverless and Kubernetes computes only; compute "
                         f"{compute} has its own size")
        return compute, notes, None, size

    def _kubernetes_pool(self, compute: str, job: CommandJob, instance_count: int) -> dict[str, Any] | None:
        """The pool spec of a job on a Kubernetes compute (None on any other compute)."""
        if compute in ("local", SERVERLESS):
            return None
        with self.store.session() as session:
            row = session.get(ComputeRow, compute)
            spec = compute_spec(row) if row is not None and row.compute_type == "kubernetes" else None
            if spec is None:
                return None
            pool = kubernetes.pool_spec(spec, job.resources.instance_type if job.resources else None, instance_count)
            kubernetes.refuse_if_draining(session, kubernetes.pool_name(compute, pool["instance_type"]))
        return pool

    def cancel(self, name: str, *, reason: str = "cancel requested by user", error: JobError | None = None,
               by: str | None = None) -> dict[str, Any]:
        """Ask for a job's cancel (`by`: the user who asks). `error`, when given, is why it ends Canceled (a
        sweep's early termination policy): kept over what its launcher reports."""
        def request_cancel(session: Session) -> dict[str, Any]:
            row = self._row(session, name)
            if is_terminal(row.status):
                raise ConflictError(f"job '{name}' already ended {row.status}; there is nothing to cancel")
            if row.status != JobStatus.CANCEL_REQUESTED.value:
                set_status(session, row, JobStatus.CANCEL_REQUESTED, self.clock.now(), reason=reason, by=by)
                if error is not None:
                    row.error = error
            return self.views.resource(session, row)
        # Read again and retried when a reconciler moved the job meanwhile (a launcher's report).
        result = self.store.transact(request_cancel)
        self.on_change()
        return result

    def delete(self, name: str) -> None:
        def forget(session: Session) -> None:
            row = self._row(session, name)
            if not is_terminal(row.status):
                raise ConflictError(f"job '{name}' is {row.status}; cancel it before deleting it")
            parent = session.get(JobRow, row.parent_job_name) if row.parent_job_name else None
            if parent is not None and not is_terminal(parent.status):  # it would be made again, or miss
                raise ConflictError(f"job '{name}' belongs to job '{parent.name}', which is {parent.status}; "
                                    f"delete it once '{parent.name}' has ended")
            children = descendants(session, name)  # a sweep's trials, a pipeline's steps
            live = next((child for child in children if not is_terminal(child.status)), None)
            if live is not None:  # a parent ends before its children: those canceled may still be stopping
                raise ConflictError(f"job '{name}' has {CHILD_KIND.get(row.job_type, 'child')} '{live.name}', which "
                                    f"is {live.status}; delete '{name}' once it has ended")
            for child in children:
                session.delete(child)
            session.delete(row)

        self.store.transact(forget)

    def creator(self, name: str) -> str | None:
        """Who submitted job `name` (None: the workspace token, without a user named); 404 when there is none."""
        with self.store.session() as session:
            found = session.execute(select(JobRow.created_by).where(JobRow.name == name)).first()
        if found is None:
            raise NotFoundError(f"job '{name}' does not exist", details={"name": name})
        return found[0]

    def validate(self, name: str, body: dict[str, Any], user: str | None = None, as_admin: bool = True) -> dict[str, Any]:
        """`az ml job validate`: every check a submit of `body` as job `name` makes (the same 4xx),
        nothing stored. Passing, it says where the job would run and what the submit would warn of."""
        loaded = self._load(name, body)
        job = loaded.entity
        with self.store.session() as session:
            existing = session.get(JobRow, name)
            if existing is not None:  # the submit would answer that job (or update its tags): no new run
                self._same_submission(existing, job)
                return {"passed": True, "name": name, "exists": True, "target": existing.target,
                        "warnings": list(existing.warnings or [])}
        if job.type in PARENT_TYPES:
            notes, _ = self.parents.check(job, name, user, as_admin)
            return {"passed": True, "name": name, "exists": False, "target": f"({job.type})",
                    "warnings": [*loaded.warnings, *notes]}
        planned = self._plan_spark if job.type == "spark" else self._plan
        target, notes, _, plan, estimate = planned(job, name, user, as_admin)
        return {"passed": True, "name": name, "exists": False, "target": target,
                "instance_count": plan["instance_count"], "cost_estimate": estimate,
                "warnings": [*loaded.warnings, *notes]}

    def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """`az ml job update`: display_name, description and tags, nothing else. A field set to null
        is cleared; `tags` replaces the tags (the CLI's `--set tags.k=v` sends them merged)."""
        refused = sorted(set(changes) - set(MUTABLE_FIELDS))
        if refused:
            raise InvalidRequestError(
                f"{refused[0]}: a submitted job's {', '.join(refused)} cannot change; only "
                f"{', '.join(MUTABLE_FIELDS)} can. Submit a new job to change the rest.",
                details={"field": refused[0], "fields": refused, "mutable": list(MUTABLE_FIELDS)})
        def change(session: Session) -> dict[str, Any]:
            row = self._row(session, name)
            self._change_mutable(session, row, changes)
            return self.views.resource(session, row)
        return self.store.transact(change)

    def _change_mutable(self, session: Session, row: JobRow, changes: dict[str, Any]) -> None:
        """The one rule for changing a stored job's display_name, description and tags (PATCH and a
        PUT of the same job): null clears a field; no display name is the one made from the name."""
        # The stored job with the changes, through the loader: the same limits as at submit
        # (sizes, tag values made text), the same 422 naming the field.
        job = load_spec_dict({**row.spec, **changes, "name": row.name}, "job", source="request body").entity
        values = job.model_dump(mode="json", include=set(changes))
        spec = {k: v for k, v in {**row.spec, **values}.items() if v is not None}
        if spec != row.spec:  # an identical update writes nothing
            row.spec = spec
            row.display_name = spec.get("display_name") or display_name_for(row.name)
            row.updated_at = self.clock.now()

    def set_archived(self, name: str, archived: bool) -> dict[str, Any]:
        """`az ml job archive|restore`: hide the job from `job list` (or show it again). Only a job that
        has ended is archived, as on Azure; both are idempotent."""
        def archive(session: Session) -> dict[str, Any]:
            row = self._row(session, name)
            if archived and not is_terminal(row.status):
                raise ConflictError(
                    f"job '{name}' is {row.status}; only a job that has ended (Completed, Failed or Canceled) can be "
                    f"archived: wait for it to end, or cancel it first (`cible job cancel -n {name}`)",
                    details={"name": name, "status": row.status})
            if row.archived != archived:
                row.archived = archived
                row.updated_at = self.clock.now()
            return self.views.resource(session, row)
        return self.store.transact(archive)

    # -- reads ---------------------------------------------------------------
    def get(self, name: str, *, history: bool = True) -> dict[str, Any]:
        with self.store.session() as session:
            return self.views.resource(session, self._row(session, name), history=history)

    def list(self, *, skip: int = 0, top: int = 50, status: str | None = None, experiment: str | None = None,
             include_archived: bool = False, archived_only: bool = False,
             parent_job_name: str | None = None, compute: str | None = None,
             created_by: str | None = None) -> dict[str, Any]:
        """Top-level jobs, newest first; or, given `parent_job_name`, that sweep's trials or that pipeline's
        steps (`az ml job list --parent-job-name`), oldest first. `compute` keeps the jobs of one compute
        (`cpu-cluster` or `azureml:cpu-cluster`; `serverless`: every job on serverless nodes), `created_by`
        those one user submitted."""
        view = list_view(include_archived, archived_only)
        if status:  # `--status running` as Azure's CLI takes it: any case, Azure's name stored
            known = {s.value.lower(): s.value for s in JobStatus}
            if status.lower() not in known:
                allowed = ", ".join(s.value for s in JobStatus)
                raise InvalidRequestError(f"status: '{status}' is not a job status; use one of {allowed} "
                                          "(in any case)", details={"field": "status"})
            status = known[status.lower()]
        with self.store.session() as session:
            query = select(JobRow)
            if status:
                query = query.where(JobRow.status == status)
            if experiment:
                query = query.where(JobRow.experiment_name == experiment)
            if compute:
                query = query.where(on_compute(compute))
            if created_by:
                query = query.where(JobRow.created_by == created_by)
            if view != ALL:  # archived jobs are hidden unless asked for, as `az ml job list`
                query = query.where(JobRow.archived.is_(view == ARCHIVED))
            if parent_job_name is None:  # children are listed under their parent, as on Azure
                order = (JobRow.created_at.desc(), JobRow.name)
                # A deployment's replicas are shown by the deployment (`online-deployment show`).
                query = query.where(JobRow.parent_job_name.is_(None), JobRow.job_type != REPLICA)
            else:
                self._row(session, parent_job_name)  # a 404 for a parent that does not exist
                order = (JobRow.created_at, JobRow.name)
                query = query.where(JobRow.parent_job_name == parent_job_name)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            # The page's names first, sorted without the rows' specs and runs (a database sorting every
            # matching row whole is what a 10,000-job listing spent its time on), then those rows.
            names = session.scalars(query.with_only_columns(JobRow.name).order_by(*order).offset(skip).limit(top)).all()
            live = live_serverless_nodes(session, names)  # one query for the page, not one per job
            # A job whose stored run cannot be read is listed as a stub with an `error` (unreadable.py).
            items, _ = fetch_items(session, select(JobRow).where(JobRow.name.in_(names)).order_by(*order), 0, top,
                                   lambda r: self.views.resource(session, r, history=False, live_nodes=live))
            return page(items, total, skip)

    def run_handle(self, name: str) -> tuple[str, RunRecord]:
        """The job's status and run (NotFoundError when there is no such job)."""
        with self.store.session() as session:
            row = self._row(session, name)
            return row.status, row.run

    def run_token_refusal(self, name: str, salt: str) -> str | None:
        """Why a run token of job `name` with `salt` no longer counts, or None while it does: the
        job must be the submission it was made for, and not ended more than RUN_TOKEN_GRACE ago."""
        with self.store.session() as session:
            row = session.get(JobRow, name)
            if row is None:
                return f"job '{name}' no longer exists"
            if row.run.plan.get("token_salt", "") != salt:
                return f"this token is of an earlier job named '{name}'"
            ended = row.ended_at if is_terminal(row.status) else None
        if ended is not None and self.clock.now() - ended > RUN_TOKEN_GRACE:
            return f"job '{name}' ended at {ended.isoformat()}; its run token is spent"
        return None

    def _row(self, session: Session, name: str) -> JobRow:
        row = session.get(JobRow, name)
        if row is None:
            # A name cut short when copied: the jobs it begins (a scan of names, on this error path only).
            longer = session.scalars(select(JobRow.name).where(JobRow.name.startswith(name, autoescape=True))
                                     .order_by(JobRow.name).limit(3)).all() if name else []
            hint = f"; did you mean {' or '.join(repr(n) for n in longer)}?" if longer else ""
            raise NotFoundError(f"job '{name}' does not exist in this workspace{hint}", details={"name": name})
        return row

