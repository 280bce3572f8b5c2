"""AutoML: a `type: automl` job through cible against FLAML called directly in one process (the floor).

The same data (scikit-learn's make_classification: --rows rows, 20 features, 3 classes, seeded), the same
learners (LightGBM, RandomForest, XGBoost, ExtremeRandomTrees), the same metric (accuracy) and the same
validation (3-fold CV, Azure's rule for 1,000 to 20,000 rows), measured in the same run:

  floor  `flaml.AutoML().fit(...)` in this process, time_budget = the search budget cible gives FLAML for
         a job of limits.timeout_minutes = --minutes (the budget less a fifth, kept to save the model).
  cible  the job on `local`, its searches in the host's Python (CIBLE_AUTOML_ENVIRONMENT=host), MLflow
         tracking on: --concurrency 1 runs one search over the four learners, exactly the floor's
         work in a child job; 2 deals them into two searches that run at once (two processes).

Prints the best accuracy of each and their ratio (target: within 1%), the iterations each completed and
their ratio (target: cible >= 0.8x the floor's), and the wall times. The floor runs first, then cible, then
the floor again, so that other work on the machine weighs on both: the floor's numbers are the better of
its two runs.

    .venv/bin/python bench/automl.py [--rows 10000] [--minutes 1] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

LEARNERS = ("lgbm", "rf", "xgboost", "extra_tree")
ALGORITHMS = ("LightGBM", "RandomForest", "XGBoostClassifier", "ExtremeRandomTrees")


def dataset(rows: int):  # noqa: ANN201
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=20, n_informative=10, n_classes=3,  # noqa: N806
                               random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    return frame


def floor(frame, budget_s: float) -> tuple[float, int, float]:  # noqa: ANN001
    """(best accuracy, iterations, wall seconds) of FLAML in this process."""
    from flaml import AutoML

    from cible.automl.search import trials  # reads FLAML's log as cible's searches do: every iteration

    automl = AutoML()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "flaml.log"
        t0 = time.monotonic()
        automl.fit(frame.drop(columns="label"), frame["label"], task="classification", metric="accuracy",
                   estimator_list=list(LEARNERS), time_budget=budget_s, eval_method="cv", n_splits=3, seed=0,
                   n_jobs=-1, verbose=0, early_stop=True, log_type="all", log_file_name=str(log))
        wall = time.monotonic() - t0
        iterations = len(trials(log, "accuracy", None))
    return 1.0 - automl.best_loss, iterations, wall


def through_cible(frame, minutes: int, concurrency: int) -> tuple[float, int, float]:  # noqa: ANN001
    """(best accuracy, iterations, wall seconds) of an AutoML job."""
    root = Path(tempfile.mkdtemp(prefix="cible-bench-automl-"))
    data = root / "data.csv"
    frame.to_csv(data, index=False)
    os.environ.update(CIBLE_HOME=str(root / "home"), CIBLE_AUTOML_ENVIRONMENT="host", CIBLE_DEFAULT_COMPUTE="local",
                      CIBLE_TRACKING="1")
    from cible import MLClient

    ml = MLClient(home=root / "home")
    try:
        spec = {"type": "automl", "task": "classification", "primary_metric": "accuracy", "compute": "azureml:local",
                "target_column_name": "label", "training_data": {"type": "uri_file", "path": str(data)},
                "n_cross_validations": 3, "experiment_name": "bench-automl",
                "limits": {"timeout_minutes": minutes, "max_concurrent_trials": concurrency},
                "training": {"allowed_training_algorithms": list(ALGORITHMS)}}
        t0 = time.monotonic()
        job = ml.jobs.create_or_update(spec)
        done = ml.jobs.wait(job["name"], timeout=60 * minutes + 600)
        wall = time.monotonic() - t0
        assert done["status"] == "Completed", done.get("error")
        return done["best_trial"]["metric"], sum(t.get("iterations") or 0 for t in done["trials"]), wall
    finally:
        import subprocess

        subprocess.run([sys.executable, "-m", "cible", "server", "stop", "--home", str(root / "home")],
                       capture_output=True, timeout=60, check=False)
        ml.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    from cible.core.planning.automl import SAVE_MARGIN_S

    total = 60.0 * args.minutes
    budget = total - min(SAVE_MARGIN_S, 0.2 * total)
    frame = dataset(args.rows)
    first = floor(frame, budget)
    ours = through_cible(frame, args.minutes, args.concurrency)
    second = floor(frame, budget)
    best = max(first, second, key=lambda r: (r[1], r[0]))  # the floor at its best: the run with more iterations
    print(f"data: {args.rows} rows, 20 features, 3 classes; learners {', '.join(LEARNERS)}; search budget {budget:g} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"floor  FLAML in-process   accuracy {best[0]:.4f}  iterations {best[1]:4d}  wall {best[2]:6.1f} s"
          f"  (runs: {first[1]} and {second[1]} iterations)")
    print(f"cible  automl job (x{args.concurrency})   accuracy {ours[0]:.4f}  iterations {ours[1]:4d}  "
          f"wall {ours[2]:6.1f} s (submit to Completed)")
    print(f"ratio  accuracy cible/floor {ours[0] / best[0]:.4f} (target >= 0.99)   iterations cible/floor "
          f"{ours[1] / best[1]:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
