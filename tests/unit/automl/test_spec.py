"""`type: automl` YAML as Azure's examples write it, parsed into AutomlJob; what does not fit the task is
refused naming the field (the loader turns each into file:line when this is wired to submit)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from cible.automl.spec import AutomlJob

BANK = """
$schema: https://azuremlsdk2.blob.core.windows.net/preview/0.0.1/autoMLJob.schema.json
type: automl
experiment_name: dpv2-cli-automl-classifier-experiment
compute: azureml:cpu-cluster
task: classification
log_verbosity: debug
primary_metric: accuracy
target_column_name: "y"
training_data: {path: "./training-mltable-folder", type: mltable}
validation_data: {path: "./validation-mltable-folder", type: mltable}
test_data: {path: "./test-mltable-folder", type: mltable}
limits: {timeout_minutes: 180, max_trials: 40, max_concurrent_trials: 5, trial_timeout_minutes: 20,
         enable_early_termination: true, exit_score: 0.92}
featurization:
  mode: custom
  transformer_params:
    imputer:
      - fields: ["job"]
        parameters: {strategy: most_frequent}
  blocked_transformers: [WordEmbedding]
training:
  enable_model_explainability: true
  allowed_training_algorithms: [gradient_boosting, logistic_regression]
"""

OJ = """
type: automl
task: forecasting
primary_metric: normalized_root_mean_squared_error
training_data: {path: "./training-mltable-folder", type: mltable}
test_data: {path: "./test-mltable-folder", type: mltable}
target_column_name: Quantity
n_cross_validations: auto
featurization:
  mode: custom
  column_name_and_types: {CPWVOL5: Numeric}
  transformer_params:
    imputer:
      - {fields: ["Quantity"], parameters: {strategy: constant, fill_value: 0}}
      - {fields: ["Price"], parameters: {strategy: ffill}}
limits: {timeout_minutes: 15, max_trials: 10, max_concurrent_trials: 4, max_cores_per_trial: -1}
forecasting: {time_column_name: "WeekStarting", time_series_id_column_names: ["Store", "Brand"],
              forecast_horizon: 20, frequency: "W-THU"}
training: {enable_stack_ensemble: false, blocked_training_algorithms: []}
"""


def parse(text: str, **changes: object) -> AutomlJob:
    spec = yaml.safe_load(text)
    spec.update(changes)
    return AutomlJob.model_validate({k: v for k, v in spec.items() if v is not None})


def test_azures_classification_and_forecasting_examples_parse_unchanged() -> None:
    bank = parse(BANK)
    assert bank.task == "classification" and bank.primary_metric == "accuracy"
    assert bank.training.allowed_training_algorithms == ["GradientBoosting", "LogisticRegression"]
    assert bank.featurization.transformer_params["imputer"][0].fields == ["job"]
    oj = parse(OJ)
    assert oj.forecasting.time_series_id_column_names == ["Store", "Brand"] and oj.n_cross_validations == "auto"
    assert parse(BANK, primary_metric=None).primary_metric == "AUC_weighted"  # Azure's default


@pytest.mark.parametrize("changes, says", [
    ({"task": "image_classification"}, "'image_classification' AutoML jobs are not supported by cible"),
    ({"task": "clustering"}, "'clustering' is not an AutoML task"),
    ({"primary_metric": "r2_score"}, "'r2_score' is not a primary metric of a classification task"),
    ({"training": {"allowed_training_algorithms": ["XGBoostRegressor"]}}, "not a training algorithm of a classif"),
    ({"forecasting": {"time_column_name": "t"}}, "settings for a forecasting task, and this one is classification"),
    ({"validation_data_size": 1.5}, "validation_data_size"),
    ({"n_cross_validations": 5}, "give validation_data or n_cross_validations, not both"),
    ({"limits": {"max_cores_per_trial": 0}}, "must be -1 (every core) or 1 or more"),
    ({"featurization": {"mode": "custom", "transformer_params": {"imputer": [
        {"fields": ["a"], "parameters": {"strategy": "interpolate"}}]}}}, "'interpolate' is not an imputer strategy"),
    ({"featurization": {"column_name_and_types": {"a": "Number"}}}, "'Number' is not a column purpose"),
    ({"target_column_name": None}, "target_column_name"),
    ({"limts": {}}, "limts"),
])
def test_what_does_not_fit_is_refused_naming_the_field(changes: dict, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse(BANK, **changes)
    assert says in str(refused.value)


def test_a_forecasting_task_needs_its_time_column() -> None:
    with pytest.raises(ValidationError, match="needs forecasting.time_column_name"):
        parse(OJ, forecasting=None)
    with pytest.raises(ValidationError, match="off is not allowed for forecasting"):
        parse(OJ, featurization={"mode": "off"})
