"""A `type: automl` job as Azure's CLI v2 YAML writes it (tabular tasks: classification, regression,
forecasting), checked field by field: a task cible does not run, a metric or an algorithm that does not
fit the task, forecasting settings on another task, or a number out of range is an error naming its field.

Not wired to submit yet (the loader still refuses `type: automl`): the runtime (trials through FLAML)
comes next. Keys are Azure's (azure-ai-ml's `_schema/automl`); what cible will not honour is accepted
here and warned about where the job is planned.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from cible.automl import names
from cible.core.models.common import LowerStr, SpecModel, StrMap
from cible.core.models.jobs import JobOutput, JobResources, QueueSettings
from cible.core.naming import ExperimentName, JobName

Auto = Literal["auto"]


class AutomlInput(SpecModel):
    """`training_data`, `validation_data`, `test_data`: an MLTable folder (or a CSV/Parquet file or folder)."""

    type: Annotated[Literal["mltable", "uri_file", "uri_folder"], LowerStr] = "mltable"
    path: str = Field(min_length=1)
    mode: str | None = None


class AutomlLimits(SpecModel):
    timeout_minutes: int | None = Field(None, ge=1)
    trial_timeout_minutes: int | None = Field(None, ge=1)
    max_trials: int | None = Field(None, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_cores_per_trial: int | None = Field(None, ge=-1)
    max_nodes: int | None = Field(None, ge=1)
    exit_score: float | None = None
    enable_early_termination: bool | None = None

    @field_validator("max_cores_per_trial")
    @classmethod
    def _cores(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("must be -1 (every core) or 1 or more")
        return value


class StackEnsembleSettings(SpecModel):
    stack_meta_learner_type: Annotated[str | None, LowerStr] = None
    stack_meta_learner_kwargs: dict[str, Any] | None = None
    stack_meta_learner_train_percentage: float | None = Field(None, gt=0, lt=1)


class AutomlTraining(SpecModel):
    allowed_training_algorithms: list[str] | None = None
    blocked_training_algorithms: list[str] | None = None
    enable_stack_ensemble: bool | None = None
    enable_vote_ensemble: bool | None = None
    enable_model_explainability: bool | None = None
    enable_onnx_compatible_models: bool | None = None
    enable_dnn_training: bool | None = None
    ensemble_model_download_timeout_minutes: int | None = Field(None, ge=1)
    stack_ensemble_settings: StackEnsembleSettings | None = None
    training_mode: Annotated[Literal["auto", "distributed", "non_distributed"] | None, LowerStr] = None


class TransformerParam(SpecModel):
    fields: list[str] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)


TRANSFORMERS = ("imputer", "tf_idf", "hash_one_hot_encoder")
IMPUTER_STRATEGIES = ("mean", "median", "most_frequent", "constant", "ffill")
COLUMN_PURPOSES = ("numeric", "datetime", "categorical", "categorical_hash", "text", "hashes", "ignore", "all_nan")


class AutomlFeaturization(SpecModel):
    mode: Annotated[Literal["auto", "custom", "off"], LowerStr] = "auto"
    column_name_and_types: StrMap | None = None
    transformer_params: dict[str, list[TransformerParam]] | None = None
    blocked_transformers: list[str] | None = None
    enable_dnn_featurization: bool | None = None
    dataset_language: str | None = None

    @field_validator("column_name_and_types")
    @classmethod
    def _purposes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, purpose in (value or {}).items():
            if names.snake(purpose) not in COLUMN_PURPOSES:
                raise ValueError(f"{column}: '{purpose}' is not a column purpose; use one of Numeric, DateTime, "
                                 "Categorical, CategoricalHash, Text, Hashes, Ignore, AllNan")
        return value

    @field_validator("transformer_params", mode="before")
    @classmethod
    def _transformers(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        known = {}
        for key, params in value.items():
            name = names.snake(str(key))
            if name not in TRANSFORMERS:
                raise ValueError(f"'{key}' is not a transformer with parameters; use one of Imputer, TfIdf, "
                                 "HashOneHotEncoder")
            known[name] = params
        return known

    @model_validator(mode="after")
    def _strategies(self) -> AutomlFeaturization:
        for index, param in enumerate((self.transformer_params or {}).get("imputer", [])):
            strategy = str(param.parameters.get("strategy", "mean")).lower()
            if strategy not in IMPUTER_STRATEGIES:
                raise ValueError(f"transformer_params.imputer[{index}].parameters.strategy: '{strategy}' is not an "
                                 f"imputer strategy; use one of {', '.join(IMPUTER_STRATEGIES)}")
            if strategy == "constant" and "fill_value" not in param.parameters:
                raise ValueError(f"transformer_params.imputer[{index}].parameters: strategy constant needs fill_value")
        return self


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ForecastingSettings(SpecModel):
    time_column_name: str = Field(min_length=1)
    forecast_horizon: int | Auto = Field(1)
    time_series_id_column_names: Annotated[list[str] | None, BeforeValidator(_one_or_list)] = None
    frequency: str | None = None
    target_lags: Auto | int | list[int] | None = None
    target_rolling_window_size: Auto | int | None = None
    feature_lags: Annotated[Literal["none", "auto"] | None, LowerStr] = None
    seasonality: Auto | int | None = None
    short_series_handling_config: Annotated[Literal["none", "auto", "pad", "drop"] | None, LowerStr] = None
    target_aggregate_function: Annotated[Literal["none", "sum", "max", "min", "mean"] | None, LowerStr] = None
    country_or_region_for_holidays: str | None = None
    use_stl: Annotated[Literal["none", "season", "season_trend", "seasontrend"] | None, LowerStr] = None
    cv_step_size: Auto | int | None = None
    features_unknown_at_forecast_time: Annotated[list[str] | None, BeforeValidator(_one_or_list)] = None

    @field_validator("forecast_horizon", "target_rolling_window_size", "seasonality", "cv_step_size")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 1 or more (or auto)")
        return value


class AutomlJob(SpecModel):
    """A ``type: automl`` tabular job."""

    type: Literal["automl"] = "automl"
    task: Annotated[str, LowerStr]
    name: JobName | None = None
    display_name: str | None = None
    experiment_name: ExperimentName | None = None
    description: str | None = None
    tags: StrMap = Field(default_factory=dict)
    compute: str | None = None
    environment_variables: StrMap = Field(default_factory=dict)
    resources: JobResources | None = None
    queue_settings: QueueSettings | None = None
    identity: dict[str, Any] | None = None
    outputs: dict[str, JobOutput | None] = Field(default_factory=dict)
    log_verbosity: Annotated[Literal["not_set", "debug", "info", "warning", "error", "critical"] | None,
                             LowerStr] = None
    primary_metric: str | None = None
    target_column_name: str = Field(min_length=1)
    training_data: AutomlInput
    validation_data: AutomlInput | None = None
    test_data: AutomlInput | None = None
    validation_data_size: float | None = Field(None, gt=0, lt=1)
    test_data_size: float | None = Field(None, gt=0, lt=1)
    n_cross_validations: int | Auto | None = None
    cv_split_column_names: list[str] | None = None
    weight_column_name: str | None = None
    positive_label: str | None = None
    limits: AutomlLimits = Field(default_factory=AutomlLimits)
    training: AutomlTraining = Field(default_factory=AutomlTraining)
    featurization: AutomlFeaturization | None = None
    forecasting: ForecastingSettings | None = None
    # Read-only, server-populated: present in `az ml job show` output, ignored on create.
    status: str | None = None
    id: str | None = None
    creation_context: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @field_validator("task")
    @classmethod
    def _task(cls, value: str) -> str:
        task = names.snake(value)
        if task in names.TASKS:
            return task
        if task in names.OTHER_TASKS:
            raise ValueError(f"'{value}' AutoML jobs are not supported by cible; it runs tabular tasks: "
                             f"{', '.join(names.TASKS)}")
        raise ValueError(f"'{value}' is not an AutoML task; use one of {', '.join(names.TASKS)}")

    @field_validator("n_cross_validations")
    @classmethod
    def _folds(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 2:
            raise ValueError("must be 2 or more (or auto)")
        return value

    # Field validators (not the model's), so that an error points at the key in the YAML file. `task` is
    # declared first: validated before them (when it is not valid, they have nothing to check against).
    @field_validator("primary_metric")
    @classmethod
    def _metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        task = info.data.get("task")
        if task is None:
            return value
        try:
            return names.metric(task, value).azure
        except names.UnknownName as exc:
            raise ValueError(str(exc)) from None

    @field_validator("training")
    @classmethod
    def _algorithms(cls, value: AutomlTraining, info: ValidationInfo) -> AutomlTraining:
        task = info.data.get("task")
        if task is None:
            return value
        for key in ("allowed_training_algorithms", "blocked_training_algorithms"):
            given = getattr(value, key)
            try:
                if given is not None:
                    setattr(value, key, [names.algorithm(task, n) for n in given])
            except names.UnknownName as exc:
                raise ValueError(f"{key}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fits_the_task(self) -> AutomlJob:
        if self.primary_metric is None:  # not given: the task's default (the validator above runs on given ones)
            self.primary_metric = names.metric(self.task, None).azure
        if self.task == "forecasting" and self.forecasting is None:
            raise ValueError("forecasting: a forecasting task needs forecasting.time_column_name (and "
                             "forecast_horizon)")
        if self.task != "forecasting" and self.forecasting is not None:
            raise ValueError(f"forecasting: settings for a forecasting task, and this one is {self.task}")
        if self.task == "forecasting" and self.featurization is not None and self.featurization.mode == "off":
            raise ValueError("featurization.mode: off is not allowed for forecasting (Azure refuses it too)")
        if self.validation_data is not None and isinstance(self.n_cross_validations, int):
            raise ValueError("n_cross_validations: give validation_data or n_cross_validations, not both")
        if self.validation_data is not None and self.validation_data_size is not None:
            raise ValueError("validation_data_size: give validation_data or validation_data_size, not both")
        if self.positive_label is not None and self.task != "classification":
            raise ValueError("positive_label: only a classification task has one")
        return self
