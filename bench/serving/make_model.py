"""The model and payloads of bench/serving.py (perf-anchors Appendix A `make_model.py`, `save_mlflow.py`):

    python bench/serving/make_model.py OUT

OUT/model/model_lr.joblib   LogisticRegression on make_classification(20000 x 20), saved with joblib
OUT/mlflow_lr/              the same estimator as an MLflow model (mlflow.sklearn, with a signature)
OUT/p1_data.json            {"data": [[20 floats]]}        (Azure's sample score.py envelope)
OUT/p1000_data.json         {"data": [[...] x 1000]}
OUT/p1_inputs.json          {"inputs": ...}, the same numbers (MLflow's envelope)
OUT/p1000_inputs.json

Prints one JSON line: what each step of a request costs in this process (median ms over repeats), so the
reader can see whether json.loads dominates a 1000-row request.
"""

import json
import statistics
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import orjson
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression


def cost_ms(fn, repeats: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def main(out: Path) -> None:
    (out / "model").mkdir(parents=True, exist_ok=True)
    X, y = make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    joblib.dump(model, out / "model" / "model_lr.joblib")
    rng = np.random.default_rng(1)
    rows = {1: rng.normal(size=(1, 20)).round(4).tolist(), 1000: rng.normal(size=(1000, 20)).round(4).tolist()}
    for n, data in rows.items():
        (out / f"p{n}_data.json").write_text(json.dumps({"data": data}))
        (out / f"p{n}_inputs.json").write_text(json.dumps({"inputs": data}))

    import mlflow.sklearn
    from mlflow.models import infer_signature

    sample = np.random.default_rng(0).normal(size=(5, 20))
    # pip_requirements given: inferring them imports every package in the venv (tens of seconds here).
    mlflow.sklearn.save_model(model, str(out / "mlflow_lr"), signature=infer_signature(sample, model.predict(sample)),
                              pip_requirements=["scikit-learn", "numpy", "joblib"])

    costs = {}
    for n in rows:
        raw = (out / f"p{n}_data.json").read_text()
        parsed = json.loads(raw)["data"]
        array = np.asarray(parsed)
        costs[f"{n} row(s)"] = {
            "body_bytes": len(raw), "json.loads": cost_ms(lambda: json.loads(raw)),
            "orjson.loads": cost_ms(lambda: orjson.loads(raw)), "np.array": cost_ms(lambda: np.array(parsed)),
            "predict": cost_ms(lambda: model.predict(array)),
            "predict + orjson.dumps": cost_ms(lambda: orjson.dumps(model.predict(array).tolist())),
        }
    print(json.dumps(costs))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
