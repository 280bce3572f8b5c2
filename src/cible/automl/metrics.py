"""Azure AutoML's metrics, computed as Azure defines them, and the loss FLAML minimises for each.

Classification: accuracy, AUC_weighted (one-vs-rest AUC weighted by class support), the weighted
average precision, norm_macro_recall ((macro recall - R) / (1 - R), R = 1 / classes: 0 is chance, 1 is
perfect) and the weighted precision. Regression and forecasting: spearman_correlation, r2_score, and RMSE
and MAE normalised by the training target's range (so they compare across datasets).

FLAML minimises a loss: a metric where greater is better is searched as `1 - score`. Where FLAML's own
metric ranks models exactly as Azure's does it is used (names.Metric.flaml); otherwise `flaml_metric`
gives FLAML a function of its custom-metric signature (`custom_metric`) that also logs every Azure metric
of the task. A search that must read Azure's value after each trial (exit_score, forecasting) uses
`custom_metric` for every metric.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from cible.automl.names import Metric

LOWER_IS_BETTER = frozenset({"normalized_root_mean_squared_error", "normalized_mean_absolute_error"})


def scores(task: str, y_true: Any, y_pred: Any, proba: Any = None, classes: Sequence[Any] | None = None,
           y_range: float | None = None, sample_weight: Any = None) -> dict[str, float]:
    """Every Azure metric of `task` for these predictions (`proba`: class probabilities, columns in the
    order of `classes`; `y_range`: the training target's max - min). A metric that cannot be computed
    (one class in y_true for an AUC) is left out."""
    import numpy as np
    from sklearn import metrics as sk

    found: dict[str, float] = {}

    def put(name: str, compute: Callable[[], float]) -> None:
        try:
            with warnings.catch_warnings():  # an undefined metric (one class in y_true) is left out, not warned
                warnings.simplefilter("ignore")
                value = float(compute())
        except ValueError:
            return
        if math.isfinite(value):
            found[name] = value

    if task == "classification":
        labels = list(classes) if classes is not None else sorted(set(np.asarray(y_true).tolist()))
        put("accuracy", lambda: sk.accuracy_score(y_true, y_pred, sample_weight=sample_weight))
        put("precision_score_weighted", lambda: sk.precision_score(
            y_true, y_pred, average="weighted", zero_division=0, sample_weight=sample_weight))
        chance = 1 / max(2, len(labels))
        put("norm_macro_recall", lambda: (sk.recall_score(y_true, y_pred, average="macro", zero_division=0,
                                                           sample_weight=sample_weight) - chance) / (1 - chance))
        if proba is not None:
            proba = np.asarray(proba)
            if len(labels) == 2:
                positive = proba[:, 1] if proba.ndim == 2 else proba
                truth = (np.asarray(y_true) == labels[1]).astype(int)
                put("AUC_weighted", lambda: sk.roc_auc_score(truth, positive, sample_weight=sample_weight))
                put("average_precision_score_weighted", lambda: sk.average_precision_score(
                    truth, positive, sample_weight=sample_weight))
            else:
                truth = np.stack([(np.asarray(y_true) == label).astype(int) for label in labels], axis=1)
                put("AUC_weighted", lambda: sk.roc_auc_score(truth, proba, average="weighted",
                                                             sample_weight=sample_weight))
                put("average_precision_score_weighted", lambda: sk.average_precision_score(
                    truth, proba, average="weighted", sample_weight=sample_weight))
        return found
    from scipy.stats import spearmanr

    put("r2_score", lambda: max(-1.0, sk.r2_score(y_true, y_pred, sample_weight=sample_weight)))  # Azure clips at -1
    put("spearman_correlation", lambda: spearmanr(y_true, y_pred).statistic)
    span = y_range if y_range and y_range > 0 else 1.0
    put("normalized_root_mean_squared_error", lambda: math.sqrt(
        sk.mean_squared_error(y_true, y_pred, sample_weight=sample_weight)) / span)
    put("normalized_mean_absolute_error", lambda: sk.mean_absolute_error(
        y_true, y_pred, sample_weight=sample_weight) / span)
    return found


def loss(metric: str, value: float) -> float:
    """What FLAML minimises for Azure's `metric` at `value`."""
    return value if metric in LOWER_IS_BETTER else 1.0 - value


def flaml_metric(task: str, metric: Metric, n_classes: int, y_range: float | None) -> str | Callable[..., Any]:
    """FLAML's `metric` argument for Azure's `metric`: its built-in name (whose loss FLAML computes: RMSE
    and MAE are not normalised), or `custom_metric`."""
    if metric.flaml is not None:
        return metric.multiclass if n_classes > 2 and metric.multiclass else metric.flaml
    return custom_metric(task, metric, y_range)


def custom_metric(task: str, metric: Metric, y_range: float | None) -> Callable[..., Any]:
    """A function of FLAML's custom-metric signature: its loss is `loss(metric, Azure's value)` (so it is
    Azure's value itself for a lower-is-better metric), and it logs every Azure metric of the task. For a
    time-series task FLAML passes its dataset as `X_val` (and no `y_val`): the holdout is its test part."""

    def custom(X_val, y_val, estimator, labels, X_train, y_train, weight_val=None, weight_train=None,  # noqa: N803
               *args: Any, **kwargs: Any) -> tuple[float, dict[str, float]]:
        if y_val is None and hasattr(X_val, "test_data"):
            y_val = X_val.test_data[X_val.target_names[0]]
        predicted = estimator.predict(X_val)
        proba = estimator.predict_proba(X_val) if task == "classification" else None
        found = scores(task, y_val, predicted, proba, labels, y_range, weight_val)
        if metric.azure not in found:
            return math.inf, found
        return loss(metric.azure, found[metric.azure]), found

    return custom
