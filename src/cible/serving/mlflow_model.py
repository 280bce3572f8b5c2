"""No-code MLflow deployment: an MLflow model served without a scoring script (azureml-spec §11.5 item 22).

`init()` loads the model with `mlflow.pyfunc.load_model` from the model folder; each request's JSON
body is turned into the model's input the way Azure's generated MLflow scoring script does, and the
predictions are answered as JSON (a DataFrame as its records, an array as a list).

Accepted bodies (`params`, when present, goes to `predict(params=...)`):
- `{"input_data": {"columns": [...], "index": [...], "data": [[...]]}}`  pandas "split" (index optional)
- `{"input_data": [{"a": 1, "b": 2}, ...]}`                             records
- `{"input_data": {"a": [1, 2], "b": [3, 4]}}`                          a dataframe by columns (named
  tensors for a tensor-signature model)
- `{"input_data": [[...], ...]}`                                        rows: an array, or a DataFrame
  with the signature's column names when the model's signature is column-based
- MLflow's own serving keys: `dataframe_split`, `dataframe_records`, `inputs`, `instances`.

A body that is not JSON, has none of these keys, or does not fit the model's signature is a 400
naming the problem; an error inside `predict` is Azure's 500. numpy, pandas and mlflow are imported
here only, when the model is loaded.
"""

from __future__ import annotations

import os
from typing import Any

from cible.serving import codec
from cible.serving.script import BadInput

INPUT_KEYS = ("input_data", "dataframe_split", "dataframe_records", "inputs", "instances")


class MlflowModel:
    """The scorer of an MLflow model (see cible.serving.script.Scorer)."""

    mode = "mlflow"
    run = None

    def __init__(self, model_dir: str, model_name: str | None = None) -> None:
        self.model_dir, self.model_name = model_dir, model_name
        self.path: str | None = None
        self.model: Any = None
        self._columns: list[str] | None = None  # a column-based signature's input names
        self._tensor = False

    def init(self) -> None:
        import mlflow.pyfunc

        self.path = find_mlflow_model(self.model_dir, self.model_name)
        # the real path: MLflow refuses a model folder that is a link resolving elsewhere
        self.model = mlflow.pyfunc.load_model(os.path.realpath(self.path))
        schema = self.model.metadata.get_input_schema()
        if schema is not None:
            self._tensor = schema.is_tensor_spec()
            names = schema.input_names() if not self._tensor else []
            self._columns = [str(name) for name in names] or None

    def describe(self) -> str:
        return f"{self.path or self.model_dir} (mlflow)"

    def score(self, body: bytes) -> Any:
        try:
            payload = codec.loads(body)
        except ValueError as exc:
            raise BadInput(f"The request body is not valid JSON: {exc}") from None
        model_input, params = self.model_input(payload)
        from mlflow.exceptions import MlflowException

        try:
            return self.model.predict(model_input, params=params) if params else self.model.predict(model_input)
        except MlflowException as exc:  # the signature's enforcement: the input does not fit the model
            raise BadInput(exc.message) from None

    def model_input(self, payload: Any) -> tuple[Any, dict[str, Any] | None]:
        """The model's input and `params` from a parsed body (BadInput when it has no known shape)."""
        if isinstance(payload, str):  # Azure's script accepts a JSON document sent as a JSON string
            try:
                payload = codec.loads(payload)
            except ValueError:
                pass
        if not isinstance(payload, dict) or not any(key in payload for key in INPUT_KEYS):
            raise BadInput(f"The request body must be a JSON object with one of the keys {', '.join(INPUT_KEYS)}.")
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            raise BadInput("'params' must be a JSON object.")
        import pandas as pd

        try:
            if "input_data" in payload:
                return self._from_input_data(payload["input_data"]), params
            if "dataframe_split" in payload:
                return _split_frame(payload["dataframe_split"], "dataframe_split"), params
            if "dataframe_records" in payload:
                return pd.DataFrame.from_records(payload["dataframe_records"]), params
            key = "inputs" if "inputs" in payload else "instances"
            return self._tensors(payload[key]), params
        except BadInput:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise BadInput(f"The input cannot be read as the model's input: {exc}") from None

    def _from_input_data(self, data: Any) -> Any:
        import pandas as pd

        if isinstance(data, str):
            data = codec.loads(data)
        if isinstance(data, dict):
            if "data" in data and ("columns" in data or "index" in data):
                return _split_frame(data, "input_data")
            if self._tensor:
                return self._tensors(data)
            if all(not isinstance(value, (list, dict)) for value in data.values()):
                return pd.DataFrame([data])  # one row given as {column: value}
            return pd.DataFrame(data)
        if isinstance(data, list):
            if data and all(isinstance(row, dict) for row in data):
                return pd.DataFrame.from_records(data)
            if self._columns and data and all(isinstance(row, list) for row in data):
                return pd.DataFrame(data, columns=self._columns)
            return self._tensors(data)
        raise BadInput("'input_data' must be a list of rows or records, or an object (split or columns).")

    def _tensors(self, value: Any) -> Any:
        import numpy as np

        if isinstance(value, dict):
            return {name: np.asarray(item) for name, item in value.items()}
        if self._columns and isinstance(value, list) and value and all(isinstance(row, list) for row in value):
            import pandas as pd

            return pd.DataFrame(value, columns=self._columns)
        return np.asarray(value)


def _split_frame(value: Any, key: str) -> Any:
    import pandas as pd

    if not isinstance(value, dict) or "data" not in value:
        raise BadInput(f"'{key}' in the split form needs 'data' (and 'columns', optionally 'index').")
    return pd.DataFrame(data=value["data"], columns=value.get("columns"), index=value.get("index"))


def find_mlflow_model(model_dir: str, model_name: str | None = None) -> str:
    """The folder holding the MLflow model (its MLmodel file): the model dir itself, its `model_name` or
    MLFLOW_MODEL_FOLDER subfolder (Azure's variable), or the one MLmodel found a few levels down."""
    if not model_dir or not os.path.isdir(model_dir):
        raise FileNotFoundError(f"The model folder {model_dir or '(AZUREML_MODEL_DIR unset)'} does not exist.")
    candidates = [model_dir]
    for sub in (model_name, os.environ.get("MLFLOW_MODEL_FOLDER")):
        if sub:
            candidates.insert(0, os.path.join(model_dir, sub))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "MLmodel")):
            return folder
    found = []
    base_depth = model_dir.rstrip(os.sep).count(os.sep)
    for folder, dirs, files in os.walk(model_dir, followlinks=True):
        if "MLmodel" in files:
            found.append(folder)
            dirs[:] = []
        elif folder.count(os.sep) - base_depth >= 3:
            dirs[:] = []
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"No MLflow model (an MLmodel file) under {model_dir}.")
    raise FileNotFoundError(f"Several MLflow models under {model_dir} ({', '.join(sorted(found))}): "
                            "set MLFLOW_MODEL_FOLDER to the one to serve.")
