"""Azure's `task: forecasting` through FLAML: one series with FLAML's time-series learners, several with one
regression model; Azure's forecasting settings honoured (time column, horizon, series ids, frequency, target
lags and rolling window) or warned about by name; bad input refused naming the field; the model saved as an
MLflow model that loads (without cible) and forecasts from a frame with the time and id columns. Small
synthetic series, and max_iter (not seconds) bounds each search."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cible.automl.featurize import lookback
from cible.automl.forecast import Settings, settings
from cible.automl.search import SearchPlan

needs_flaml = pytest.mark.skipif(importlib.util.find_spec("flaml") is None, reason="FLAML is not installed")
AZURE_METRICS = {"r2_score", "spearman_correlation", "normalized_root_mean_squared_error",
                 "normalized_mean_absolute_error"}


def daily(days: int, seed: int = 0, level: float = 10.0) -> pd.DataFrame:
    """A daily series with a weekly cycle, a promotion feature and noise; dates as text, as a CSV has them."""
    rng = np.random.default_rng(seed)
    promo = rng.integers(0, 2, days)
    sales = level + 3 * np.sin(np.arange(days) * 2 * np.pi / 7) + 2 * promo + rng.normal(0, 0.3, days)
    dates = pd.date_range("2024-01-01", periods=days, freq="D").strftime("%Y-%m-%d")
    return pd.DataFrame({"date": dates, "promo": promo, "sales": sales})


def stores(days: int) -> pd.DataFrame:
    return pd.concat([daily(days, 1, 10.0).assign(store="north"), daily(days, 2, 30.0).assign(store="south")],
                     ignore_index=True)


def plan(forecasting: dict, learners: tuple[str, ...] = ("lgbm",), **kwargs) -> SearchPlan:
    return SearchPlan(task="forecasting", metric=kwargs.pop("metric", "normalized_root_mean_squared_error"),
                      target="sales", learners=learners, max_iter=kwargs.pop("max_iter", 2), n_jobs=1,
                      forecasting=forecasting, **kwargs)


def test_the_settings_cible_honours_and_those_it_warns_about() -> None:
    found, warnings = settings({"time_column_name": "date", "forecast_horizon": "auto", "frequency": "H",
                                "time_series_id_column_names": "store", "target_lags": "auto",
                                "target_rolling_window_size": 4, "cv_step_size": 2, "use_stl": "none",
                                "seasonality": 7, "feature_lags": "auto", "features_unknown_at_forecast_time": "price"})
    assert found == Settings(time_column="date", horizon=1, ids=("store",), frequency="h", lags=(1,), window=4,
                             cv_step=2, unknown=("price",))
    assert any(w.startswith("forecasting.forecast_horizon: auto is 1 period") for w in warnings)
    assert any(w.startswith("forecasting.target_lags: auto is lag 1") for w in warnings)
    assert any(w.startswith("forecasting.seasonality: 7 is not honoured") for w in warnings)
    assert any(w.startswith("forecasting.feature_lags: auto is not honoured") for w in warnings)
    assert any(w.startswith("forecasting.features_unknown_at_forecast_time: price left out") for w in warnings)
    assert not any("use_stl" in w for w in warnings)  # none asks for nothing
    assert settings({"time_column_name": "t", "target_lags": 3})[0].lags == (3,)  # one integer is one lag
    assert settings({"time_column_name": "t", "target_lags": [7, 1, 7]})[0].lags == (1, 7)
    assert settings({"time_column_name": "t", "frequency": "M"})[0].frequency == "ME"  # pandas 3's spelling


@pytest.mark.parametrize(("raw", "message"), [
    ({"forecast_horizon": 5}, "forecasting.time_column_name: a forecasting task needs the name of its time column"),
    ({"time_column_name": "t", "forecast_horizon": 0}, "forecasting.forecast_horizon: 0 is not a whole number"),
    ({"time_column_name": "t", "target_lags": [1, -2]}, "forecasting.target_lags: -2 is not a whole number"),
    ({"time_column_name": "t", "frequency": "fortnightly"}, "forecasting.frequency: 'fortnightly' is not a pandas"),
])
def test_bad_settings_name_their_field(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        settings(raw)


def test_the_target_lags_and_window_are_taken_from_each_series_forecast_origin() -> None:
    days = pd.date_range("2024-01-01", periods=6, freq="D").astype("datetime64[ns]")
    history = pd.DataFrame({"store": ["a"] * 6 + ["b"] * 6, "date": list(days) * 2,
                            "sales": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]})
    rows = pd.DataFrame({"store": ["b", "a", "a"], "date": [days[5], days[5], days[0]]})
    spec = {"time_column": "date", "ids": ["store"], "target": "sales", "frequency": "D", "horizon": 2,
            "lags": [1, 2], "window": 3}
    found = lookback(rows, history, spec)
    # origin two days back: lag 1 is the target then, lag 2 the day before, the window the three days to it
    assert found["sales_lag1"].tolist()[:2] == [40.0, 4.0] and found["sales_lag2"].tolist()[:2] == [30.0, 3.0]
    assert found["sales_rolling_mean3"].tolist()[:2] == [30.0, 3.0]
    assert found.iloc[2].isna().all()  # nothing known before the first day


@needs_flaml
def test_one_series_is_forecast_by_flamls_time_series_learners_and_its_model_loads_without_cible(
        tmp_path: Path) -> None:
    from cible.automl.search import search
    from cible.automl.trial import save_model

    data = daily(45)
    forecasting = {"time_column_name": "date", "forecast_horizon": 3, "frequency": "D", "target_lags": 3,
                   "target_rolling_window_size": 2, "country_or_region_for_holidays": "US"}
    result, model = search(plan(forecasting, ("lgbm", "prophet", "arima")), data[:-3], test=data[-3:],
                           log_file=tmp_path / "flaml.log")
    assert result.best_learner == "lgbm" and len(result.trials) == 2
    assert result.best_metric == pytest.approx(min(t["metric"] for t in result.trials))  # Azure's NRMSE: lowest
    assert 0 < result.best_metric < 1 and set(result.test_metrics) == AZURE_METRICS
    assert "forecasting.country_or_region_for_holidays: US is not honoured (cible makes no holiday features)" \
        in result.warnings
    left_out = [w for w in result.warnings if w.startswith("training:")]
    assert len(left_out) == 1 and "prophet" in left_out[0]
    if importlib.util.find_spec("statsmodels") is None:
        assert "arima" in left_out[0] and "statsmodels not installed" in left_out[0]
    future = data[-3:].drop(columns="sales").iloc[::-1]  # any order: each row gets its own day's forecast
    expected = model.predict(future)
    assert np.isfinite(expected).all() and expected.tolist() == model.predict(future.iloc[::-1]).tolist()[::-1]
    save_model(model, tmp_path / "model")
    future.to_csv(tmp_path / "future.csv", index=False)
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, json, mlflow.pyfunc, pandas as pd; "
        "sys.modules['cible'] = None; "  # any import of cible now fails: the model must not need it
        f"m = mlflow.pyfunc.load_model({str(tmp_path / 'model')!r}); "
        f"print(json.dumps([float(v) for v in m.predict(pd.read_csv({str(tmp_path / 'future.csv')!r}))]))")],
        capture_output=True, text=True, timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == pytest.approx(expected.tolist())


@needs_flaml
def test_validation_data_is_the_holdout_and_the_model_forecasts_the_periods_after_it() -> None:
    from cible.automl.search import search

    data = daily(40)
    result, model = search(plan({"time_column_name": "date", "forecast_horizon": 3}, metric="r2_score"),
                           data[:34], validation=data[34:37], test=data[37:])
    assert set(result.validation_metrics) == AZURE_METRICS
    assert result.validation_metrics["r2_score"] == pytest.approx(result.best_metric)
    assert set(result.test_metrics) == AZURE_METRICS  # the days after the validation's
    with pytest.raises(ValueError, match="date: 2024-02-04 00:00:00 is not after the end of the training data"):
        model.predict(data[34:37])  # refitted on the validation too: its days are history now


@needs_flaml
def test_several_series_make_one_regression_model_that_forecasts_each_from_its_own_history(tmp_path: Path) -> None:
    import mlflow.pyfunc

    from cible.automl.search import search
    from cible.automl.trial import save_model

    data = stores(30)
    training, test = data[data.date < "2024-01-27"], data[data.date >= "2024-01-27"]
    forecasting = {"time_column_name": "date", "forecast_horizon": 4, "time_series_id_column_names": ["store"],
                   "target_lags": [1, 2]}
    result, model = search(plan(forecasting, ("lgbm", "naive"), n_splits=2), training, test=test,
                           log_file=tmp_path / "flaml.log")
    assert result.best_learner == "lgbm" and len(result.trials) == 2
    assert any(w.startswith("training: naive forecast one series at a time") for w in result.warnings)
    assert set(result.test_metrics) == AZURE_METRICS
    shuffled = test.drop(columns="sales").sample(frac=1, random_state=0)
    predicted = pd.Series(model.predict(shuffled), index=shuffled.index)
    by_store = predicted.groupby(shuffled.store).mean()
    assert by_store["south"] > by_store["north"] + 2  # the stores' levels are 20 apart: the id column tells them
    assert predicted.reindex(test.index).tolist() == pytest.approx(model.predict(test).tolist())
    save_model(model, tmp_path / "model")
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert list(loaded.predict(shuffled)) == pytest.approx(predicted.tolist())


@needs_flaml
def test_an_exit_score_ends_a_forecasting_search(tmp_path: Path) -> None:
    from cible.automl.search import search

    forecasting = {"time_column_name": "date", "forecast_horizon": 4, "time_series_id_column_names": "store"}
    result, _ = search(plan(forecasting, metric="normalized_mean_absolute_error", max_iter=6, exit_score=0.9),
                       stores(30), log_file=tmp_path / "flaml.log")
    assert result.stopped_early and len(result.trials) == 1 and result.best_metric <= 0.9


@needs_flaml
@pytest.mark.parametrize(("frame", "forecasting", "learners", "message"), [
    (daily(30), {"time_column_name": "when"}, ("lgbm",),
     "forecasting.time_column_name: no column 'when' in the training data (its columns: date, promo, sales)"),
    (daily(30), {"time_column_name": "date", "time_series_id_column_names": ["shop"]}, ("lgbm",),
     "forecasting.time_series_id_column_names: no column 'shop' in the training data"),
    (daily(12), {"time_column_name": "date", "forecast_horizon": 5}, ("lgbm",),
     "forecasting.forecast_horizon: a horizon of 5 periods needs at least 14 periods of training data"),
    (pd.concat([daily(30), daily(30)]), {"time_column_name": "date"}, ("lgbm",),
     "forecasting.time_column_name: the training data has several rows at 2024-01-01"),
    (stores(30).drop(columns="store").assign(store="one"), {"time_column_name": "date",
                                                            "time_series_id_column_names": "store"}, ("lgbm",),
     "forecasting.time_series_id_column_names: the training data has several rows for one series"),
    (daily(30).iloc[[0, 1, 3, 7, 12, 20]], {"time_column_name": "date"}, ("lgbm",),
     "forecasting.frequency: no frequency can be read from 'date'"),
    (daily(30).assign(date=lambda f: f.date.where(f.index != 4, "2024-01-05 12:00")),
     {"time_column_name": "date", "frequency": "D"}, ("lgbm",),
     "forecasting.frequency: 2024-01-05 12:00:00 in the training data is not on the D grid"),
    (daily(30).assign(date=lambda f: f.date.where(f.index != 4, "soon")), {"time_column_name": "date"}, ("lgbm",),
     "forecasting.time_column_name: 1 values of 'date' in the training data are not timestamps (e.g. 'soon')"),
    (stores(30), {"time_column_name": "date", "time_series_id_column_names": "store"}, ("naive",),
     "training.allowed_training_algorithms: none of naive can forecast here"),
])
def test_bad_forecasting_input_is_refused_naming_the_field(frame: pd.DataFrame, forecasting: dict,
                                                           learners: tuple[str, ...], message: str) -> None:
    from cible.automl.search import search

    with pytest.raises(ValueError) as raised:
        search(plan(forecasting, learners), frame.reset_index(drop=True))
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_plan_keeps_its_forecasting_settings_and_exit_score_through_json() -> None:
    given = plan({"time_column_name": "date", "forecast_horizon": "auto", "target_lags": [1, 7],
                  "time_series_id_column_names": ["store"]}, exit_score=0.25)
    assert SearchPlan.from_json(given.to_json()) == given
    old = json.loads(given.to_json())
    del old["forecasting"], old["exit_score"]  # a plan written before these fields
    assert SearchPlan.from_json(json.dumps(old)).forecasting is None
    assert SearchPlan.from_json(json.dumps(old)).exit_score is None
