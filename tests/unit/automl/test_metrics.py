"""Azure's AutoML metrics as Azure defines them (checked against values worked out by hand), and the loss
FLAML minimises for each: built-in where FLAML ranks models the same way, a function of FLAML's custom
signature where it does not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cible.automl.metrics import flaml_metric, loss, scores
from cible.automl.names import metric


def test_classification_metrics_binary() -> None:
    truth, predicted = ["no", "no", "yes", "yes"], ["no", "yes", "yes", "yes"]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    found = scores("classification", truth, predicted, proba, ["no", "yes"])
    assert found["accuracy"] == 0.75
    assert found["AUC_weighted"] == 1.0  # every "yes" ranks above every "no"
    assert found["norm_macro_recall"] == pytest.approx((0.75 - 0.5) / 0.5)  # recalls 0.5 and 1.0
    assert found["precision_score_weighted"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))


def test_classification_metrics_multiclass_and_a_missing_class() -> None:
    truth = [0, 1, 2, 2]
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    found = scores("classification", truth, [0, 1, 2, 2], proba, [0, 1, 2])
    assert found["AUC_weighted"] == 1.0 and found["norm_macro_recall"] == 1.0
    one_class = scores("classification", [1, 1], [1, 1], np.array([[0.2, 0.8], [0.3, 0.7]]), [0, 1])
    assert "AUC_weighted" not in one_class and one_class["accuracy"] == 1.0  # AUC needs both classes


def test_regression_metrics_are_normalised_by_the_training_range() -> None:
    found = scores("regression", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 6.0], y_range=10.0)
    assert found["normalized_root_mean_squared_error"] == pytest.approx(math.sqrt(4 / 4) / 10)
    assert found["normalized_mean_absolute_error"] == pytest.approx(0.5 / 10)
    assert found["spearman_correlation"] == pytest.approx(1.0)
    assert scores("regression", [1.0, 2.0, 3.0], [30.0, -20.0, 10.0])["r2_score"] == -1.0  # clipped as Azure does


def test_the_loss_flaml_minimises() -> None:
    assert loss("accuracy", 0.9) == pytest.approx(0.1) and loss("normalized_mean_absolute_error", 0.2) == 0.2
    assert flaml_metric("classification", metric("classification", "AUC_weighted"), 2, None) == "roc_auc"
    assert flaml_metric("classification", metric("classification", "AUC_weighted"), 3, None) == "roc_auc_ovr_weighted"
    assert flaml_metric("regression", metric("regression", "r2_score"), 0, None) == "r2"


def test_a_custom_metric_has_flamls_signature_and_logs_every_azure_metric() -> None:
    class Fitted:
        def predict(self, X):  # noqa: N803, ANN001, ANN201
            return np.array([0, 1, 1])

        def predict_proba(self, X):  # noqa: N803, ANN001, ANN201
            return np.array([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])

    custom = flaml_metric("classification", metric("classification", "norm_macro_recall"), 2, None)
    value, logged = custom(None, np.array([0, 1, 0]), Fitted(), [0, 1], None, None)
    assert logged["norm_macro_recall"] == pytest.approx(((0.5 + 1.0) / 2 - 0.5) / 0.5)
    assert value == pytest.approx(1 - logged["norm_macro_recall"]) and "AUC_weighted" in logged
