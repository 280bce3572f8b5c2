"""Azure's `featurization` on a pandas frame, as scikit-learn steps saved with the model: column purposes
(`column_name_and_types`: cast, or left out for Ignore, Hashes and AllNan) and imputers per column
(`transformer_params.imputer`). The rest of Azure's featurization (scaling, TF-IDF, hashing, its
encoders) is FLAML's own: it encodes categories and dates itself; what cannot be honoured is returned as
warnings, by name. The steps' functions are in this module, which the saved model carries by value
(search.py), so it loads where scikit-learn and FLAML do.
"""

from __future__ import annotations

from typing import Any

from cible.automl.names import snake

DROPPED = ("ignore", "hashes", "all_nan")


def cast_columns(X, purposes: dict[str, str]):  # noqa: ANN001, ANN201, N803
    """X with each column of `purposes` cast to it (Numeric, Categorical, DateTime …) or left out."""
    import pandas as pd

    X = X.drop(columns=[c for c, p in purposes.items() if p in DROPPED], errors="ignore")  # noqa: N806
    for column, purpose in purposes.items():
        if column not in X.columns:
            continue
        if purpose == "numeric":
            X[column] = pd.to_numeric(X[column], errors="coerce")
        elif purpose in ("categorical", "categorical_hash", "text"):
            X[column] = X[column].astype("string").astype("category")
        elif purpose == "datetime":
            X[column] = pd.to_datetime(X[column], errors="coerce")
    return X


def prepare(frame, featurization: dict[str, Any] | None, target: str, drop: tuple[str, ...] = ()):  # noqa: ANN001, ANN201
    """(X, y, the fitted featurizer or None, warnings) from `frame`: the target and the columns in `drop`
    (a weight column) split off, the featurizer's steps fitted on the rest and applied."""
    settings = featurization or {}
    mode = settings.get("mode", "auto")
    warnings: list[str] = []
    purposes = {column: snake(purpose) for column, purpose in (settings.get("column_name_and_types") or {}).items()}
    missing = [c for c in purposes if c not in frame.columns]
    if missing:
        raise ValueError(f"featurization.column_name_and_types: no column {', '.join(missing)} in the training data")
    warnings += [f"featurization.column_name_and_types.{c}: Text is featurized as a category (FLAML has no text "
                 "featurizer)" for c, p in purposes.items() if p == "text"]
    warnings += [f"featurization.blocked_transformers: {name} is not used by FLAML; nothing to block"
                 for name in settings.get("blocked_transformers") or []]
    params = settings.get("transformer_params") or {}
    warnings += [f"featurization.transformer_params.{name}: not honoured (FLAML encodes columns itself)"
                 for name in params if snake(name) != "imputer"]
    if mode == "off":
        warnings.append("featurization.mode: off: the columns go to FLAML as they are (it still encodes "
                        "categories and dates, which its learners need)")
    X = frame.drop(columns=[target, *drop], errors="ignore")  # noqa: N806
    y = frame[target]
    steps = []
    if purposes:
        from sklearn.preprocessing import FunctionTransformer

        steps.append(("cast", FunctionTransformer(cast_columns, kw_args={"purposes": purposes})))
    if mode == "custom":
        imputers, y = _imputers(params.get("imputer") or [], cast_columns(X, purposes), y, target)
        steps += [("impute", imputers)] if imputers is not None else []
    if not steps:
        return X, y, None, warnings
    from sklearn.pipeline import Pipeline

    featurizer = Pipeline(steps).set_output(transform="pandas")
    return featurizer.fit_transform(X), y, featurizer, warnings


def _imputers(params: list[dict[str, Any]], X, y, target: str):  # noqa: ANN001, ANN202, N803
    """A ColumnTransformer of SimpleImputers (pandas out, the other columns passed through) or None, and the
    target with its constant imputation. `ffill` (a forecasting strategy) is not a scikit-learn imputer:
    it is refused until forecasting comes."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    steps = []
    for index, param in enumerate(params):
        fields = [f for f in param["fields"] if f != target]
        missing = [f for f in fields if f not in X.columns]
        if missing:
            raise ValueError(f"featurization.transformer_params.imputer[{index}].fields: no column "
                             f"{', '.join(missing)} in the training data")
        options = dict(param.get("parameters") or {})
        strategy = str(options.get("strategy", "mean")).lower()
        if strategy == "ffill":
            raise ValueError(f"featurization.transformer_params.imputer[{index}].parameters.strategy: ffill is for "
                             "forecasting, which cible does not run yet")
        if fields:
            steps.append((f"impute{index}", SimpleImputer(strategy=strategy, fill_value=options.get("fill_value")),
                          fields))
        if target in param["fields"] and strategy == "constant":
            y = y.fillna(options.get("fill_value"))
    if not steps:
        return None, y
    return ColumnTransformer(steps, remainder="passthrough", verbose_feature_names_out=False), y
