"""Sweep job spec (Azure reference §3.4): a search space, an objective and a trial command.

The trials themselves are ordinary command jobs (``cible.core.planning.sweeps.trial_job_spec``);
this module only says what a valid sweep is. Azure's rules that span fields (grid sampling takes
only ``choice``, Bayesian no early termination, every ``${{search_space.x}}`` names a
hyperparameter) are checked here, each reported against the key at fault.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cible.core.naming import ExperimentName, JobName

from .common import LowerStr, OptStr, SpecModel, StrMap
from .components import Problem, _empty_map, check_command_problems, raise_at
from .jobs import (
    MAX_DESCRIPTION_CHARS,
    MAX_DISPLAY_NAME_CHARS,
    MAX_NAME_KEY_CHARS,
    MAX_TIMEOUT_S,
    CommandText,
    Distribution,
    EnvironmentValue,
    EnvironmentVariables,
    InputValue,
    JobInput,
    JobLimits,
    JobOutput,
    JobResources,
    QueueSettings,
    Tags,
    check_spec_size,
)

# Bounds that keep a sweep's bookkeeping small: each trial is a job row, and a grid is listed
# whole by Optuna's GridSampler before the first trial.
MAX_TOTAL_TRIALS = 100_000
MAX_GRID_POINTS = 100_000
MAX_CHOICES = 10_000
MAX_INTERVALS = 10_000_000
# exp(709.78) is the largest float; log-scale bounds stay clear of it.
MAX_LOG_BOUND = 700.0
# `${{search_space.<name>}}` must be able to name it (expressions._REFERENCE).
_HYPERPARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Goal = Annotated[Literal["minimize", "maximize"], LowerStr]


def _lower_type(value: Any) -> Any:
    """Azure matches these ``type`` values case-insensitively (``Bandit``, ``Choice``)."""
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return {**value, "type": value["type"].lower()}
    return value


# ---- sampling algorithms ------------------------------------------------------------


class RandomSampling(SpecModel):
    type: Literal["random"] = "random"
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    rule: Annotated[Literal["random", "sobol"], LowerStr] = "random"


class GridSampling(SpecModel):
    type: Literal["grid"] = "grid"


class BayesianSampling(SpecModel):
    type: Literal["bayesian"] = "bayesian"


_ALGORITHMS = ("random", "grid", "bayesian")


def _sampling_shorthand(value: Any) -> Any:
    """``sampling_algorithm: Random`` is ``{type: random}``."""
    if isinstance(value, str):
        if value.lower() not in _ALGORITHMS:
            raise ValueError(f"{value!r} is not a sampling algorithm; one of {', '.join(_ALGORITHMS)}")
        return {"type": value.lower()}
    return _lower_type(value)


SamplingAlgorithm = Annotated[
    Union[RandomSampling, GridSampling, BayesianSampling],
    Field(discriminator="type"),
    BeforeValidator(_sampling_shorthand),
]


# ---- search space -------------------------------------------------------------------


def _choice_values(value: Any) -> Any:
    if not isinstance(value, list):
        return value  # pydantic says "a valid list"
    out = []
    for item in value:
        if isinstance(item, (_dt.date, _dt.datetime)):
            item = item.isoformat()
        if item is None or isinstance(item, (list, dict)):
            shown = "an empty value" if item is None else f"a {type(item).__name__}"
            raise ValueError(f"choice values are strings, numbers or booleans, not {shown} "
                             "(nested search spaces are not supported)")
        out.append(item)
    return out


class Choice(SpecModel):
    type: Literal["choice"] = "choice"
    values: Annotated[list[Union[StrictBool, StrictInt, StrictFloat, StrictStr]],
                      BeforeValidator(_choice_values), Field(min_length=1, max_length=MAX_CHOICES)]


class RandInt(SpecModel):
    type: Literal["randint"] = "randint"
    upper: int = Field(ge=1, le=2**62)  # exclusive: values are 0 .. upper-1


# Checks across fields are field validators of the later field (not model validators), so that an
# error is located at that key rather than at the union's tag, which the YAML does not have.


class _Range(SpecModel):
    min_value: FiniteFloat
    max_value: FiniteFloat

    @field_validator("max_value")
    @classmethod
    def _ordered(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("min_value")
        if low is not None and not low < value:
            raise ValueError(f"max_value ({value:g}) must be greater than min_value ({low:g})")
        return value


class _LogRange(_Range):
    # The range is exp(min_value) .. exp(max_value).
    min_value: FiniteFloat = Field(ge=-MAX_LOG_BOUND, le=MAX_LOG_BOUND)
    max_value: FiniteFloat = Field(ge=-MAX_LOG_BOUND, le=MAX_LOG_BOUND)


class Uniform(_Range):
    type: Literal["uniform"] = "uniform"


class LogUniform(_LogRange):
    type: Literal["loguniform"] = "loguniform"


class QUniform(_Range):
    type: Literal["quniform"] = "quniform"
    q: FiniteFloat = Field(gt=0)


class QLogUniform(_LogRange):
    type: Literal["qloguniform"] = "qloguniform"
    q: FiniteFloat = Field(gt=0)


class _Gaussian(SpecModel):
    mu: FiniteFloat
    sigma: FiniteFloat = Field(gt=0)


class _LogGaussian(_Gaussian):
    @field_validator("sigma")
    @classmethod
    def _representable(cls, value: float, info: ValidationInfo) -> float:
        # Samples are exp(mu ± ~7 sigma) (the sampler's quantiles stop at 1e-12).
        mu = info.data.get("mu")
        if mu is not None and abs(mu) + 8 * value > MAX_LOG_BOUND:
            raise ValueError(f"exp(mu ± 8·sigma) must stay within exp(±{MAX_LOG_BOUND:g}) to be a number; "
                             f"mu {mu:g} and sigma {value:g} go beyond it")
        return value


class Normal(_Gaussian):
    type: Literal["normal"] = "normal"


class LogNormal(_LogGaussian):
    type: Literal["lognormal"] = "lognormal"


class QNormal(_Gaussian):
    type: Literal["qnormal"] = "qnormal"
    q: FiniteFloat = Field(gt=0)


class QLogNormal(_LogGaussian):
    type: Literal["qlognormal"] = "qlognormal"
    q: FiniteFloat = Field(gt=0)


SearchParameter = Annotated[
    Union[Choice, RandInt, Uniform, LogUniform, QUniform, QLogUniform, Normal, LogNormal, QNormal, QLogNormal],
    Field(discriminator="type"),
    BeforeValidator(_lower_type),
]

# Which parameter types each algorithm can sample (Azure's rules, from the HyperDrive docs).
ALGORITHM_PARAMETERS: dict[str, tuple[str, ...]] = {
    "grid": ("choice",),
    "bayesian": ("choice", "uniform", "quniform"),
}


# ---- objective, early termination, limits ---------------------------------------------


class Objective(SpecModel):
    goal: Goal
    primary_metric: str = Field(min_length=1, max_length=MAX_NAME_KEY_CHARS)  # an MLflow metric key


class _Policy(SpecModel):
    # 0 is the SDK's default when unset; it means every interval (planning.early_termination).
    evaluation_interval: int = Field(1, ge=0, le=MAX_INTERVALS)
    delay_evaluation: int = Field(0, ge=0, le=MAX_INTERVALS)


class BanditPolicy(_Policy):
    type: Literal["bandit"] = "bandit"
    slack_factor: FiniteFloat | None = Field(None, ge=0)
    slack_amount: FiniteFloat | None = Field(None, ge=0)
    # Exactly one of the two: checked by SweepJob, where the error can be placed at the policy.


class MedianStoppingPolicy(_Policy):
    type: Literal["median_stopping"] = "median_stopping"


class TruncationSelectionPolicy(_Policy):
    type: Literal["truncation_selection"] = "truncation_selection"
    truncation_percentage: int = Field(ge=1, le=99)


EarlyTermination = Annotated[
    Union[BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy],
    Field(discriminator="type"),
    BeforeValidator(_lower_type),
]


class SweepLimits(SpecModel):
    max_total_trials: int = Field(1000, ge=1, le=MAX_TOTAL_TRIALS)
    max_concurrent_trials: int | None = Field(None, ge=1, le=MAX_TOTAL_TRIALS)  # None: max_total_trials
    timeout: int = Field(5_184_000, gt=0, le=MAX_TIMEOUT_S)  # seconds, the whole sweep
    trial_timeout: int | None = Field(None, gt=0, le=MAX_TIMEOUT_S)  # seconds, each trial

    @property
    def concurrent_trials(self) -> int:
        """How many trials may be live at once."""
        return min(self.max_concurrent_trials or self.max_total_trials, self.max_total_trials)


# ---- the trial ----------------------------------------------------------------------


class SweepTrial(SpecModel):
    """``trial:`` — a command, or (in pipelines) a command component inlined by the client.

    The component form carries ``type: command``, its identity (name, version, ...) and input
    definitions; an input the component declares that is also a hyperparameter takes the sampled
    value, the others take the sweep's inputs or their defaults.
    """

    command: CommandText
    code: str | None = None
    environment: EnvironmentValue | None = None  # as a command job: none runs on the host's Python
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    distribution: Distribution | None = None
    resources: JobResources | None = None
    limits: JobLimits | None = None
    # The command-component form.
    type: Annotated[Literal["command"] | None, LowerStr] = None
    name: str | None = Field(None, max_length=255)
    version: OptStr = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: StrMap = Field(default_factory=dict)
    is_deterministic: bool | None = None
    inputs: Annotated[dict[str, JobInput], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, JobOutput | None], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    additional_includes: list[str] | None = None


# ---- the sweep ----------------------------------------------------------------------


class SweepJob(SpecModel):
    """A ``type: sweep`` job: trials of ``trial`` with hyperparameters sampled from ``search_space``."""

    type: Literal["sweep"] = "sweep"
    name: JobName | None = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    experiment_name: ExperimentName | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: Tags = Field(default_factory=dict)
    compute: str | None = None
    # Validated before search_space, whose rules depend on it.
    sampling_algorithm: SamplingAlgorithm
    search_space: dict[str, SearchParameter] = Field(min_length=1)
    objective: Objective
    early_termination: EarlyTermination | None = None
    limits: SweepLimits = Field(default_factory=SweepLimits)
    trial: SweepTrial
    inputs: Annotated[dict[str, InputValue], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, JobOutput | None], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    resources: JobResources | None = None
    queue_settings: QueueSettings | None = None
    identity: dict[str, Any] | None = None
    # Read-only, server-populated: present in `az ml job show` output, ignored on create.
    status: str | None = None
    id: str | None = None
    creation_context: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @field_validator("limits", mode="before")
    @classmethod
    def _default_limits(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("search_space", mode="before")
    @classmethod
    def _hyperparameter_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or not _HYPERPARAMETER_NAME.fullmatch(key):
                    raise ValueError(f"{key!r} is not a hyperparameter name: up to 128 letters, digits, '_' and "
                                     "'-', starting with a letter or '_' (it is written ${{search_space.<name>}})")
        return value

    @property
    def algorithm(self) -> str:
        return self.sampling_algorithm.type

    @model_validator(mode="after")
    def _azure_rules(self) -> SweepJob:
        problems: list[Problem] = []

        def problem(loc: tuple[Any, ...], text: str, value: Any = None) -> None:
            problems.append((loc, text, value))

        allowed = ALGORITHM_PARAMETERS.get(self.algorithm)
        if allowed is not None:
            for name, parameter in self.search_space.items():
                if parameter.type not in allowed:
                    problem(("search_space", name, "type"), f"{self.algorithm} sampling supports only "
                            f"{', '.join(allowed)} parameters, not {parameter.type}", parameter.type)
        policy = self.early_termination
        if isinstance(policy, BanditPolicy) and (policy.slack_factor is None) == (policy.slack_amount is None):
            problem(("early_termination",), "a bandit policy takes exactly one of slack_factor (a ratio) or "
                    "slack_amount (an absolute distance)")
        if self.algorithm == "bayesian" and policy is not None:
            problem(("early_termination",), "bayesian sampling does not support early termination; remove "
                    "early_termination or use random sampling")
        if self.algorithm == "grid" and not problems:
            size = math.prod(len(p.values) for p in self.search_space.values())  # type: ignore[union-attr]
            if size > MAX_GRID_POINTS:
                problem(("search_space",), f"the grid has {size} points; at most {MAX_GRID_POINTS} are allowed")
        problems += self._command_problems()
        raise_at("SweepJob", problems)
        check_spec_size(self)
        return self

    def _command_problems(self) -> list[Problem]:
        """``${{inputs|outputs|search_space.x}}`` in the trial command name something defined."""
        declared = self.trial.inputs  # the command-component form declares its inputs
        given = set(self.inputs)
        given |= {n for n, d in declared.items() if d.default is not None or n in self.search_space}
        optional = {n for n, d in declared.items() if d.optional}
        outputs = set(self.outputs) | set(self.trial.outputs)
        return check_command_problems(("trial", "command"), self.trial.command, inputs=given, outputs=outputs,
                                      optional_inputs=optional, search_space=self.search_space.keys())
