"""One AutoML search: FLAML over the learners and the budget it is given, on the job's data, validated
as Azure validates (`validation_data`, `n_cross_validations`, `validation_data_size`, else Azure's rule:
more than 20,000 rows a 10% holdout, fewer than 1,000 ten folds, between them three). Every trial FLAML
makes is read back from its log (`log_type="all"`), with its learner, configuration and Azure metric.

The model is a scikit-learn Pipeline of the featurizer (when one was fitted) and FLAML's AutoML object:
it loads wherever scikit-learn and FLAML do (no cible import: the metric functions FLAML keeps are dropped
once it is fitted). `task: forecasting` is forecast.py's.

`exit_score` (Azure's `limits.exit_score`) ends the search once the best primary metric reaches it
(`ExitScore`: FLAML has no public way to stop a search, so it uses FLAML's own budget check).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cible.automl import featurize
from cible.automl.metrics import LOWER_IS_BETTER, custom_metric, flaml_metric, scores
from cible.automl.names import metric as metric_named

LARGE, SMALL = 20_000, 1_000  # Azure's rows for its default validation


@dataclass(frozen=True)
class SearchPlan:
    task: str  # classification | regression | forecasting
    metric: str  # Azure's name
    target: str
    learners: tuple[str, ...]
    time_budget_s: float | None = None
    max_iter: int | None = None
    train_time_limit_s: float | None = None
    n_splits: int | None = None
    validation_size: float | None = None
    weight_column: str | None = None
    cv_split_columns: tuple[str, ...] = ()
    featurization: dict[str, Any] | None = None
    early_stop: bool = False
    seed: int = 0
    n_jobs: int = -1
    # Azure's `forecasting` settings, as spec.ForecastingSettings.model_dump(mode="json", exclude_none=True)
    # writes them (forecast.py); None for the other tasks
    forecasting: dict[str, Any] | None = None
    exit_score: float | None = None  # Azure's limits.exit_score: the search ends once the best metric reaches it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SearchPlan:
        data = json.loads(text)
        return cls(**{**data, "learners": tuple(data["learners"]),
                      "cv_split_columns": tuple(data.get("cv_split_columns") or ())})


@dataclass
class SearchResult:
    best_learner: str | None
    best_config: dict[str, Any]
    best_metric: float | None  # Azure's primary metric of the best model, on the validation the search used
    trials: list[dict[str, Any]] = field(default_factory=list)
    validation_metrics: dict[str, float] = field(default_factory=dict)  # on validation_data, when given
    test_metrics: dict[str, float] = field(default_factory=dict)  # on test_data, when given
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False  # the search ended because the best primary metric reached plan.exit_score


def metric_value(metric: str, loss: float, y_range: float | None) -> float:
    """Azure's metric from FLAML's loss (the built-in RMSE and MAE are not normalised: `y_range` is their
    normaliser; None where the loss is metrics.custom_metric's, Azure's value; the rest are 1 - score)."""
    if metric in LOWER_IS_BETTER:
        return loss / (y_range or 1.0)
    return 1.0 - loss


def search(plan: SearchPlan, training, validation=None, test=None, log_file: Path | None = None):  # noqa: ANN001, ANN201
    """(SearchResult, the fitted model) for `plan` on these pandas frames."""
    if plan.task == "forecasting":
        from cible.automl import forecast

        return forecast.search(plan, training, validation, test, log_file)
    drop = tuple(c for c in (plan.weight_column, *plan.cv_split_columns) if c)
    for column in (plan.target, *drop):
        if column not in training.columns:
            raise ValueError(f"{_field_of(column, plan)}: no column '{column}' in the training data (its columns: "
                             f"{', '.join(map(str, training.columns))})")
    X, y, featurizer, warnings = featurize.prepare(training, plan.featurization, plan.target, drop)  # noqa: N806
    y_range = float(y.max() - y.min()) if plan.task != "classification" else None
    n_classes = int(y.nunique()) if plan.task == "classification" else 0
    azure = metric_named(plan.task, plan.metric)
    metric = (custom_metric(plan.task, azure, y_range) if plan.exit_score is not None
              else flaml_metric(plan.task, azure, n_classes, y_range))
    scale = y_range if isinstance(metric, str) else None  # FLAML's RMSE and MAE are not normalised
    fit = {**flaml_settings(plan, log_file), "task": plan.task, "metric": metric}
    if plan.weight_column:
        fit["sample_weight"] = training[plan.weight_column].to_numpy()
    if validation is not None:
        Xv, yv, _, _ = featurize.prepare(validation, plan.featurization, plan.target, drop)  # noqa: N806
        fit.update(X_val=featurizer.transform(Xv) if featurizer is not None else Xv, y_val=yv, eval_method="holdout")
    else:
        fit.update(_validation(plan, len(X)))
    automl, stopped, more = run(plan, X, y, fit)
    model = _pipeline(featurizer, automl)
    result = SearchResult(best_learner=automl.best_estimator, best_config=dict(automl.best_config or {}),
                          best_metric=metric_value(plan.metric, automl.best_loss, scale)
                          if automl.best_estimator else None,
                          trials=trials(log_file, plan.metric, scale) if log_file else [],
                          warnings=[*warnings, *more], stopped_early=stopped)
    if validation is not None:
        result.validation_metrics = _scores(plan, model, validation, y_range)
    if test is not None:
        result.test_metrics = _scores(plan, model, test, y_range)
    return result, model


def flaml_settings(plan: SearchPlan, log_file: Path | None) -> dict[str, Any]:
    """FLAML's fit arguments for the plan's learners, budget and logging (the task, metric and validation
    are the caller's)."""
    fit: dict[str, Any] = {"estimator_list": list(plan.learners), "seed": plan.seed, "n_jobs": plan.n_jobs,
                           "verbose": 0, "early_stop": plan.early_stop, "log_type": "all", "mlflow_logging": False}
    for key, value in (("time_budget", plan.time_budget_s), ("max_iter", plan.max_iter),
                       ("train_time_limit", plan.train_time_limit_s)):
        if value is not None:
            fit[key] = value
    if plan.time_budget_s is None:
        fit["time_budget"] = -1  # max_iter alone bounds the search
    if log_file is not None:
        fit["log_file_name"] = str(log_file)
    return fit


def run(plan: SearchPlan, X, y, fit: dict[str, Any]):  # noqa: ANN001, ANN201, N803
    """(FLAML's fitted AutoML, whether it stopped on plan.exit_score, warnings): FLAML's search on X, y
    with its fit arguments `fit`. With an exit score, `fit["metric"]` must be a custom_metric function."""
    from flaml import AutoML

    automl = AutoML()
    fit = dict(fit)
    exit_score = None
    if plan.exit_score is not None:
        exit_score = ExitScore(plan.metric, plan.exit_score, automl)
        if fit.get("eval_method") != "cv":
            fit["metric"] = exit_score.watch(fit["metric"])
    if fit.get("eval_method") == "cv":
        fit["cv_score_agg_func"] = exit_score.aggregate if exit_score is not None else aggregate
    automl.fit(X, y, **fit)
    forget(automl, fit["metric"], fit.get("cv_score_agg_func"))
    if exit_score is None:
        return automl, False, []
    return automl, exit_score.stopped, exit_score.warnings


def aggregate(val_loss_folds: list[float], log_metrics_folds: list[Any]) -> tuple[float, Any]:
    """FLAML's cross-validation aggregate (the folds' mean), each logged metric averaged over the folds that
    have it: FLAML's own fails when a fold could not compute one (a constant prediction's spearman)."""
    from flaml.automl.ml import default_cv_score_agg_func

    if not all(isinstance(m, dict) for m in log_metrics_folds):
        return default_cv_score_agg_func(val_loss_folds, log_metrics_folds)
    names = dict.fromkeys(k for m in log_metrics_folds for k in m)
    logged = {k: sum(m[k] for m in log_metrics_folds if k in m) / sum(k in m for m in log_metrics_folds)
              for k in names}
    return sum(val_loss_folds) / len(val_loss_folds), logged


def forget(automl, *functions) -> None:  # noqa: ANN001
    """FLAML keeps the metric (and aggregate) functions it was given in its state, and they are cible's:
    the saved model would need cible to load. They are not needed to predict, so they are dropped."""
    for holder in (automl, getattr(automl, "_state", None)):
        for name, value in list(vars(holder).items()) if holder is not None else ():
            if callable(value) and any(value is f for f in functions if f is not None):
                setattr(holder, name, None)


class ExitScore:
    """Azure's `limits.exit_score` on one FLAML search: once a trial's primary metric (Azure's value)
    reaches the score (at least it for a greater-is-better metric, at most it for one of
    metrics.LOWER_IS_BETTER), the search ends after that trial.

    FLAML 2.x has no public way to stop a search (no callback: microsoft/FLAML#881; `metric_constraints`
    only rules configurations out). The trial's loss is read where FLAML hands it over: the custom metric
    (`watch`) on a holdout, the cross-validation aggregate (`aggregate`, FLAML's `cv_score_agg_func`: the
    folds' mean) otherwise. The search is then ended by FLAML's own rule: its sequential
    loop stops after a trial once the time from its start reaches the time budget, which is set to 0
    (`AutoML._state.time_budget`, not public API). FLAML resets that budget before it retrains the best
    configuration, so the final model is fitted as usual. Should a FLAML release move the attribute, the
    search runs to its budget and a warning says so (`stopped` stays False)."""

    def __init__(self, metric: str, score: float, automl) -> None:  # noqa: ANN001
        self.metric, self.score, self.automl = metric, score, automl
        self.reached: float | None = None  # Azure's value of the first trial that reached the score
        self.stopped = False
        self.warnings: list[str] = []

    def watch(self, custom):  # noqa: ANN001, ANN201
        def metric(*args: Any, **kwargs: Any) -> tuple[float, dict[str, float]]:
            loss, logged = custom(*args, **kwargs)
            self.check(loss)
            return loss, logged

        return metric

    def aggregate(self, val_loss_folds, log_metrics_folds):  # noqa: ANN001, ANN201
        loss, logged = aggregate(val_loss_folds, log_metrics_folds)
        self.check(loss)
        return loss, logged

    def check(self, loss: float) -> None:
        if self.reached is not None or not math.isfinite(loss):
            return
        value = metric_value(self.metric, loss, None)
        if value > self.score if self.metric in LOWER_IS_BETTER else value < self.score:
            return
        self.reached = value
        state = getattr(self.automl, "_state", None)
        if state is not None and isinstance(getattr(state, "time_budget", None), (int, float)):
            state.time_budget = 0
            self.stopped = True
        else:
            self.warnings.append(f"limits.exit_score: {self.metric} reached {value:.6g} (exit score {self.score}) but "
                                 "this FLAML cannot be stopped from outside; the search ran to its budget")


def _field_of(column: str, plan: SearchPlan) -> str:
    if column == plan.target:
        return "target_column_name"
    return "weight_column_name" if column == plan.weight_column else "cv_split_column_names"


def _validation(plan: SearchPlan, rows: int) -> dict[str, Any]:
    if plan.cv_split_columns:
        raise ValueError("cv_split_column_names: not supported yet; use n_cross_validations or validation_data")
    if plan.n_splits:
        if plan.n_splits > rows:
            raise ValueError(f"n_cross_validations: {plan.n_splits} folds need at least as many rows; the training "
                             f"data has {rows}")
        return {"eval_method": "cv", "n_splits": plan.n_splits}
    if plan.validation_size:
        return {"eval_method": "holdout", "split_ratio": plan.validation_size}
    if rows > LARGE:
        return {"eval_method": "holdout", "split_ratio": 0.1}
    return {"eval_method": "cv", "n_splits": min(rows, 10 if rows < SMALL else 3)}


def _pipeline(featurizer, automl):  # noqa: ANN001, ANN202
    from sklearn.pipeline import Pipeline

    steps = [("featurize", featurizer)] if featurizer is not None else []
    return Pipeline([*steps, ("model", automl)])


def trials(log_file: Path, metric: str, y_range: float | None) -> list[dict[str, Any]]:
    """Every trial of FLAML's log (a JSON line each; a line of one key is a checkpoint)."""
    trials = []
    if not log_file.exists():
        return trials
    for line in log_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "record_id" not in record:
            continue
        loss = record.get("validation_loss")
        trials.append({"trial": record["record_id"], "learner": record.get("learner"),
                       "config": record.get("config"), "metric": metric_value(metric, loss, y_range)
                       if isinstance(loss, (int, float)) else None,
                       "trial_time_s": record.get("trial_time"), "wall_clock_time_s": record.get("wall_clock_time")})
    return trials


def _scores(plan: SearchPlan, model, frame, y_range: float | None) -> dict[str, float]:  # noqa: ANN001
    X = frame.drop(columns=[c for c in (plan.target, plan.weight_column, *plan.cv_split_columns) if c],  # noqa: N806
                   errors="ignore")
    y = frame[plan.target]
    predicted = model.predict(X)
    proba = model.predict_proba(X) if plan.task == "classification" else None
    classes = list(model.classes_) if plan.task == "classification" else None
    return scores(plan.task, y, predicted, proba, classes, y_range)
