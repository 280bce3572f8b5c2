"""An AutoML job's plan (pure): its searches as child command jobs, and what to do after each pass.

An Azure AutoML job runs up to `limits.max_concurrent_trials` trials at once. cible runs FLAML, which
spends one budget across learners inside one process, so the job's learners are dealt round-robin (in
FLAML's own priority order: the strongest first) into G = min(max_concurrent_trials, learners) groups,
and each group is one child job: `python -m cible.automl.trial`, one FLAML search over its learners with
its share of `max_trials` and the whole time budget. Every child validates the same way (the same folds
or holdout, the same seed), so their best metrics compare, and the parent's best model is the best
child's.

`limits.exit_score` is honoured inside each search and across them: once a child's best reaches it, the
other children are canceled and the job completes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cible.automl import names
from cible.automl.metrics import LOWER_IS_BETTER
from cible.automl.forecast import ONE_SERIES
from cible.automl.search import SearchPlan
from cible.automl.spec import AutomlJob
from cible.core.lifecycle.jobs import is_terminal

DEFAULT_TIMEOUT_MINUTES = 360  # Azure's documented default for an AutoML job's limits.timeout_minutes
DEFAULT_MAX_TRIALS = 1000  # Azure's default limits.max_trials
SAVE_MARGIN_S = 300  # of the budget, kept to score test_data and save the model (at most a fifth of it)
GRACE_S = 300  # past the budget, before the parent gives up on a child that does not end
PLAN_VARIABLE = "AUTOML_SEARCH_PLAN"  # the child's environment variable holding its SearchPlan (JSON)
DATA_INPUTS = ("training_data", "validation_data", "test_data")
# What the curated AutoML environment's FLAML runs, per task, in FLAML's priority order.
FLAML_LEARNERS = {
    "classification": ("lgbm", "rf", "xgboost", "extra_tree", "xgb_limitdepth", "lrl1", "lrl2", "histgb",
                       "kneighbor", "sgd", "svc"),
    "regression": ("lgbm", "rf", "xgboost", "extra_tree", "xgb_limitdepth", "histgb", "kneighbor", "sgd", "enet",
                   "lassolars"),
    "forecasting": ("lgbm", "rf", "xgboost", "extra_tree", "xgb_limitdepth", "arima", "sarimax", "holt-winters",
                    "naive", "snaive", "avg", "savg"),
}


class AutomlPlanError(ValueError):
    """The job cannot be searched as given; `field` names the setting."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Searches:
    plans: list[SearchPlan]
    warnings: list[str]


def budget_s(job: AutomlJob) -> float:
    return 60.0 * (job.limits.timeout_minutes or DEFAULT_TIMEOUT_MINUTES)


def search_plans(job: AutomlJob) -> Searches:
    """The children's searches: one per group of learners."""
    task = job.task
    runs = set(FLAML_LEARNERS[task])
    panel = job.forecasting is not None and bool(job.forecasting.time_series_id_column_names)
    if panel:  # several series: FLAML's one-series models (ARIMA, naive …) cannot fit them (forecast.py)
        runs -= set(ONE_SERIES)
    learners, warnings = names.estimators(task, job.training.allowed_training_algorithms,
                                          job.training.blocked_training_algorithms, frozenset(runs))
    if not learners:
        runnable = sorted(a for a, e in names.ALGORITHMS[task].items() if set(e) & runs)
        raise AutomlPlanError("training.allowed_training_algorithms",
                              f"none of the algorithms asked for can run here; cible runs {', '.join(runnable)}")
    if job.cv_split_column_names:
        raise AutomlPlanError("cv_split_column_names", "not supported by cible yet; use n_cross_validations or "
                              "validation_data")
    order = {learner: i for i, learner in enumerate(FLAML_LEARNERS[task])}
    learners = sorted(learners, key=lambda learner: order[learner])
    concurrency = job.limits.max_concurrent_trials or 1
    groups = [learners[i::min(concurrency, len(learners))] for i in range(min(concurrency, len(learners)))]
    if concurrency > len(learners):
        warnings.append(f"limits.max_concurrent_trials: {concurrency} asked, and {len(learners)} learner(s) can "
                        f"run: {len(learners)} search(es) run at once, each a process of its own")
    total = budget_s(job)
    max_trials = job.limits.max_trials or DEFAULT_MAX_TRIALS
    folds = job.n_cross_validations if isinstance(job.n_cross_validations, int) else None
    cores = job.limits.max_cores_per_trial
    plans = [SearchPlan(
        task=task, metric=job.primary_metric, target=job.target_column_name, learners=tuple(group),
        time_budget_s=total - min(SAVE_MARGIN_S, 0.2 * total),
        max_iter=max(1, math.ceil(max_trials * len(group) / len(learners))),
        train_time_limit_s=60.0 * job.limits.trial_timeout_minutes if job.limits.trial_timeout_minutes else None,
        n_splits=folds, validation_size=job.validation_data_size, weight_column=job.weight_column_name,
        featurization=job.featurization.model_dump(mode="json", exclude_none=True) if job.featurization else None,
        early_stop=job.limits.enable_early_termination is not False,
        n_jobs=-1 if cores in (None, -1) else cores, exit_score=job.limits.exit_score,
        forecasting=job.forecasting.model_dump(mode="json", exclude_none=True) if job.forecasting else None)
        for group in groups]
    return Searches(plans=plans, warnings=warnings)


def trial_job_spec(job: AutomlJob, plan: SearchPlan, *, index: int, code: str | None,
                   environment: str | None) -> dict[str, Any]:
    """Child `index`'s command job (loads as a CommandJob): one search, from the trial's code snapshot."""
    given = {name: getattr(job, name) for name in DATA_INPUTS if getattr(job, name) is not None}
    command = ["python -m cible.automl.trial", f"env:{PLAN_VARIABLE}", "${{inputs.training_data}}"]
    command += [f"--{name.split('_')[0]} ${{{{inputs.{name}}}}}" for name in DATA_INPUTS[1:] if name in given]
    command += ["--out ${{outputs.result}}", "--model ${{outputs.best_model}}"]
    model_output = job.outputs.get("best_model")
    spec: dict[str, Any] = {
        "type": "command",
        "command": " ".join(command),
        "code": code,
        "environment": environment,
        "environment_variables": {**job.environment_variables, PLAN_VARIABLE: plan.to_json()},
        "inputs": {name: data.model_dump(mode="json", exclude_none=True) for name, data in given.items()},
        "outputs": {"result": {"type": "uri_folder"},
                    "best_model": {**(model_output.model_dump(mode="json", exclude_none=True) if model_output else {}),
                                   "type": "mlflow_model"}},
        "compute": job.compute,
        "experiment_name": job.experiment_name,
        "display_name": f"{', '.join(algorithms(job.task, plan.learners))}",
        "resources": job.resources.model_dump(mode="json", exclude_none=True) if job.resources else None,
        "queue_settings": job.queue_settings.model_dump(mode="json", exclude_none=True) if job.queue_settings else None,
        "tags": dict(job.tags) or None,
        "limits": {"timeout": int(budget_s(job) + GRACE_S)},
        "properties": {"automl": {"learners": list(plan.learners),
                                  "algorithms": algorithms(job.task, plan.learners)}},
    }
    return {key: value for key, value in spec.items() if value is not None}


def algorithms(task: str, learners: Sequence[str]) -> list[str]:
    """Azure's names of FLAML's learners (each once, in order)."""
    out: list[str] = []
    for learner in learners:
        name = algorithm_of(task, learner)
        if name not in out:
            out.append(name)
    return out


def algorithm_of(task: str, learner: str | None) -> str:
    for name, learners in names.ALGORITHMS[task].items():
        if learner in learners:
            return name
    return str(learner)


# ---- after each pass ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildView:
    index: int
    name: str
    status: str
    result: dict[str, Any] | None  # its result.json once it ended (None: none was written)
    error: str | None = None


@dataclass
class AutomlDecision:
    launch: list[int] = field(default_factory=list)  # the children (by index) to submit
    cancel: dict[str, str] = field(default_factory=dict)  # child -> why
    end: str | None = None  # Completed, Failed or Canceled
    error: dict[str, str] | None = None
    best_child: str | None = None


def best_metric(result: dict[str, Any] | None) -> float | None:
    value = (result or {}).get("best_metric")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_child(metric: str, children: Sequence[ChildView]) -> str | None:
    """The Completed child whose search found the best model (ties: the lower index)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    scored = [(sign * best_metric(c.result), -c.index, c.name) for c in children  # type: ignore[operator]
              if c.status == "Completed" and best_metric(c.result) is not None]
    return max(scored)[2] if scored else None


def _reached(metric: str, exit_score: float | None, value: float | None) -> bool:
    if exit_score is None or value is None:
        return False
    return value <= exit_score if metric in LOWER_IS_BETTER else value >= exit_score


def decide_automl(job: AutomlJob, children: Sequence[ChildView], *, groups: int, elapsed_s: float,
                  cancel_requested: bool) -> AutomlDecision:
    """What the parent does now, given its `groups` searches' children."""
    decision = AutomlDecision(best_child=best_child(job.primary_metric, children))
    live = [c for c in children if not is_terminal(c.status)]
    exit_hit = next((c for c in children if c.status == "Completed"
                     and _reached(job.primary_metric, job.limits.exit_score, best_metric(c.result))), None)
    if cancel_requested:
        decision.cancel = {c.name: "its AutoML job was canceled" for c in live}
        decision.end = None if live else "Canceled"
        return decision
    over = elapsed_s >= budget_s(job) + GRACE_S
    if over or exit_hit is not None:
        why = ("limits.exit_score reached by " + exit_hit.name if exit_hit is not None
               else f"its AutoML job ran past limits.timeout_minutes ({budget_s(job) / 60:g})")
        decision.cancel = {c.name: why for c in live}
        if live:
            return decision
        if decision.best_child is None:
            decision.end = "Failed"
            decision.error = {"code": "AutomlTimeout", "message": "the AutoML job ran out of time before any search "
                              "found a model"}
        else:
            decision.end = "Completed"
        return decision
    made = {c.index for c in children}
    decision.launch = [i for i in range(groups) if i not in made]
    if live or decision.launch:
        return decision
    if decision.best_child is not None:
        decision.end = "Completed"
        return decision
    decision.end = "Failed"
    failed = sorted((c for c in children if c.status != "Completed"), key=lambda c: c.index)
    if failed and failed[0].error:
        decision.error = {"code": "AutomlSearchFailed", "message": f"search {failed[0].name} failed: {failed[0].error}"}
    else:
        decision.error = {"code": "NoModel", "message": "no search found a model (every learner failed or none "
                          "finished a trial within the budget); see each child's log"}
    return decision
