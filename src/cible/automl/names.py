"""Azure AutoML's names (tasks, primary metrics, training algorithms) and what FLAML calls them.

Azure matches a name after `camel_to_snake` on both sides (`LightGBM` and `light_gbm` are one name,
`AUC_weighted` is `auc_weighted`); cible also takes the name with its underscores left out
(`lightgbm`), a superset of what Azure accepts. A name Azure does not know is refused listing those it
does; an algorithm Azure knows but FLAML has no learner for is left out with a warning naming it.

Metrics: FLAML minimises a loss; `flaml` is its built-in metric where one ranks models as Azure's does
(RMSE for Azure's normalised RMSE: the normaliser, the training target's range, is the same for every
model), None where the metric is computed here (cible.automl.metrics, later). Pure: no FLAML import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TASKS = ("classification", "regression", "forecasting")
# Azure's other AutoML tasks: refused at submit, naming what runs.
OTHER_TASKS = ("image_classification", "image_classification_multilabel", "image_object_detection",
               "image_instance_segmentation", "text_classification", "text_classification_multilabel", "text_ner")


@dataclass(frozen=True)
class Metric:
    azure: str  # as Azure's docs write it, for messages and the metrics logged
    flaml: str | None  # FLAML's built-in metric; None: computed by cible
    multiclass: str | None = None  # FLAML's metric when the target has more than two classes


_CLASSIFICATION_METRICS = (Metric("accuracy", "accuracy"), Metric("AUC_weighted", "roc_auc", "roc_auc_ovr_weighted"),
                           Metric("average_precision_score_weighted", None), Metric("norm_macro_recall", None),
                           Metric("precision_score_weighted", None))
_REGRESSION_METRICS = (Metric("spearman_correlation", None), Metric("normalized_root_mean_squared_error", "rmse"),
                       Metric("r2_score", "r2"), Metric("normalized_mean_absolute_error", "mae"))
METRICS = {"classification": _CLASSIFICATION_METRICS, "regression": _REGRESSION_METRICS,
           "forecasting": _REGRESSION_METRICS}
DEFAULT_METRIC = {"classification": "AUC_weighted", "regression": "normalized_root_mean_squared_error",
                  "forecasting": "normalized_root_mean_squared_error"}

# Azure's algorithm -> FLAML's learners for it (empty: FLAML has none), per task (Azure's v2 enums).
_SHARED = {"ElasticNet": ("enet",), "GradientBoosting": ("histgb",), "DecisionTree": (), "KNN": ("kneighbor",),
           "LassoLars": ("lassolars",), "SGD": ("sgd",), "RandomForest": ("rf",), "ExtremeRandomTrees": ("extra_tree",),
           "LightGBM": ("lgbm",), "XGBoostRegressor": ("xgboost", "xgb_limitdepth")}
ALGORITHMS = {
    "classification": {"LogisticRegression": ("lrl1", "lrl2"), "SGD": ("sgd",), "MultinomialNaiveBayes": (),
                       "BernoulliNaiveBayes": (), "SVM": (), "LinearSVM": ("svc",), "KNN": ("kneighbor",),
                       "DecisionTree": (), "RandomForest": ("rf",), "ExtremeRandomTrees": ("extra_tree",),
                       "LightGBM": ("lgbm",), "GradientBoosting": ("histgb",),
                       "XGBoostClassifier": ("xgboost", "xgb_limitdepth")},
    "regression": _SHARED,
    "forecasting": {**_SHARED, "ElasticNet": (), "KNN": (), "SGD": (), "DecisionTree": (), "AutoArima": ("arima",),
                    "Arimax": ("sarimax",), "Prophet": ("prophet",), "ExponentialSmoothing": ("holt-winters",),
                    "Naive": ("naive",), "SeasonalNaive": ("snaive",), "Average": ("avg",),
                    "SeasonalAverage": ("savg",), "TCNForecaster": ()},
}


class UnknownName(ValueError):
    """A name Azure does not know here: the message says which are known."""


def snake(name: str) -> str:
    """Azure's `camel_to_snake` (azure-ai-ml's StringTransformedEnum casing)."""
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _key(name: str) -> str:
    return snake(name).replace("_", "")


def metric(task: str, name: str | None) -> Metric:
    """The primary metric `name` of `task` (its default when None)."""
    wanted = _key(name or DEFAULT_METRIC[task])
    for known in METRICS[task]:
        if _key(known.azure) == wanted:
            return known
    raise UnknownName(f"'{name}' is not a primary metric of a {task} task; use one of "
                      f"{', '.join(m.azure for m in METRICS[task])}")


def algorithm(task: str, name: str) -> str:
    """Azure's spelling of the algorithm `name` of `task`."""
    if not isinstance(name, str):
        raise UnknownName(f"{name!r} is not an algorithm name")
    for known in ALGORITHMS[task]:
        if _key(known) == _key(name):
            return known
    raise UnknownName(f"'{name}' is not a training algorithm of a {task} task; use one of "
                      f"{', '.join(ALGORITHMS[task])}")


def estimators(task: str, allowed: list[str] | None, blocked: list[str] | None,
               available: frozenset[str]) -> tuple[list[str], list[str]]:
    """FLAML's learners for `training.allowed_training_algorithms` / `blocked_training_algorithms`, among
    those `available` in the installed FLAML, and the warnings for what cannot be honoured. An empty list
    of learners: none of what was asked can run (the caller refuses the job)."""
    asked = [algorithm(task, n) for n in allowed] if allowed else list(ALGORITHMS[task])
    refused = {algorithm(task, n) for n in blocked or []}
    learners: list[str] = []
    missing: list[str] = []
    for name in asked:
        if name in refused:
            continue
        runnable = [e for e in ALGORITHMS[task][name] if e in available]
        if not runnable:
            missing.append(name)
        learners += [e for e in runnable if e not in learners]
    one = len(missing) == 1
    warnings = [f"training.allowed_training_algorithms: {', '.join(missing)} {'has' if one else 'have'} no FLAML "
                f"learner here and {'is' if one else 'are'} left out"] if missing and allowed else []
    return learners, warnings
