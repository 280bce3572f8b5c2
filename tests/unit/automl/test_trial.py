"""`python -m cible.automl.trial` as an AutoML job's child runs it: its plan from an environment variable,
its model at the top of the job's `best_model` output (even one an earlier attempt left files in)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("flaml")

from sklearn.datasets import load_iris  # noqa: E402

from cible.automl.search import SearchPlan  # noqa: E402


def test_the_plan_comes_from_the_environment_and_the_model_goes_to_the_top_of_its_folder(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    load_iris(as_frame=True).frame.to_csv(data, index=False)
    model = tmp_path / "best_model"
    (model / "old").mkdir(parents=True)
    (model / "old" / "left.txt").write_text("an earlier attempt's file")
    plan = SearchPlan(task="classification", metric="accuracy", target="target", learners=("lgbm",), max_iter=2,
                      n_splits=3)
    env = {**os.environ, "THE_PLAN": plan.to_json()}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run([sys.executable, "-m", "cible.automl.trial", "env:THE_PLAN", str(data), "--out",
                           str(tmp_path / "out"), "--model", str(model)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["best_learner"] == "lgbm"
    assert (model / "MLmodel").is_file() and not (model / "old").exists()
    assert not (tmp_path / "out" / "best_model").exists()


def test_a_plan_variable_that_is_not_set_is_a_bad_input(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_PLAN"}
    done = subprocess.run([sys.executable, "-m", "cible.automl.trial", "env:NO_SUCH_PLAN", str(tmp_path), "--out",
                           str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "plan: the environment variable NO_SUCH_PLAN is not set" in done.stderr
