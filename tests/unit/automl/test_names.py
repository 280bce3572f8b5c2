"""Azure's AutoML names as Azure matches them (camel_to_snake on both sides), mapped to FLAML's; an
unknown name is refused listing the known ones, and an algorithm FLAML cannot run is left out, said."""

from __future__ import annotations

import pytest

from cible.automl.names import ALGORITHMS, METRICS, UnknownName, algorithm, estimators, metric, snake

ALL_FLAML = frozenset({"lgbm", "rf", "extra_tree", "xgboost", "xgb_limitdepth", "lrl1", "lrl2", "kneighbor", "histgb",
                       "sgd", "svc", "enet", "lassolars", "arima", "sarimax", "holt-winters", "naive", "snaive", "avg",
                       "savg"})


@pytest.mark.parametrize("given, expected", [("LightGBM", "light_gbm"), ("XGBoostClassifier", "xg_boost_classifier"),
                                             ("AUC_weighted", "auc_weighted"), ("TCNForecaster", "tcn_forecaster"),
                                             ("light_gbm", "light_gbm"), ("r2_score", "r2_score")])
def test_snake_is_azures_camel_to_snake(given: str, expected: str) -> None:
    assert snake(given) == expected


def test_names_match_in_any_of_azures_spellings_and_a_bit_more() -> None:
    assert metric("classification", "AUC_weighted") is metric("classification", "auc_weighted")
    assert metric("classification", None).azure == "AUC_weighted"  # Azure's default
    assert metric("regression", None).flaml == "rmse" and metric("forecasting", "R2Score").flaml == "r2"
    assert algorithm("classification", "light_gbm") == algorithm("classification", "lightgbm") == "LightGBM"
    assert algorithm("regression", "xg_boost_regressor") == "XGBoostRegressor"


def test_an_unknown_or_misplaced_name_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(UnknownName, match="'r2_score' is not a primary metric of a classification task; use one of "
                                          "accuracy, AUC_weighted"):
        metric("classification", "r2_score")
    with pytest.raises(UnknownName, match="'XGBoostClassifier' is not a training algorithm of a regression task"):
        algorithm("regression", "XGBoostClassifier")
    with pytest.raises(UnknownName, match="FastLinearRegressor"):  # Azure's v1 only: its v2 schema refuses it too
        algorithm("regression", "FastLinearRegressor")


def test_allowed_and_blocked_algorithms_become_flamls_learners() -> None:
    learners, warnings = estimators("classification", ["LightGBM", "LogisticRegression", "SVM"], None, ALL_FLAML)
    assert learners == ["lgbm", "lrl1", "lrl2"]
    assert warnings == ["training.allowed_training_algorithms: SVM has no FLAML learner here and is left out"]
    learners, warnings = estimators("regression", None, ["light_gbm", "random_forest"], ALL_FLAML)
    assert "lgbm" not in learners and "rf" not in learners and "extra_tree" in learners and warnings == []
    learners, _ = estimators("regression", ["LightGBM"], None, frozenset({"rf"}))  # not in this FLAML
    assert learners == []


def test_every_metric_and_algorithm_is_spelt_once_per_task() -> None:
    for task, metrics in METRICS.items():
        assert len({snake(m.azure).replace("_", "") for m in metrics}) == len(metrics), task
    for task, names in ALGORITHMS.items():
        assert len({snake(n).replace("_", "") for n in names}) == len(names), task
