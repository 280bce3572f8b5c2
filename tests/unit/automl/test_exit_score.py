"""Azure's `limits.exit_score`: the search ends after the trial whose primary metric (Azure's value) reaches
it, at least it for a greater-is-better metric, at most it for normalised RMSE and MAE; the result says it
stopped there. On a holdout and in cross-validation, and the model such a search makes (FLAML was given
cible's metric function) still loads without cible. Small real datasets, max_iter bounds each search."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cible.automl.search import ExitScore, SearchPlan, aggregate

needs_flaml = pytest.mark.skipif(importlib.util.find_spec("flaml") is None, reason="FLAML is not installed")


def iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    return frame.sample(frac=1, random_state=0).reset_index(drop=True)


def test_the_exit_score_is_reached_in_the_metrics_direction_and_ends_flamls_budget() -> None:
    automl = SimpleNamespace(_state=SimpleNamespace(time_budget=60.0))
    lower = ExitScore("normalized_root_mean_squared_error", 0.1, automl)
    lower.check(0.2)  # a custom metric's loss is Azure's value for a lower-is-better metric
    assert lower.reached is None and automl._state.time_budget == 60.0
    lower.check(0.05)
    assert lower.reached == 0.05 and lower.stopped and automl._state.time_budget == 0
    higher = ExitScore("accuracy", 0.9, SimpleNamespace(_state=SimpleNamespace(time_budget=-1)))
    higher.check(0.2)  # accuracy 0.8
    assert higher.reached is None
    higher.check(float("inf"))  # a failed trial reaches nothing
    assert higher.reached is None
    higher.check(0.1)  # accuracy 0.9: reached
    assert higher.reached == pytest.approx(0.9) and higher.stopped
    unstoppable = ExitScore("accuracy", 0.5, SimpleNamespace())
    unstoppable.check(0.1)
    assert unstoppable.reached == pytest.approx(0.9) and not unstoppable.stopped
    assert unstoppable.warnings[0].startswith("limits.exit_score: accuracy reached 0.9")


def test_the_folds_are_averaged_metric_by_metric() -> None:
    loss, logged = aggregate([0.2, 0.4], [{"r2_score": 0.8, "spearman_correlation": 0.5}, {"r2_score": 0.6}])
    assert loss == pytest.approx(0.3)
    assert logged == pytest.approx({"r2_score": 0.7, "spearman_correlation": 0.5})  # the fold that has it


@needs_flaml
def test_a_reached_exit_score_ends_a_holdout_search_after_that_trial(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    from cible.automl.search import search

    plan = SearchPlan(task="regression", metric="normalized_root_mean_squared_error", target="target",
                      learners=("lgbm",), max_iter=8, validation_size=0.2, exit_score=0.5)
    result, _ = search(plan, load_diabetes(as_frame=True).frame, log_file=tmp_path / "flaml.log")
    assert result.stopped_early and len(result.trials) == 1  # the first trial's RMSE is well under half the range
    assert result.best_metric == pytest.approx(result.trials[0]["metric"]) and result.best_metric <= 0.5


@needs_flaml
def test_a_reached_exit_score_ends_a_cross_validated_search_and_its_model_loads_without_cible(
        tmp_path: Path) -> None:
    from cible.automl.search import search
    from cible.automl.trial import save_model

    data = iris()
    plan = SearchPlan(task="classification", metric="accuracy", target="species", learners=("lgbm", "rf"),
                      max_iter=8, n_splits=3, exit_score=0.6)
    result, model = search(plan, data[:120], test=data[120:], log_file=tmp_path / "flaml.log")
    assert result.stopped_early and len(result.trials) < 8 and result.best_metric >= 0.6
    assert all(t["metric"] < 0.6 for t in result.trials[:-1])  # it ended on the first trial that reached it
    save_model(model, tmp_path / "model")
    data[120:].drop(columns="species").to_csv(tmp_path / "rows.csv", index=False)
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, mlflow.pyfunc, pandas as pd; "
        "sys.modules['cible'] = None; "  # any import of cible now fails: the model must not need it
        f"m = mlflow.pyfunc.load_model({str(tmp_path / 'model')!r}); "
        f"print(len(m.predict(pd.read_csv({str(tmp_path / 'rows.csv')!r}))))")],
        capture_output=True, text=True, timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().splitlines()[-1] == "30"


@needs_flaml
def test_an_exit_score_not_reached_lets_the_search_run_its_trials(tmp_path: Path) -> None:
    from cible.automl.search import search

    data = iris()
    plan = SearchPlan(task="classification", metric="accuracy", target="species", learners=("lgbm",),
                      max_iter=3, n_splits=3, exit_score=1.01)  # no accuracy reaches it
    result, _ = search(plan, data, log_file=tmp_path / "flaml.log")
    assert not result.stopped_early and len(result.trials) == 3 and result.best_metric < 1.01
