"""One AutoML search: FLAML over the learners and the budget it is given, on the job's data, validated
as Azure validates (`validation_data`, `n_cross_validations`, `validation_data_size`, else Azure's rule:
more than 20,000 rows a 10% holdout, fewer than 1,000 ten folds, between them three). Every trial FLAML
makes is read back from its log (`log_type="all"`), with its learner, configuration and Azure metric.

The model is a scikit-learn Pipeline of the featurizer (when one was fitted) and FLAML's AutoML object:
it loads wherever scikit-learn and FLAML do (no cible import).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cible.automl import featurize
from cible.automl.metrics import LOWER_IS_BETTER, flaml_metric, scores
from cible.automl.names import metric as metric_named

LARGE, SMALL = 20_000, 1_000  # Azure's rows for its default validation


@dataclass(frozen=True)
class SearchPlan:
    task: str  # classification | regression
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


def metric_value(metric: str, loss: float, y_range: float | None) -> float:
    """Azure's metric from FLAML's loss (the built-in RMSE and MAE are not normalised; the rest are 1 - score)."""
    if metric in LOWER_IS_BETTER:
        return loss / (y_range or 1.0)
    return 1.0 - loss


def search(plan: SearchPlan, training, validation=None, test=None, log_file: Path | None = None):  # noqa: ANN001, ANN201
    """(SearchResult, the fitted model) for `plan` on these pandas frames."""
    from flaml import AutoML

    drop = tuple(c for c in (plan.weight_column, *plan.cv_split_columns) if c)
    for column in (plan.target, *drop):
        if column not in training.columns:
            raise ValueError(f"{_field_of(column, plan)}: no column '{column}' in the training data (its columns: "
                             f"{', '.join(map(str, training.columns))})")
    X, y, featurizer, warnings = featurize.prepare(training, plan.featurization, plan.target, drop)  # noqa: N806
    y_range = float(y.max() - y.min()) if plan.task != "classification" else None
    n_classes = int(y.nunique()) if plan.task == "classification" else 0
    fit: dict[str, Any] = {
        "task": plan.task, "metric": flaml_metric(plan.task, metric_named(plan.task, plan.metric), n_classes, y_range),
        "estimator_list": list(plan.learners), "seed": plan.seed, "n_jobs": plan.n_jobs, "verbose": 0,
        "early_stop": plan.early_stop, "log_type": "all", "mlflow_logging": False}
    for key, value in (("time_budget", plan.time_budget_s), ("max_iter", plan.max_iter),
                       ("train_time_limit", plan.train_time_limit_s)):
        if value is not None:
            fit[key] = value
    if plan.time_budget_s is None:
        fit["time_budget"] = -1  # max_iter alone bounds the search
    if log_file is not None:
        fit["log_file_name"] = str(log_file)
    if plan.weight_column:
        fit["sample_weight"] = training[plan.weight_column].to_numpy()
    if validation is not None:
        Xv, yv, _, _ = featurize.prepare(validation, plan.featurization, plan.target, drop)  # noqa: N806
        fit.update(X_val=featurizer.transform(Xv) if featurizer is not None else Xv, y_val=yv, eval_method="holdout")
    else:
        fit.update(_validation(plan, len(X)))
    automl = AutoML()
    automl.fit(X, y, **fit)
    model = _pipeline(featurizer, automl)
    result = SearchResult(best_learner=automl.best_estimator, best_config=dict(automl.best_config or {}),
                          best_metric=metric_value(plan.metric, automl.best_loss, y_range)
                          if automl.best_estimator else None,
                          trials=_trials(log_file, plan.metric, y_range) if log_file else [], warnings=warnings)
    if validation is not None:
        result.validation_metrics = _scores(plan, model, validation, y_range)
    if test is not None:
        result.test_metrics = _scores(plan, model, test, y_range)
    return result, model


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


def _trials(log_file: Path, metric: str, y_range: float | None) -> list[dict[str, Any]]:
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
