"""A job script: what Azure's examples do with a curated environment, for its MLflow flavour.

Run in the curated environment as `python mlflow_flavour.py <flavour>` (sklearn, lightgbm). For each
kind of model the flavour saves, it trains one on iris (bundled with scikit-learn: no download),
saves it with the flavour's save_model, loads it back, saves the loaded model again to a new path
(a re-save is where a serializer the environment lacks shows up) and serves that copy through
mlflow.pyfunc. Then, as Azure's example scripts do, it trains again under mlflow.autolog() and serves
the models autolog logged to the job's run. The last line is `RESULT <json>`, which the test reads.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from sklearn.datasets import load_iris


def sklearn_models(X, y):  # noqa: ANN001, N803
    from sklearn.linear_model import LogisticRegression

    return {"LogisticRegression": LogisticRegression(max_iter=1000).fit(X, y)}


def lightgbm_models(X, y):  # noqa: ANN001, N803
    import lightgbm as lgb

    # Both APIs, because MLflow stores them differently: a Booster (Azure's example trains one with
    # lgb.train) as LightGBM's own text file, the scikit-learn API's estimators like scikit-learn's.
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=5)
    return {"Booster": booster, "LGBMClassifier": lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(X, y)}


FLAVOURS = {"sklearn": sklearn_models, "lightgbm": lightgbm_models}


def same_predictions(model, served, X) -> bool:  # noqa: ANN001, N803
    return bool(np.allclose(np.asarray(model.predict(X)), np.asarray(served.predict(X))))


def round_trip(flavour: str, X, y, workdir: Path) -> dict:  # noqa: ANN001, N803
    module = importlib.import_module(f"mlflow.{flavour}")
    kinds = {}
    for kind, model in FLAVOURS[flavour](X, y).items():
        first, second = workdir / f"{kind}-saved", workdir / f"{kind}-resaved"
        module.save_model(model, str(first))
        loaded = module.load_model(str(first))
        module.save_model(loaded, str(second))
        served = mlflow.pyfunc.load_model(str(second))
        kinds[kind] = {
            "files": sorted(p.name for p in second.iterdir() if p.name.startswith("model")),
            "same_predictions": same_predictions(model, served, X),
        }
    return kinds


def autologged(flavour: str, X, y, run_id: str) -> dict:  # noqa: ANN001, N803
    mlflow.autolog()
    # Azure's examples fit once, and autolog resumes the job's run for it and ends it after that fit;
    # with more than one model (lightgbm's two APIs) the job's run is kept open for all of them.
    with mlflow.start_run(run_id=run_id):
        trained = FLAVOURS[flavour](X, y)
    logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'", output_format="list")
    served = [mlflow.pyfunc.load_model(f"models:/{m.model_id}") for m in logged]
    return {
        "models": len(logged),
        "all_serve": all(len(np.asarray(s.predict(X))) == len(X) for s in served),
        "trained": len(trained),
    }


def main() -> None:
    flavour = sys.argv[1]
    if flavour not in FLAVOURS:
        sys.exit(f"no models for the flavour {flavour!r}: add them to FLAVOURS in {__file__}")
    # Read before any run starts: MLflow takes MLFLOW_RUN_ID out of the environment when it resumes the run.
    run_id = os.environ["MLFLOW_RUN_ID"]
    X, y = load_iris(return_X_y=True, as_frame=True)  # noqa: N806
    with tempfile.TemporaryDirectory() as tmp:
        result = {"mlflow": mlflow.__version__, "round_trip": round_trip(flavour, X, y, Path(tmp))}
    result["autolog"] = autologged(flavour, X, y, run_id)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
