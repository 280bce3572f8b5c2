"""Sweeps and pipelines at submit and in `job show`: their work is child jobs, made by the orchestrator.

At submit a sweep's first trial and a pipeline's first steps are planned exactly as the orchestrator
will submit them (compute, sizes, code, inputs, environment): a spec that cannot run is a 4xx now,
not a Failed sweep later. A pipeline's registered components (`azureml:name:version`, `@latest`)
are resolved once, at submit, and kept with the job: a component registered later does not change
a pipeline that is running.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cible.core.errors import CibleError, ConflictError, InvalidRequestError, InvalidSpecError, NotFoundError
from cible.core.models.records import ChildrenRecord
from cible.core.specs.azureml import refs
from cible.server.store.rows import JobRow

if TYPE_CHECKING:
    from cible.server.services.jobs import JobService

MAX_CHILD_NAME = 200  # a child's name leaves room under 255 for a serverless pool's prefix
REUSED, SKIPPED, NOT_STARTED = "Reused", "Skipped", "NotStarted"


def child_name(parent: str, part: str) -> str:
    """`<parent>_<trial index or step>`; a long one keeps its start, a hash of the whole, and its end."""
    name = f"{parent}_{part}"
    if len(name) <= MAX_CHILD_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{parent[:120]}_{digest}_{part[-60:]}"


class ParentJobs:
    def __init__(self, jobs: JobService, component_lookup: Callable[[str, str], dict[str, Any]] | None) -> None:
        self.jobs = jobs
        # component_lookup(name, version or label) -> the registered component's spec (NotFoundError)
        self.component_lookup = component_lookup

    # -- at submit -------------------------------------------------------------------------------
    def check(self, job: Any, name: str, user: str | None = None, as_admin: bool = True,
              ) -> tuple[list[str], ChildrenRecord]:
        """The submit's checks of a sweep or pipeline `job` named `name`, submitted by `user` (`as_admin`:
        who may use anyone's compute instance): what it warns of, and the record it starts with."""
        if job.type == "sweep":
            return self._check_sweep(job, name, user, as_admin), ChildrenRecord()
        if job.type == "automl":
            return self._check_automl(job, name, user, as_admin)
        spec = job.model_dump(mode="json", exclude_none=True)
        components = self.resolve_components(spec)
        if not as_admin:
            self._check_step_computes(spec, user)
        return self._check_pipeline(job, name, components, user, as_admin), ChildrenRecord(components=components)

    def _check_step_computes(self, spec: dict[str, Any], user: str | None) -> None:
        """Every compute the pipeline names (its default and each step's, not only the first steps'): none is
        another user's compute instance."""
        named = [("settings.default_compute", (spec.get("settings") or {}).get("default_compute")),
                 ("compute", spec.get("compute"))]
        named += [(f"jobs.{step}.compute", body.get("compute")) for step, body in (spec.get("jobs") or {}).items()
                  if isinstance(body, dict)]
        for where, compute in named:
            if isinstance(compute, str) and compute.strip():
                try:
                    self.jobs.computes.require_instance_user(refs.parse_compute_ref(compute), user)
                except CibleError as exc:
                    exc.message = f"{where}: {exc.message}"
                    raise

    def _check_sweep(self, sweep: Any, name: str, user: str | None, as_admin: bool) -> list[str]:
        from cible.core.planning.sweeps import trial_job_spec

        if self.jobs.plans.tracking is None:  # its trials' metric would never be read: refused, not Failed later
            raise InvalidRequestError(
                "type: a sweep reads its trials' primary metric from their MLflow runs, and this workspace's "
                "server runs without MLflow tracking (CIBLE_TRACKING=0); start the server with tracking on",
                details={"field": "type"})

        spec = trial_job_spec(sweep, example_params(sweep), index=0)
        return self._check_child(child_name(name, "0"), spec, "trial", user, as_admin)

    def _check_automl(self, job: Any, name: str, user: str | None, as_admin: bool,
                      ) -> tuple[list[str], ChildrenRecord]:
        """Its searches are planned (learners, budget shares) and the first is checked as it will be
        submitted; the trial's code and the environment are fixed here, for the whole job."""
        from cible.core.planning.automl import AutomlPlanError, search_plans, trial_job_spec
        from cible.server.services.automl_jobs import check_data, trial_code

        try:
            searches = search_plans(job)
        except AutomlPlanError as exc:
            raise InvalidSpecError(str(exc), details={"field": exc.field}) from None
        record = ChildrenRecord(trial_code=trial_code(self.jobs.plans.paths.blob_root),
                                trial_environment=self.jobs.automl_environment)
        spec = trial_job_spec(job, searches.plans[0], index=0, code=record.trial_code,
                              environment=record.trial_environment)
        notes = self._check_child(child_name(name, "0"), spec, "trial", user, as_admin)
        check_data(job, self.jobs.plans, self.jobs.plans.paths)  # its inputs resolve: the child's plan said so
        return [*searches.warnings, *notes], record

    def _check_pipeline(self, pipeline: Any, name: str, components: dict[str, dict[str, Any]], user: str | None,
                        as_admin: bool) -> list[str]:
        from cible.core.planning.pipelines import decide_pipeline

        decision = decide_pipeline(pipeline, {}, cancel_requested=False, default_compute=None, components=components)
        if decision.end == "Failed":  # its spec cannot run (a component not resolved, a required input unbound)
            message = (decision.error or {}).get("message") or "the pipeline cannot start"
            raise InvalidSpecError(message, details={"field": "jobs"})
        notes: list[str] = []
        for launch in decision.launch:  # the steps that start first: planned as they will be
            notes += self._check_child(child_name(name, launch.step), launch.spec, f"jobs.{launch.step}", user, as_admin)
        return notes

    def _check_child(self, child: str, spec: dict[str, Any], where: str, user: str | None,
                     as_admin: bool) -> list[str]:
        with self.jobs.store.session() as session:  # the parent is new: a job of this name is another's
            taken = session.get(JobRow, child) is not None
        if taken:
            raise ConflictError(f"{where}: its job would be named '{child}', and a job of that name exists; "
                                "submit this job under another name", details={"field": "name"})
        try:
            loaded = self.jobs._load(child, spec)
            if loaded.entity.type == "spark":  # a spark step: planned as the job service plans any Spark job
                prepared = self.jobs.prepare(child, spec, user, None, as_admin)
                return [f"{where}: {n}" for n in getattr(prepared, "warnings", [])]
            if loaded.entity.type != "command":  # a nested sweep or pipeline: its own checks
                notes, _ = self.check(loaded.entity, child, user, as_admin)
                return [f"{where}: {n}" for n in notes]
            _, notes, _, _, _ = self.jobs._plan(loaded.entity, child, user, as_admin)
        except CibleError as exc:
            exc.message = f"{where}: {exc.message}"
            raise
        return [f"{where}: {n}" for n in notes]

    def resolve_components(self, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every registered component the pipeline `spec` names (its own `component`, its steps' and sweep
        trials', nested pipeline components', recursively) -> its registered spec."""
        found: dict[str, dict[str, Any]] = {}
        pending: list[tuple[dict[str, Any], str]] = [(spec, "")]
        while pending:
            node, where = pending.pop()
            for key in ("component", "trial"):
                value = node.get(key)
                if isinstance(value, str) and value.lower().startswith("azureml:") and value not in found:
                    found[value] = self._registered(value, f"{where}{key}")
                    pending.append((found[value], f"{where}{key}."))
                elif isinstance(value, dict):
                    pending.append((value, f"{where}{key}."))
            for step_name, step in (node.get("jobs") or {}).items():
                if isinstance(step, dict):
                    pending.append((step, f"{where}jobs.{step_name}."))
        return found

    def _registered(self, ref: str, field: str) -> dict[str, Any]:
        parsed = refs.parse_asset_ref(ref)
        if parsed is None or parsed.registry:
            raise InvalidRequestError(
                f"{field}: '{ref}' is not a component this workspace can resolve; use azureml:<name>:<version>, "
                "azureml:<name>@latest, or a local component file (the CLI and SDK inline it)",
                details={"field": field})
        if self.component_lookup is None:
            raise NotFoundError(f"{field}: this workspace has no component registry", details={"field": field})
        try:
            return self.component_lookup(parsed.name, parsed.version or parsed.label or "latest")
        except NotFoundError as exc:
            raise NotFoundError(f"{field}: {exc.message}", details={"field": field}) from None

    # -- in job show ------------------------------------------------------------------------------
    def children_rows(self, session: Session, name: str) -> list[JobRow]:
        return list(session.scalars(select(JobRow).where(JobRow.parent_job_name == name)
                                    .order_by(JobRow.created_at, JobRow.name)))

    def summary(self, session: Session, row: JobRow, *, detailed: bool) -> dict[str, Any]:
        """A sweep's trials (parameters, metric, status) and best trial, or a pipeline's steps. A listing
        (not `detailed`) of a sweep counts its trials in the database rather than loading them."""
        record = row.children or ChildrenRecord()
        if row.job_type == "automl":
            from cible.server.services import automl_jobs

            return automl_jobs.summary(session, row, self.children_rows(session, row.name), detailed=detailed)
        if row.job_type == "sweep":
            best = session.get(JobRow, record.best_trial) if record.best_trial else None
            counts = dict(session.execute(select(JobRow.status, func.count()).where(
                JobRow.parent_job_name == row.name).group_by(JobRow.status)).all())
            answer: dict[str, Any] = {"best_trial": self._trial(best, record) if best is not None else None,
                                      "trial_counts": counts}
            if detailed:
                answer["trials"] = sorted((self._trial(c, record) for c in self.children_rows(session, row.name)),
                                          key=lambda t: t["index"])
            return answer
        children = self.children_rows(session, row.name)
        by_step = {child.parent_step: child for child in children}
        steps = []
        for step in pipeline_steps(row.spec, record.components):
            child = by_step.get(step)
            if step in record.reused:
                steps.append({"name": step, "job": record.reused[step], "status": REUSED})
            elif child is not None:
                steps.append({"name": step, "job": child.name, "status": child.status, "type": child.job_type,
                              "compute": child.compute or child.target,
                              **({"error": child.error.model_dump(mode="json")} if child.error else {})})
            else:
                steps.append({"name": step, "job": None, "status": SKIPPED if step in record.skipped else NOT_STARTED})
        return {"steps": steps}

    @staticmethod
    def _trial(child: JobRow, record: ChildrenRecord) -> dict[str, Any]:
        history = record.metrics.get(child.name) or []
        trial = {"index": int(child.parent_step) if (child.parent_step or "").isdigit() else -1,
                 "name": child.name, "status": child.status,
                 "parameters": (child.spec.get("properties") or {}).get("hyperparameters", {}),
                 "metric": history[-1] if history else None}
        if child.name in record.terminated and child.status != "Completed":  # it finished before the cancel
            trial["terminated"] = record.terminated[child.name]
        return trial


def example_params(sweep: Any) -> dict[str, Any]:
    """A value of each hyperparameter, to plan a sweep's first trial at submit (before any sampling)."""
    space = sweep.model_dump(mode="json")["search_space"]
    params: dict[str, Any] = {}
    for name, dist in space.items():
        kind = dist["type"]
        if kind == "choice":
            params[name] = dist["values"][0]
        elif kind == "randint":
            params[name] = 0
        elif kind in ("uniform", "quniform"):
            params[name] = dist["min_value"]
        elif kind in ("loguniform", "qloguniform"):
            params[name] = math.exp(dist["min_value"])
        elif kind in ("normal", "qnormal"):
            params[name] = dist["mu"]
        else:  # lognormal, qlognormal
            params[name] = math.exp(dist["mu"])
    return params


def pipeline_steps(spec: dict[str, Any], components: dict[str, dict[str, Any]]) -> list[str]:
    """A pipeline's step names: its own `jobs`, or those of the pipeline component it instantiates."""
    component = spec.get("component")
    if isinstance(component, str):
        component = components.get(component)
    return list(spec.get("jobs") or (component or {}).get("jobs") or {})
