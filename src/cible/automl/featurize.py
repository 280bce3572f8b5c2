"""Azure's `featurization` on a pandas frame, as scikit-learn steps saved with the model: column purposes
(`column_name_and_types`: cast, or left out for Ignore, Hashes and AllNan) and imputers per column
(`transformer_params.imputer`). The rest of Azure's featurization (scaling, TF-IDF, hashing, its
encoders) is FLAML's own: it encodes categories and dates itself; what cannot be honoured is returned as
warnings, by name. The steps' functions are in this module, which the saved model carries by value
(search.py), so it loads where scikit-learn and FLAML do; so is the forecasting model (`Forecaster`) and
the target's lag and rolling-window columns it computes (`lookback`), for the same reason (forecast.py
plans and fits it).
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
    it is refused (forecasting fills only the periods missing from a series forward, forecast.py)."""
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
            raise ValueError(f"featurization.transformer_params.imputer[{index}].parameters.strategy: ffill is not "
                             "supported by cible; use mean, median, most_frequent or constant")
        if fields:
            steps.append((f"impute{index}", SimpleImputer(strategy=strategy, fill_value=options.get("fill_value")),
                          fields))
        if target in param["fields"] and strategy == "constant":
            y = y.fillna(options.get("fill_value"))
    if not steps:
        return None, y
    return ColumnTransformer(steps, remainder="passthrough", verbose_feature_names_out=False), y


def timestamps(values):  # noqa: ANN001, ANN201
    """`values` as naive datetime64[ns] (a time zone converted to UTC first); what is no timestamp is NaT.
    pandas reads a column in the format of its first value: the values that one misses are read each in
    its own format."""
    import pandas as pd

    raw = pd.Series(values).reset_index(drop=True)
    stamps = pd.Series(pd.to_datetime(raw, errors="coerce"))
    missed = stamps.isna() & raw.notna()
    if missed.any() and getattr(stamps.dt, "tz", None) is None:
        stamps[missed] = pd.to_datetime(raw[missed], errors="coerce", format="mixed")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert(None)
    return stamps.astype("datetime64[ns]").to_numpy()


def lookback(frame, history, spec: dict[str, Any]):  # noqa: ANN001, ANN201
    """The target's past for each row of `frame`, from `history` (the id columns, the time column and the
    target of the rows known): `<target>_lag<k>`, its value k - 1 periods before the row's forecast origin,
    and `<target>_rolling_mean<w>`, its mean over the w periods that end at the origin. The origin is
    `horizon` periods before the row, so every column is known for each step of the horizon (a value
    missing from the history is NaN)."""
    import warnings

    import numpy as np
    import pandas as pd

    time, ids, target = spec["time_column"], list(spec["ids"]), spec["target"]
    lags, window, horizon = spec["lags"], spec["window"], spec["horizon"]
    if not lags and not window:
        return pd.DataFrame(index=frame.index)
    offset = pd.tseries.frequencies.to_offset(spec["frequency"])
    known = history.dropna(subset=[target]).drop_duplicates([*ids, time], keep="last").set_index([*ids, time])[target]
    when = pd.DatetimeIndex(frame[time])

    def back(periods: int):  # noqa: ANN202
        moment = (when - periods * offset).astype("datetime64[ns]")
        index = pd.MultiIndex.from_arrays([*(frame[c].to_numpy() for c in ids), moment]) if ids else moment
        return known.reindex(index).to_numpy(dtype=float)

    columns = {f"{target}_lag{k}": back(horizon + k - 1) for k in lags}
    if window:
        with warnings.catch_warnings():  # a row with no known value in its window is NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            columns[f"{target}_rolling_mean{window}"] = np.nanmean(
                np.stack([back(horizon + j) for j in range(window)]), axis=0)
    return pd.DataFrame(columns, index=frame.index)


class Forecaster:
    """A forecasting model: the featurizer's steps (or None), then the time column parsed, the id columns
    as text, the target's lag and rolling-window columns from `history` (`lookback`), then FLAML's AutoML.
    `spec`: time_column, ids, target, frequency (a pandas alias), horizon, lags, window, `columns` (FLAML's
    input, in order), `dropped` (columns left out of the input) and `panel` (several series: one regression
    model; else one series that FLAML's time-series learners forecast from the end of its history)."""

    def __init__(self, spec: dict[str, Any], featurizer, history, automl=None) -> None:  # noqa: ANN001
        self.spec, self.featurizer, self.history, self.automl = spec, featurizer, history, automl

    def prepare(self, X):  # noqa: ANN001, ANN201, N803
        """X with the featurizer's steps applied, the time column parsed and the id columns as text."""
        X = X.drop(columns=[c for c in (self.spec["target"], *self.spec["dropped"]) if c in X.columns])  # noqa: N806
        X = self.featurizer.transform(X) if self.featurizer is not None else X.copy()  # noqa: N806
        return self.normalise(X)

    def normalise(self, X):  # noqa: ANN001, ANN201, N803
        X[self.spec["time_column"]] = timestamps(X[self.spec["time_column"]])
        for column in self.spec["ids"]:
            X[column] = X[column].astype(str)
        return X

    def features(self, X):  # noqa: ANN001, ANN201, N803
        """FLAML's input for the prepared rows X."""
        import pandas as pd

        X = pd.concat([X, lookback(X, self.history, self.spec)], axis=1)  # noqa: N806
        return X[self.spec["columns"]]

    def predict(self, X):  # noqa: ANN001, ANN201, N803
        import numpy as np
        import pandas as pd

        X = self.prepare(X)  # noqa: N806
        time = self.spec["time_column"]
        if X[time].isna().any():
            raise ValueError(f"{time}: {int(X[time].isna().sum())} values are not timestamps")
        if self.spec["panel"]:
            return np.asarray(self.automl.predict(self.features(X)), dtype=float)
        # One series: FLAML forecasts the periods that follow its history, in order; the rows asked for are
        # put on that grid (a period between them takes the features of the next row given).
        offset = pd.tseries.frequencies.to_offset(self.spec["frequency"])
        end = self.history[time].max()
        if (X[time] <= end).any():
            raise ValueError(f"{time}: {X[time].min()} is not after the end of the training data ({end}); the model "
                             "forecasts the periods that follow it")
        grid = pd.date_range(end + offset, X[time].max(), freq=offset).astype("datetime64[ns]")
        if not X[time].isin(grid).all():
            raise ValueError(f"{time}: {X.loc[~X[time].isin(grid), time].iloc[0]} is not on the "
                             f"{self.spec['frequency']} grid that follows the training data (from {grid[0]})")
        future = X.drop_duplicates(time).set_index(time).reindex(grid).bfill().ffill().rename_axis(time).reset_index()
        predicted = pd.Series(np.asarray(self.automl.predict(self.features(future)), dtype=float), index=grid)
        return predicted.reindex(X[time]).to_numpy()
