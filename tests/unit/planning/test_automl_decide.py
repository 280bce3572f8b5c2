"""An AutoML job's plan (pure): learners dealt into searches, each search's budget and share of the
trials, the child command job of each, and what the parent does as its searches end."""

from __future__ import annotations

from typing import Any

import pytest

from cible.automl.search import SearchPlan
from cible.core.planning.automl import (
    GRACE_S,
    PLAN_VARIABLE,
    AutomlPlanError,
    ChildView,
    best_child,
    decide_automl,
    search_plans,
    trial_job_spec,
)
from cible.core.specs.azureml.loader import load_spec_dict

CODE = "cible://snapshots/" + "a" * 64


def job(**extra: Any):  # noqa: ANN201
    spec = {"type": "automl", "task": "classification", "target_column_name": "y", "primary_metric": "accuracy",
            "training_data": {"type": "mltable", "path": "azureml:iris:1"}, "compute": "azureml:cpu", **extra}
    return load_spec_dict(spec, "job", source="test").entity


def test_learners_are_dealt_round_robin_in_flamls_order_into_as_many_searches_as_run_at_once() -> None:
    plans = search_plans(job(limits={"max_concurrent_trials": 2, "max_trials": 10, "timeout_minutes": 10},
                             training={"allowed_training_algorithms": ["LogisticRegression", "RandomForest",
                                                                       "LightGBM"]})).plans
    assert [p.learners for p in plans] == [("lgbm", "lrl1"), ("rf", "lrl2")]
    assert [p.max_iter for p in plans] == [5, 5]  # each its learners' share of max_trials
    assert all(p.time_budget_s == 600 - 120 for p in plans)  # the budget less a fifth, to save the model
    assert len({(p.n_splits, p.validation_size, p.seed) for p in plans}) == 1  # the same validation: comparable


def test_more_concurrency_than_learners_is_said_and_one_learner_a_search() -> None:
    searches = search_plans(job(limits={"max_concurrent_trials": 5},
                                training={"allowed_training_algorithms": ["LightGBM", "RandomForest"]}))
    assert [p.learners for p in searches.plans] == [("lgbm",), ("rf",)]
    assert any(w.startswith("limits.max_concurrent_trials: 5 asked") for w in searches.warnings)


def test_the_settings_reach_each_search() -> None:
    plan = search_plans(job(limits={"trial_timeout_minutes": 2, "enable_early_termination": False,
                                    "max_cores_per_trial": 1},
                            n_cross_validations=4, weight_column_name="w",
                            featurization={"mode": "custom", "column_name_and_types": {"a": "Categorical"}})).plans[0]
    assert (plan.train_time_limit_s, plan.early_stop, plan.n_jobs, plan.n_splits, plan.weight_column) == (
        120, False, 1, 4, "w")
    assert plan.featurization["column_name_and_types"] == {"a": "Categorical"}
    assert plan.time_budget_s == 360 * 60 - 300  # Azure's default timeout, less the saving margin


def test_blocking_every_runnable_algorithm_is_refused_naming_the_field() -> None:
    with pytest.raises(AutomlPlanError) as refused:
        search_plans(job(training={"allowed_training_algorithms": ["SVM", "DecisionTree"]}))
    assert refused.value.field == "training.allowed_training_algorithms"
    assert "LightGBM" in str(refused.value)


def test_the_child_is_a_command_job_running_the_trial_on_the_given_data_only() -> None:
    automl = job(test_data={"type": "mltable", "path": "azureml:iris-test:1"}, environment_variables={"A": "1"},
                 outputs={"best_model": {"type": "mlflow_model", "path": "azureml://datastores/models/paths/x/"}})
    plan = search_plans(automl).plans[0]
    spec = trial_job_spec(automl, plan, index=0, code=CODE, environment=None)
    assert spec["command"] == ("python -m cible.automl.trial env:AUTOML_SEARCH_PLAN ${{inputs.training_data}} "
                               "--test ${{inputs.test_data}} --out ${{outputs.result}} --model ${{outputs.best_model}}")
    assert set(spec["inputs"]) == {"training_data", "test_data"} and "environment" not in spec
    assert spec["outputs"]["best_model"] == {"type": "mlflow_model", "path": "azureml://datastores/models/paths/x/"}
    assert spec["environment_variables"]["A"] == "1"
    assert SearchPlan.from_json(spec["environment_variables"][PLAN_VARIABLE]) == plan
    assert spec["limits"]["timeout"] == 360 * 60 + GRACE_S
    assert load_spec_dict(spec, "job", source="test").entity.type == "command"


def _child(index: int, status: str, metric: float | None = None, error: str | None = None) -> ChildView:
    return ChildView(index=index, name=f"a_{index}", status=status,
                     result=None if metric is None else {"best_metric": metric}, error=error)


def test_every_search_is_launched_once_and_a_missing_one_again() -> None:
    automl = job(limits={"max_concurrent_trials": 3})
    assert decide_automl(automl, [], groups=3, elapsed_s=0, cancel_requested=False).launch == [0, 1, 2]
    decision = decide_automl(automl, [_child(0, "Running"), _child(2, "Queued")], groups=3, elapsed_s=5,
                             cancel_requested=False)
    assert decision.launch == [1] and decision.end is None


def test_the_best_search_by_the_metrics_direction_ties_to_the_lower_index() -> None:
    children = [_child(0, "Completed", 0.9), _child(1, "Completed", 0.95), _child(2, "Completed", 0.95),
                _child(3, "Failed"), _child(4, "Canceled", 0.99)]
    assert best_child("accuracy", children) == "a_1"
    assert best_child("normalized_root_mean_squared_error", children) == "a_0"
    assert best_child("accuracy", [_child(0, "Completed")]) is None  # a search without a model is never best


def test_some_searches_failing_still_completes_with_the_best_and_all_failing_fails_with_the_first_error() -> None:
    automl = job()
    done = decide_automl(automl, [_child(0, "Failed", error="boom"), _child(1, "Completed", 0.8)], groups=2,
                         elapsed_s=60, cancel_requested=False)
    assert (done.end, done.best_child) == ("Completed", "a_1")
    failed = decide_automl(automl, [_child(1, "Failed", error="later"), _child(0, "Failed", error="first")],
                           groups=2, elapsed_s=60, cancel_requested=False)
    assert failed.end == "Failed" and failed.error["message"] == "search a_0 failed: first"
    none = decide_automl(automl, [_child(0, "Completed")], groups=1, elapsed_s=60, cancel_requested=False)
    assert none.end == "Failed" and none.error["code"] == "NoModel"


def test_a_cancel_cancels_the_live_searches_then_ends_canceled() -> None:
    automl = job()
    decision = decide_automl(automl, [_child(0, "Running"), _child(1, "Completed", 0.9)], groups=2, elapsed_s=1,
                             cancel_requested=True)
    assert list(decision.cancel) == ["a_0"] and decision.end is None and decision.launch == []
    assert decide_automl(automl, [_child(0, "Canceled")], groups=2, elapsed_s=1, cancel_requested=True).end == "Canceled"


def test_past_the_budget_the_live_searches_are_canceled_and_the_best_so_far_completes() -> None:
    automl = job(limits={"timeout_minutes": 1})
    late = 60 + GRACE_S
    decision = decide_automl(automl, [_child(0, "Running"), _child(1, "Completed", 0.9)], groups=2, elapsed_s=late,
                             cancel_requested=False)
    assert "limits.timeout_minutes" in decision.cancel["a_0"] and decision.end is None
    ended = decide_automl(automl, [_child(0, "Canceled"), _child(1, "Completed", 0.9)], groups=2, elapsed_s=late,
                          cancel_requested=False)
    assert (ended.end, ended.best_child) == ("Completed", "a_1")
    nothing = decide_automl(automl, [_child(0, "Canceled")], groups=2, elapsed_s=late, cancel_requested=False)
    assert nothing.end == "Failed" and nothing.error["code"] == "AutomlTimeout"


def test_a_search_reaching_the_exit_score_ends_the_others() -> None:
    automl = job(limits={"exit_score": 0.9, "max_concurrent_trials": 2})
    decision = decide_automl(automl, [_child(0, "Completed", 0.93), _child(1, "Running")], groups=2, elapsed_s=5,
                             cancel_requested=False)
    assert decision.cancel == {"a_1": "limits.exit_score reached by a_0"} and decision.launch == []
    below = decide_automl(automl, [_child(0, "Completed", 0.85), _child(1, "Running")], groups=2, elapsed_s=5,
                          cancel_requested=False)
    assert below.cancel == {}


def test_a_forecast_of_several_series_leaves_out_the_one_series_models_and_carries_its_settings() -> None:
    forecasting = {"time_column_name": "t", "forecast_horizon": 3, "time_series_id_column_names": "store"}
    automl = job(task="forecasting", primary_metric="r2_score", forecasting=forecasting,
                 training={"allowed_training_algorithms": ["AutoArima", "LightGBM"]}, limits={"exit_score": 0.8})
    searches = search_plans(automl)
    assert [p.learners for p in searches.plans] == [("lgbm",)]
    plan = searches.plans[0]
    assert plan.forecasting == {**forecasting, "time_series_id_column_names": ["store"]} and plan.exit_score == 0.8
    with pytest.raises(AutomlPlanError, match="none of the algorithms asked for can run"):
        search_plans(job(task="forecasting", primary_metric="r2_score", forecasting=forecasting,
                         training={"allowed_training_algorithms": ["AutoArima"]}))
    one = search_plans(job(task="forecasting", primary_metric="r2_score", forecasting={"time_column_name": "t"},
                           training={"allowed_training_algorithms": ["AutoArima"]}))
    assert [p.learners for p in one.plans] == [("arima",)]
