"""Azure's `task: forecasting` as one FLAML search. The plan's `forecasting` holds Azure's settings as
spec.ForecastingSettings dumps them; `settings` reads them, and warns, by name, about each one cible does
not honour.

One series (no `time_series_id_column_names`): FLAML's `ts_forecast` task, `period` = forecast_horizon,
the time column first. FLAML's learners for it: lgbm, rf, xgboost, xgb_limitdepth, extra_tree, lassolars,
catboost (each makes the target's lags itself, with a model per step of the horizon) and arima, sarimax,
holt-winters, naive, snaive, avg, savg (statsmodels) and prophet, where those packages are installed. FLAML
needs a regular series: periods missing from it are inserted, their values carried forward (a warning
counts them).

Several series: FLAML's `ts_forecast_panel` runs only its temporal fusion transformer (pytorch-forecasting),
so cible fits one `regression` model for all the series, as Azure does for its machine-learning learners:
the id columns are categorical features, FLAML expands the time column into calendar features. The learners
that forecast one series at a time (arima … prophet) are left out, with a warning.

`target_lags` and `target_rolling_window_size` are columns made per series from the target's history
(featurize.lookback), relative to the forecast origin `forecast_horizon` periods before each row: lag k is
the target H + k - 1 periods back, the window the w periods that end H periods back, so each is known for
the whole horizon. (Azure makes a row per time and step of the horizon, each step with its own origin;
cible's columns are Azure's for the last step.) A single integer is one lag; `auto` is lag 1.

Validation is rolling-origin, as Azure's: each fold predicts the forecast_horizon periods after a cut-off
from the data before it; the cut-offs are cv_step_size periods apart (default: the horizon), the last one
a horizon before the end. `n_cross_validations` folds, else 3 (fewer where the data are short, then the
last horizon held out). One series uses FLAML's own split (TimeSeriesSplit, test_size = period); several
use the same folds, on the time column. `validation_data` follows the training data and is the holdout;
the final model is then refitted on both (FLAML does not when it is given one). `validation_data_size`:
the last horizon is held out instead (warned). FLAML's time-series cross-validation divides the time budget
among the folds and fails without one: a plan bounded by max_iter alone gives it a week.

Metrics are Azure's regression metrics (metrics.custom_metric, so every trial logs them all), normalised by
the training target's range (Azure normalises per series and averages them; cible over all the series).

The model (featurize.Forecaster) predicts from a frame with the time column, the id columns and the
features: several series each from its own history; one series for the periods after its training data
(FLAML forecasts from there).
"""

from __future__ import annotations

import importlib.util
import re
import warnings as python_warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cible.automl import featurize
from cible.automl.metrics import custom_metric, scores
from cible.automl.names import METRICS
from cible.automl.names import metric as metric_named
from cible.automl.search import SearchPlan, SearchResult, flaml_settings, forget, metric_value, run, trials

DEFAULT_HORIZON = 1  # forecast_horizon: auto (Azure's default horizon)
DEFAULT_FOLDS = 3  # rolling-origin folds when neither validation_data nor n_cross_validations is given
AUTO_LAGS = (1,)  # target_lags: auto
AZURE_METRICS = frozenset(m.azure for m in METRICS["forecasting"])
MIN_TRAIN = 4  # rows FLAML's time-series learners need beyond the horizon to learn from
NO_BUDGET_S = 7 * 24 * 3600  # FLAML's time-series cross-validation divides the time budget: it needs one
# The learners that forecast one series at a time, and what each needs beyond FLAML
ONE_SERIES = {"arima": "statsmodels", "sarimax": "statsmodels", "holt-winters": "statsmodels",
              "naive": "statsmodels", "snaive": "statsmodels", "avg": "statsmodels", "savg": "statsmodels",
              "prophet": "prophet"}
NEEDS = {**ONE_SERIES, "lgbm": "lightgbm", "xgboost": "xgboost", "xgb_limitdepth": "xgboost", "catboost": "catboost",
         "tft": "pytorch_forecasting", "orbit": "orbit"}
HONOURED = ("time_column_name", "forecast_horizon", "time_series_id_column_names", "frequency", "target_lags",
            "target_rolling_window_size", "cv_step_size", "features_unknown_at_forecast_time")
WHY_NOT = {"feature_lags": "cible makes no lags of the features",
           "seasonality": "FLAML's seasonal learners search their season themselves",
           "short_series_handling_config": "every series is used as it is",
           "target_aggregate_function": "the data are not aggregated; each timestamp must be on the frequency's grid",
           "country_or_region_for_holidays": "cible makes no holiday features",
           "use_stl": "cible makes no STL decomposition"}
# pandas 2.2 renamed these aliases and pandas 3 refuses the old ones, which Azure's examples use
_ALIASES = {"H": "h", "BH": "bh", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns", "M": "ME", "BM": "BME",
            "SM": "SME", "Q": "QE", "BQ": "BQE", "A": "YE", "Y": "YE", "BA": "BYE", "BY": "BYE"}


@dataclass(frozen=True)
class Settings:
    time_column: str
    horizon: int
    ids: tuple[str, ...] = ()
    frequency: str | None = None  # a pandas alias
    lags: tuple[int, ...] = ()
    window: int | None = None
    cv_step: int | None = None
    unknown: tuple[str, ...] = ()  # features_unknown_at_forecast_time


def settings(raw: dict[str, Any] | None) -> tuple[Settings, list[str]]:
    """What cible uses of Azure's `forecasting` settings, and a warning for each one it does not honour."""
    raw = {k: v for k, v in (raw or {}).items() if v is not None}
    warnings: list[str] = []
    time_column = raw.get("time_column_name")
    if not isinstance(time_column, str) or not time_column:
        raise ValueError("forecasting.time_column_name: a forecasting task needs the name of its time column")
    horizon = raw.get("forecast_horizon", DEFAULT_HORIZON)
    if horizon == "auto":
        horizon = DEFAULT_HORIZON
        warnings.append(f"forecasting.forecast_horizon: auto is {DEFAULT_HORIZON} period here (Azure's default "
                        "horizon); give a number of periods to forecast more")
    lags = raw.get("target_lags")
    if lags == "auto":
        warnings.append("forecasting.target_lags: auto is lag 1 here (the target at the forecast origin); Azure "
                        "picks lags from the series' autocorrelation")
        lags = list(AUTO_LAGS)
    window = raw.get("target_rolling_window_size")
    if window == "auto":
        warnings.append("forecasting.target_rolling_window_size: auto is not honoured (Azure picks a size from the "
                        "data); give a number of periods")
        window = None
    step = raw.get("cv_step_size")
    if step == "auto":
        warnings.append("forecasting.cv_step_size: auto steps by the forecast horizon here")
        step = None
    ids, unknown = _names(raw.get("time_series_id_column_names")), _names(raw.get("features_unknown_at_forecast_time"))
    if unknown:
        warnings.append(f"forecasting.features_unknown_at_forecast_time: {', '.join(unknown)} left out of the "
                        "features (Azure uses their lags; cible does not)")
    for key, value in raw.items():
        if key not in HONOURED and str(value).lower() != "none":
            why = f" ({WHY_NOT[key]})" if key in WHY_NOT else ""
            warnings.append(f"forecasting.{key}: {value} is not honoured{why}")
    return Settings(
        time_column=time_column, horizon=_whole(horizon, "forecast_horizon"), ids=ids,
        frequency=pandas_frequency(raw["frequency"]) if "frequency" in raw else None,
        lags=tuple(sorted({_whole(k, "target_lags") for k in (lags if isinstance(lags, list) else [lags])}))
        if lags is not None else (),
        window=_whole(window, "target_rolling_window_size") if window is not None else None,
        cv_step=_whole(step, "cv_step_size") if step is not None else None, unknown=unknown), warnings


def pandas_frequency(frequency: Any) -> str:
    """Azure's `frequency` (a pandas offset alias, old spellings such as H and M too) as this pandas spells it."""
    import pandas as pd

    match = re.fullmatch(r"(\d*)([A-Za-z]+)(-\w+)?", str(frequency).strip())
    candidates = [str(frequency).strip()]
    if match and match[2] in _ALIASES:
        candidates.append(f"{match[1]}{_ALIASES[match[2]]}{match[3] or ''}")
    for candidate in candidates:
        try:
            return pd.tseries.frequencies.to_offset(candidate).freqstr
        except ValueError:
            continue
    raise ValueError(f"forecasting.frequency: '{frequency}' is not a pandas frequency (e.g. D, h, W-THU, MS)")


def available(panel: bool) -> frozenset[str]:
    """FLAML's forecasting learners that run here: its time-series ones for one series, its regression ones
    for several (`panel`), less those whose package is not installed."""
    from flaml.automl.task.factory import task_factory

    names = task_factory("regression" if panel else "ts_forecast").estimators
    return frozenset(n for n in names if not (panel and n in ONE_SERIES)
                     and (n not in NEEDS or importlib.util.find_spec(NEEDS[n]) is not None))


def search(plan: SearchPlan, training, validation=None, test=None,  # noqa: ANN001, ANN201
           log_file: Path | None = None):
    """(SearchResult, featurize.Forecaster) for a forecasting plan on these pandas frames."""
    s, warnings = settings(plan.forecasting)
    if plan.cv_split_columns:
        raise ValueError("cv_split_column_names: not supported for forecasting; use n_cross_validations or "
                         "validation_data")
    _columns(plan, s, training, "training", (plan.weight_column, *s.unknown))
    for frame, where in ((validation, "validation"), (test, "test")):
        if frame is not None:
            _columns(plan, s, frame, where, ())
    if plan.weight_column:
        warnings.append("weight_column_name: not honoured for forecasting (FLAML's time-series learners take no "
                        "weights); the column is left out")
    panel = bool(s.ids)
    learners, more = _learners(plan.learners, panel)
    warnings += more
    training = _known(training, plan.target, "training", warnings)
    dropped = tuple(c for c in (plan.weight_column, *s.unknown) if c)
    X, y, featurizer, more = featurize.prepare(training, plan.featurization, plan.target, dropped)  # noqa: N806
    warnings += more
    spec = {"time_column": s.time_column, "ids": list(s.ids), "target": plan.target, "horizon": s.horizon,
            "lags": list(s.lags), "window": s.window, "dropped": list(dropped), "panel": panel}
    model = featurize.Forecaster(spec, featurizer, None)
    data = _timed(model.normalise(X.copy()), training[s.time_column], s, "training").assign(**{plan.target: y})
    spec["frequency"] = s.frequency or _infer(data, s)
    _on_grid(data, s, spec["frequency"], "training")
    y_range = float(y.max() - y.min())
    data, n_train = _with_validation(model, data, validation, plan, s, warnings)
    if not panel:
        end = data[s.time_column].iloc[n_train - 1]
        data, filled = _regular(data, s.time_column, spec["frequency"])
        n_train = int((data[s.time_column] <= end).sum())
        if filled:
            warnings.append(f"forecasting.frequency: {filled} periods missing from the {spec['frequency']} series "
                            "were inserted, their values carried forward")
    model.history = data[[*s.ids, s.time_column, plan.target]]
    extra = featurize.lookback(data.head(1), model.history, spec)  # its columns' names
    given = [c for c in data.columns if c not in (s.time_column, *s.ids, plan.target)]
    spec["columns"] = [s.time_column, *s.ids, *given, *extra.columns]
    features, target = model.features(data), data[plan.target]
    metric = custom_metric("regression", metric_named("forecasting", plan.metric), y_range)
    fit = {**flaml_settings(plan, log_file), "estimator_list": learners, "metric": metric}
    if panel:
        fit.update(task="regression", **_folds(data, s, spec["frequency"], plan, n_train, warnings))
        automl, stopped, more = run(plan, features, target, fit)
        final = automl
    else:
        fit.update(task="ts_forecast", period=s.horizon, time_col=s.time_column,
                   **_ts_validation(plan, s, n_train, len(data), warnings))
        if fit["eval_method"] == "cv" and plan.time_budget_s is None:
            fit.update(time_budget=NO_BUDGET_S, max_iter=plan.max_iter or len(learners))
        if n_train < len(data):
            fit.update(X_val=features[n_train:], y_val=target[n_train:])
        automl, stopped, more = run(plan, features[:n_train], target[:n_train], fit)
        final = _refit(automl, features, target, fit) if n_train < len(data) and automl.best_estimator else automl
    model.automl = final
    model.history = model.history.groupby(list(s.ids), sort=False).tail(_lookback(s)) if panel \
        else model.history.tail(_lookback(s))
    result = SearchResult(best_learner=automl.best_estimator, best_config=dict(automl.best_config or {}),
                          best_metric=metric_value(plan.metric, automl.best_loss, None)
                          if automl.best_estimator else None,
                          trials=trials(log_file, plan.metric, None) if log_file else [],
                          warnings=[*warnings, *more], stopped_early=stopped)
    if validation is not None and automl.best_estimator:
        logged = (automl.metrics_for_best_config or (None, {}))[1] or {}
        result.validation_metrics = {k: float(v) for k, v in logged.items() if k in AZURE_METRICS}
    if test is not None and automl.best_estimator:
        test = _known(test, plan.target, "test", result.warnings)
        try:
            predicted = model.predict(test)
        except ValueError as exc:
            raise ValueError(f"test_data: {exc}") from None
        result.test_metrics = scores("forecasting", test[plan.target], predicted, y_range=y_range)
    return result, model


def _names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"forecasting.{key}: {value!r} is not a whole number of periods (1 or more)")
    return value


def _lookback(s: Settings) -> int:
    """The rows of each series' history a forecast needs: its end, and what the lags and window reach."""
    return s.horizon + max([*s.lags, s.window or 0, 1])


def _columns(plan: SearchPlan, s: Settings, frame, where: str, more: tuple) -> None:  # noqa: ANN001
    named = [(plan.target, "target_column_name"), (s.time_column, "forecasting.time_column_name"),
             *((c, "forecasting.time_series_id_column_names") for c in s.ids),
             *((c, "weight_column_name" if c == plan.weight_column else "forecasting.features_unknown_at_forecast_time")
               for c in more if c)]
    for column, name in named:
        if column not in frame.columns:
            raise ValueError(f"{name}: no column '{column}' in the {where} data (its columns: "
                             f"{', '.join(map(str, frame.columns))})")


def _known(frame, target: str, where: str, warnings: list[str]):  # noqa: ANN001, ANN202
    """The rows of `frame` with a target value, its index reset."""
    missing = frame[target].isna()
    if missing.any():
        warnings.append(f"target_column_name: {int(missing.sum())} rows of the {where} data have no {target} value "
                        "and are left out")
    return frame[~missing].reset_index(drop=True)


def _timed(data, raw, s: Settings, where: str):  # noqa: ANN001, ANN202
    """`data` (its time column parsed) once every row has a timestamp; `raw`: the column as it was given."""
    bad = data[s.time_column].isna().to_numpy()
    if bad.any():
        raise ValueError(f"forecasting.time_column_name: {int(bad.sum())} values of '{s.time_column}' in the {where} "
                         f"data are not timestamps (e.g. {raw[bad].iloc[0]!r})")
    return data


def _series(data, s: Settings):  # noqa: ANN001, ANN202
    return data.groupby(list(s.ids), sort=False) if s.ids else [((), data)]


def _infer(data, s: Settings) -> str:  # noqa: ANN001
    """The frequency of the first series whose timestamps pandas can read one from."""
    import pandas as pd

    for _, series in _series(data, s):
        stamps = pd.DatetimeIndex(series[s.time_column].drop_duplicates().sort_values())
        if len(stamps) >= 3:
            with python_warnings.catch_warnings():
                python_warnings.simplefilter("ignore")
                found = pd.infer_freq(stamps)
            if found:
                return pd.tseries.frequencies.to_offset(found).freqstr
    raise ValueError(f"forecasting.frequency: no frequency can be read from '{s.time_column}' (no series has three "
                     "or more evenly spaced timestamps); give forecasting.frequency")


def _on_grid(data, s: Settings, frequency: str, where: str) -> None:  # noqa: ANN001
    """Each (series, time) at most once, and each series' timestamps whole periods apart."""
    import pandas as pd

    repeated = data.duplicated([*s.ids, s.time_column]).to_numpy()
    if repeated.any():
        when = data.loc[repeated, s.time_column].iloc[0]
        if s.ids:
            raise ValueError(f"forecasting.time_series_id_column_names: the {where} data has several rows for one "
                             f"series at {when}; give the columns that tell the series apart")
        raise ValueError(f"forecasting.time_column_name: the {where} data has several rows at {when}; several series "
                         "need forecasting.time_series_id_column_names")
    for key, series in _series(data, s):
        stamps = series[s.time_column]
        grid = pd.date_range(stamps.min(), stamps.max(), freq=frequency).astype("datetime64[ns]")
        off = ~stamps.isin(grid).to_numpy()
        if off.any():
            name = f" (series {key})" if s.ids else ""
            raise ValueError(f"forecasting.frequency: {stamps[off].iloc[0]} in the {where} data{name} is not on the "
                             f"{frequency} grid from {stamps.min()}; a series' timestamps must be whole periods apart")


def _learners(learners: tuple[str, ...], panel: bool) -> tuple[list[str], list[str]]:
    runnable = available(panel)
    kept = [n for n in learners if n in runnable]
    one_series = [n for n in learners if panel and n in ONE_SERIES]
    missing = [n for n in learners if n not in kept and n not in one_series]
    warnings = []
    if one_series:
        warnings.append(f"training: {', '.join(one_series)} forecast one series at a time; with "
                        "time_series_id_column_names cible fits one model for all the series and leaves them out")
    if missing:
        needs = sorted({NEEDS[n] for n in missing if n in NEEDS})
        warnings.append(f"training: {', '.join(missing)} cannot forecast here"
                        + (f" ({', '.join(needs)} not installed)" if needs else "") + "; left out")
    if not kept:
        raise ValueError(f"training.allowed_training_algorithms: none of {', '.join(learners) or 'the learners'} can "
                         f"forecast here; these can: {', '.join(sorted(runnable))}")
    return kept, warnings


def _with_validation(model, data, validation, plan: SearchPlan, s: Settings,  # noqa: ANN001, ANN202
                     warnings: list[str]):
    """(training then validation rows, how many are training's): validation_data must follow the training."""
    import pandas as pd

    if not s.ids:
        data = data.sort_values(s.time_column).reset_index(drop=True)
    if validation is None:
        return data, len(data)
    validation = _known(validation, plan.target, "validation", warnings)
    rows = _timed(model.prepare(validation), validation[s.time_column], s, "validation")
    rows[plan.target] = validation[plan.target].to_numpy()
    if not s.ids:
        if rows[s.time_column].min() <= data[s.time_column].max():
            raise ValueError(f"validation_data: a forecast's validation must follow its training data; "
                             f"'{s.time_column}' starts at {rows[s.time_column].min()}, the training data ends at "
                             f"{data[s.time_column].max()}")
        rows = rows.sort_values(s.time_column)
    both = pd.concat([data, rows[data.columns]], ignore_index=True)
    _on_grid(both, s, model.spec["frequency"], "training and validation")
    return both, len(data)


def _regular(data, time: str, frequency: str):  # noqa: ANN001, ANN202
    """One series on its frequency's full grid, missing periods carried forward; and how many were missing."""
    import pandas as pd

    grid = pd.date_range(data[time].iloc[0], data[time].iloc[-1], freq=frequency).astype("datetime64[ns]")
    if len(grid) == len(data):
        return data, 0
    full = data.set_index(time).reindex(grid).ffill().rename_axis(time).reset_index()
    return full[data.columns], len(grid) - len(data)


def _ts_validation(plan: SearchPlan, s: Settings, n_train: int, rows: int, warnings: list[str]) -> dict[str, Any]:
    """FLAML's validation for one series: the given validation, else its rolling-origin folds, else the last
    horizon held out."""
    h, step = s.horizon, s.cv_step or s.horizon
    need = h + MIN_TRAIN if rows > n_train else 2 * h + MIN_TRAIN  # with no validation, h are held out
    if n_train < need:
        raise ValueError(f"forecasting.forecast_horizon: a horizon of {h} periods needs at least {need} periods of "
                         f"training data ({h} to validate on, the rest to learn from); it has {n_train}")
    if rows > n_train:
        _unused_step(s, warnings)
        return {"eval_method": "holdout"}
    folds = max(0, (n_train - 2 * h) // step)
    if plan.n_splits:
        if folds < 2:
            raise ValueError(f"n_cross_validations: rolling-origin folds of {h} periods, {step} apart, need at least "
                             f"{2 * h + 2 * step} periods of training data; it has {n_train}")
        if folds < plan.n_splits:
            warnings.append(f"n_cross_validations: {plan.n_splits} folds of {h} periods, {step} apart, need "
                            f"{2 * h + plan.n_splits * step} periods of training data; it has {n_train}: {folds} folds")
        return {"eval_method": "cv", "n_splits": min(folds, plan.n_splits), "cv_step_size": step}
    if plan.validation_size:
        warnings.append(f"validation_data_size: a forecast holds out its last {h} periods instead")
    elif folds >= 2:
        return {"eval_method": "cv", "n_splits": min(folds, DEFAULT_FOLDS), "cv_step_size": step}
    _unused_step(s, warnings)
    return {"eval_method": "holdout"}


def _unused_step(s: Settings, warnings: list[str]) -> None:
    if s.cv_step:
        warnings.append("forecasting.cv_step_size: not used (the validation is one holdout)")


def _folds(data, s: Settings, frequency: str, plan: SearchPlan, n_train: int,  # noqa: ANN001
           warnings: list[str]) -> dict[str, Any]:
    """FLAML's validation for several series: the given validation rows, else rolling-origin folds on the time
    column (as many as the periods allow, at least one)."""
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import check_cv

    h, step = s.horizon, s.cv_step or s.horizon
    if n_train < len(data):
        _unused_step(s, warnings)
        return {"eval_method": "cv", "split_type": check_cv([(np.arange(n_train), np.arange(n_train, len(data)))]),
                "n_splits": 1}
    if plan.validation_size:
        warnings.append(f"validation_data_size: a forecast holds out its last {h} periods instead")
    wanted = 1 if plan.validation_size else plan.n_splits or DEFAULT_FOLDS
    offset = pd.tseries.frequencies.to_offset(frequency)
    times, end = data[s.time_column], data[s.time_column].max()
    folds = []
    for back in range(wanted - 1, -1, -1):
        cut = end - (h + back * step) * offset
        train = np.flatnonzero((times <= cut).to_numpy())
        held = np.flatnonzero(((times > cut) & (times <= cut + h * offset)).to_numpy())
        if len(train) and len(held):
            folds.append((train, held))
    if not folds:
        raise ValueError(f"forecasting.forecast_horizon: a horizon of {h} periods leaves no training data before the "
                         f"last {h} periods (the data run from {times.min()} to {end})")
    if plan.n_splits and len(folds) < plan.n_splits:
        warnings.append(f"n_cross_validations: the data's periods allow {len(folds)} of the {plan.n_splits} folds")
    if len(folds) == 1:
        _unused_step(s, warnings)
    return {"eval_method": "cv", "split_type": check_cv(folds), "n_splits": len(folds)}


def _refit(automl, X, y, fit: dict[str, Any]):  # noqa: ANN001, ANN202, N803
    """FLAML's best configuration fitted again on X, y (training and validation): FLAML forecasts from the end
    of what its model was fitted on. One trial with the configuration as starting point (max_iter=1)."""
    from flaml import AutoML

    best = automl.best_estimator
    again = {k: v for k, v in fit.items() if k not in ("X_val", "y_val", "log_file_name", "n_splits", "cv_step_size")}
    again.update(estimator_list=[best], starting_points={best: automl.best_config}, max_iter=1, eval_method="holdout",
                 time_budget=-1)
    final = AutoML()
    final.fit(X, y, **again)
    forget(final, again["metric"])
    return final
