"""One AutoML search through FLAML on small real datasets (scikit-learn's iris and diabetes): the best
learner among those allowed, every trial read back with Azure's metric, the metrics on validation and
test data, and the model saved as an MLflow model that loads without cible. Iterations, not seconds,
bound each search (max_iter), so the tests do not depend on the machine's speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flaml")

import pandas as pd  # noqa: E402
from sklearn.datasets import load_diabetes, load_iris  # noqa: E402

from cible.automl.search import SearchPlan, search  # noqa: E402


def iris() -> pd.DataFrame:
    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame["species"] = frame["species"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    return frame.sample(frac=1, random_state=0).reset_index(drop=True)


def test_a_classification_search_picks_among_the_allowed_learners_and_reads_every_trial(tmp_path: Path) -> None:
    data = iris()
    plan = SearchPlan(task="classification", metric="accuracy", target="species", learners=("lgbm", "rf"),
                      max_iter=4, n_splits=3)
    result, model = search(plan, data[:120], validation=None, test=data[120:], log_file=tmp_path / "flaml.log")
    assert result.best_learner in ("lgbm", "rf") and 0.8 <= result.best_metric <= 1.0
    assert len(result.trials) == 4 and {t["learner"] for t in result.trials} <= {"lgbm", "rf"}
    assert all(0 <= t["metric"] <= 1 for t in result.trials)
    assert result.test_metrics["accuracy"] >= 0.8 and "AUC_weighted" in result.test_metrics
    assert set(model.predict(data[120:].drop(columns="species"))) <= {"setosa", "versicolor", "virginica"}


def test_a_regression_search_reports_azures_normalised_metric(tmp_path: Path) -> None:
    data = load_diabetes(as_frame=True).frame
    plan = SearchPlan(task="regression", metric="normalized_root_mean_squared_error", target="target",
                      learners=("lgbm",), max_iter=3, validation_size=0.2,
                      featurization={"mode": "custom", "column_name_and_types": {"sex": "Categorical"},
                                     "transformer_params": {"imputer": [{"fields": ["bmi"],
                                                                         "parameters": {"strategy": "median"}}]}})
    frame = data.copy()
    frame.loc[:20, "bmi"] = None
    result, model = search(plan, frame[:350], validation=frame[350:], log_file=tmp_path / "flaml.log")
    assert 0 < result.best_metric < 0.5  # RMSE over the target's range
    assert set(result.validation_metrics) == {"r2_score", "spearman_correlation", "normalized_root_mean_squared_error",
                                              "normalized_mean_absolute_error"}
    assert len(model.predict(frame[350:].drop(columns="target"))) == len(frame) - 350


def test_the_trial_command_writes_its_results_and_an_mlflow_model_that_loads(tmp_path: Path) -> None:
    data = iris()
    for name, part in (("train", data[:120]), ("test", data[120:])):
        folder = tmp_path / name
        folder.mkdir()
        part.to_csv(folder / "rows.csv", index=False)
        (folder / "MLTable").write_text("paths:\n  - file: ./rows.csv\ntransformations:\n  - read_delimited\n")
    plan = tmp_path / "plan.json"
    plan.write_text(SearchPlan(task="classification", metric="AUC_weighted", target="species", learners=("lgbm",),
                               max_iter=2, n_splits=3).to_json())
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "cible.automl.trial", str(plan), str(tmp_path / "train"),
                           "--test", str(tmp_path / "test"), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["best_learner"] == "lgbm" and result["trials"] == 2 and result["test_metrics"]["AUC_weighted"] > 0.9
    assert len(json.loads((out / "trials.json").read_text())) == 2
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, mlflow.pyfunc, pandas as pd; "
        "sys.modules['cible'] = None; "  # any import of cible now fails: the model must not need it
        f"m = mlflow.pyfunc.load_model({str(out / 'best_model')!r}); "
        f"print(list(m.predict(pd.read_csv({str(tmp_path / 'test' / 'rows.csv')!r}).drop(columns='species'))[:2]))")],
        capture_output=True, text=True, timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert "setosa" in loaded.stdout or "versicolor" in loaded.stdout or "virginica" in loaded.stdout


def test_a_missing_target_column_ends_the_trial_naming_the_field(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    iris().to_csv(folder / "rows.csv", index=False)
    (folder / "MLTable").write_text("paths: [{file: rows.csv}]\n")
    plan = tmp_path / "plan.json"
    plan.write_text(SearchPlan(task="classification", metric="accuracy", target="label", learners=("lgbm",),
                               max_iter=1).to_json())
    done = subprocess.run([sys.executable, "-m", "cible.automl.trial", str(plan), str(folder), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert "target_column_name: no column 'label' in the training data" in done.stderr
