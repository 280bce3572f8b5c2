"""The scoring script of a no-code MLflow batch deployment (azureml-spec §6.3), as Azure generates it:
`init()` loads the pyfunc model from AZUREML_MODEL_DIR/<model name>; `run()` reads each file (`.csv`
with pandas, `.parquet`/`.pqt` with pandas over pyarrow), predicts, and returns one DataFrame with Azure's
columns `row` (the row's index in its file), `prediction` and `file` (the file's name). Any other
extension fails the mini-batch with an error naming the file. mlflow and pandas are imported in init()."""

from __future__ import annotations

import os
from typing import Any

from cible.serving.mlflow_model import find_mlflow_model

READERS = {".csv": "csv", ".parquet": "parquet", ".pqt": "parquet"}


class MlflowBatchScorer:
    def __init__(self, model_dir: str, model_name: str | None = None) -> None:
        self.model_dir, self.model_name = model_dir, model_name
        self.model: Any = None

    def init(self) -> None:
        import mlflow.pyfunc

        path = find_mlflow_model(self.model_dir, self.model_name)
        self.model = mlflow.pyfunc.load_model(os.path.realpath(path))

    def run(self, mini_batch: list[str]) -> Any:
        import pandas as pd

        frames = []
        for path in mini_batch:
            name = os.path.basename(path)
            kind = READERS.get(os.path.splitext(name)[1].lower())
            if kind is None:
                raise ValueError(f"{name}: the MLflow batch driver reads .csv, .parquet and .pqt files only "
                                 f"(azureml-spec §6.3); this file's type is not supported")
            data = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
            predictions = _column(self.model.predict(data))
            frames.append(pd.DataFrame({"row": range(len(data)), "prediction": predictions, "file": name}))
        if not frames:
            return pd.DataFrame(columns=["row", "prediction", "file"])
        return pd.concat(frames, ignore_index=True)


def _column(predictions: Any) -> Any:
    """One value per row: a one-column frame's column, a 2-D result's rows as lists."""
    if hasattr(predictions, "columns"):
        return predictions.iloc[:, 0].to_numpy() if predictions.shape[1] == 1 else predictions.to_numpy().tolist()
    if hasattr(predictions, "to_numpy"):
        return predictions.to_numpy()
    if hasattr(predictions, "ndim") and predictions.ndim > 1:
        return predictions.tolist()
    return predictions
