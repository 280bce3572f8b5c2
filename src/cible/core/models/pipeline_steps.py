"""The steps of a pipeline and the values they give (Azure reference §3.5): bindings, ports,
command and sweep steps (spark steps: ``spark_components``). ``cible.core.models.pipelines`` holds
the graph they make.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Discriminator, Field, StrictStr, Tag, ValidationError, model_validator

from cible.core.errors import InvalidSpecError
from cible.core.naming import AssetName
from cible.core.specs.azureml.expressions import check_command
from cible.core.specs.azureml.refs import parse_asset_ref

from .assets import Version
from .common import LowerStr, SpecModel, StrMap
from .components import CommandComponent, Problem, _empty_map, _outputs_map, raise_at
from .jobs import (
    MAX_DESCRIPTION_CHARS,
    MAX_DISPLAY_NAME_CHARS,
    Distribution,
    EnvironmentValue,
    InputType,
    JobInput,
    JobLimits,
    JobResources,
    LiteralInput,
    OutputType,
    QueueSettings,
    _env_vars,
)
from .sweeps import EarlyTermination, Objective, SamplingAlgorithm, SearchParameter, SweepJob, SweepLimits

STEP_TYPES = ("command", "sweep", "pipeline", "spark")
UNSUPPORTED_STEP_TYPES = ("parallel", "automl", "data_transfer", "import")
_PORT = r"[A-Za-z_][A-Za-z0-9_]*"
_BINDING = re.compile(
    r"\$\{\{\s*parent\.(?:(?P<side>inputs|outputs)\.(?P<name>" + _PORT + r")"
    r"|jobs\.(?P<step>[A-Za-z0-9_][A-Za-z0-9_-]*)\.(?P<step_side>inputs|outputs)\.(?P<step_port>" + _PORT + r"))"
    r"\s*\}\}"
)
# The preview syntax (`${{inputs.x}}`, `${{jobs.a.outputs.o}}` in a step's inputs): said how to fix.
_OLD_BINDING = re.compile(r"\$\{\{\s*((?:inputs|outputs|jobs)\.[^}]*?)\s*\}\}")
ARTIFACTS = "artifacts"  # a command step's default artifacts folder: bindable whether declared or not


# ---- bindings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """One ``${{parent...}}`` reference: ``side`` inputs/outputs; ``step`` set for ``parent.jobs.<step>``."""

    side: Literal["inputs", "outputs"]
    name: str
    step: str | None = None

    def __str__(self) -> str:
        middle = f"jobs.{self.step}." if self.step else ""
        return f"${{{{parent.{middle}{self.side}.{self.name}}}}}"


def parse_binding(value: Any) -> Binding | None:
    """The binding ``value`` is, None when it is a plain value; ValueError when it holds ``${{``
    but is not a whole, well-formed binding."""
    if not isinstance(value, str) or "${{" not in value:
        return None
    match = _BINDING.fullmatch(value.strip())
    if match:
        if match["side"]:
            return Binding(match["side"], match["name"])  # type: ignore[arg-type]
        return Binding(match["step_side"], match["step_port"], match["step"])  # type: ignore[arg-type]
    old = _OLD_BINDING.fullmatch(value.strip())
    if old:
        raise ValueError(f"'{value}' is the preview syntax; bindings start with parent: "
                         f"'${{{{parent.{old[1]}}}}}'")
    raise ValueError(f"'{value}' is not a binding: a value is one whole ${{{{parent.inputs.<name>}}}}, "
                     "${{parent.outputs.<name>}} or ${{parent.jobs.<step>.outputs.<name>}}")


def is_local_compute(compute: str) -> bool:
    """``local`` (the submitting machine): Azure refuses it for pipeline steps."""
    return compute.strip().lower() in ("local", "azureml:local")


# ---- ports of steps and pipelines ------------------------------------------------------------


class StepInput(JobInput):
    """A data input given to a step; without ``type`` it takes the type the component declares."""

    type: InputType | None = None  # type: ignore[assignment]


class PortOutput(SpecModel):
    """A pipeline's or a step's output. Keys left out are taken from the component's declaration
    (a step) or the step output bound to it (a pipeline): only what is written overrides."""

    type: Annotated[OutputType | None, LowerStr] = None
    mode: Literal["rw_mount", "upload", "direct"] | None = None
    path: str | None = None
    name: AssetName | None = None  # register the output as this data or model asset
    version: Version = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)


def _value_tag(value: Any) -> str:
    return "object" if isinstance(value, (dict, SpecModel)) else "literal"


StepInputValue = Annotated[
    Union[Annotated[StepInput, Tag("object")], Annotated[LiteralInput, Tag("literal")]],
    Discriminator(_value_tag),
]
StepOutputValue = Annotated[
    Union[Annotated[PortOutput, Tag("object")], Annotated[StrictStr, Tag("literal")]],
    Discriminator(_value_tag),
]


def _component_reference(value: Any) -> Any:
    """A string component is a registered one (``azureml:<name>:<version>``, ``@latest``) or a local
    file the loader inlines when it knows the folder it is relative to."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith("file:") or text.lower().endswith((".yml", ".yaml")):
            return text
        try:
            ref = parse_asset_ref(text)
        except InvalidSpecError as exc:
            raise ValueError(exc.message) from None
        if ref is None or (ref.asset_type not in (None, "components")):
            raise ValueError(f"'{value}' is not a component: a local YAML file (./component.yml, file:...) or a "
                             "registered one (azureml:<name>:<version>, azureml:<name>@latest)")
        return text
    return value


def _inline_tag(value: Any) -> str:
    return "reference" if isinstance(value, str) else "inline"


def _component_kind(wanted: str) -> BeforeValidator:
    """A component of the other kind is said as such (not as a list of its keys the model refuses)."""
    def check(value: Any) -> Any:
        kind = None
        if isinstance(value, dict):  # without `type`, what its keys say it is
            shape = "pipeline" if "jobs" in value else "spark" if "entry" in value else \
                "command" if "command" in value else wanted
            kind = value.get("type", shape)
        if isinstance(kind, str) and kind.lower() in ("command", "pipeline", "spark") and kind.lower() != wanted:
            raise_at("Component", [(("type",), f"a {kind.lower()} component runs in a step of 'type: "
                                    f"{kind.lower()}'; this step's type is {wanted}", kind)])
        return value
    return BeforeValidator(check)


CommandComponentValue = Annotated[
    Union[Annotated[StrictStr, Tag("reference")], Annotated[CommandComponent, Tag("inline")]],
    Discriminator(_inline_tag), BeforeValidator(_component_reference), _component_kind("command"),
]


# ---- steps ------------------------------------------------------------------------------------


class _StepBase(SpecModel):
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: StrMap = Field(default_factory=dict)
    # A compute name, or ${{parent.inputs.<x>}} holding one.
    compute: str | None = None
    inputs: Annotated[dict[str, StepInputValue], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, StepOutputValue], BeforeValidator(_outputs_map)] = Field(default_factory=dict)
    identity: dict[str, Any] | None = None


class CommandStep(_StepBase):
    """``type: command``: an inline command (CommandJob's fields) or ``component:`` plus overrides."""

    type: Literal["command"] = "command"
    component: CommandComponentValue | None = None
    command: str | None = None
    code: str | None = None
    environment: EnvironmentValue | None = None
    environment_variables: Annotated[StrMap, BeforeValidator(_env_vars)] = Field(default_factory=dict)
    resources: JobResources | None = None
    distribution: Distribution | None = None
    limits: JobLimits | None = None
    queue_settings: QueueSettings | None = None
    services: dict[str, dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _inline_or_component(self) -> CommandStep:
        problems: list[Problem] = []
        if self.component is None:
            if self.command is None:
                problems.append((("command",), "a command step needs 'command' (an inline command) or 'component'",
                                 None))
            elif not self.command.strip():
                problems.append((("command",), "'command' must not be empty", self.command))
            else:
                problems += _inline_command_problems(self)
        else:
            for key in ("command", "code", "environment"):
                if getattr(self, key) is not None:
                    problems.append(((key,), f"'{key}' comes from the component; a step with 'component' cannot "
                                     "set it", None))
        raise_at("CommandStep", problems)
        return self


def _inline_command_problems(step: CommandStep) -> list[Problem]:
    try:
        check_command(step.command or "", inputs=step.inputs.keys(), outputs=step.outputs.keys())
    except InvalidSpecError as exc:
        found = exc.details if isinstance(exc.details, list) else [exc.message]
        return [(("command",), str(text), None) for text in found]
    return []


class SweepStep(_StepBase):
    """``type: sweep``: trials of a command component (``trial:``), hyperparameters in its inputs."""

    type: Literal["sweep"] = "sweep"
    trial: CommandComponentValue
    sampling_algorithm: SamplingAlgorithm
    search_space: dict[str, SearchParameter] = Field(min_length=1)
    objective: Objective
    early_termination: EarlyTermination | None = None
    limits: SweepLimits | None = None
    resources: JobResources | None = None
    queue_settings: QueueSettings | None = None

    @model_validator(mode="after")
    def _as_a_sweep(self) -> SweepStep:
        if not isinstance(self.trial, CommandComponent):
            return self  # checked once the server resolves the registered component
        problems: list[Problem] = [
            (("search_space", name), f"the trial component has no input '{name}' for this hyperparameter; its "
             f"inputs: {', '.join(self.trial.inputs) or '(none)'}", name)
            for name in self.search_space if name not in self.trial.inputs
        ]
        if not problems:  # the rules of a sweep job (sampling vs parameter types, the trial's command)
            spec = sweep_job_dict(self, self.trial, inputs=_dump_values(self.inputs),
                                  outputs=_dump_values(self.outputs), compute=None)
            try:
                SweepJob.model_validate(spec)
            except ValidationError as exc:
                problems += [(tuple(e["loc"]), e["msg"].removeprefix("Value error, "), None) for e in exc.errors()]
        raise_at("SweepStep", problems)
        return self


def _step_type(value: Any) -> Any:
    """A step's kind, before the union picks its model: unsupported kinds said as such."""
    if isinstance(value, SpecModel):
        return value
    if not isinstance(value, dict):
        shown = "empty" if value is None else f"a {type(value).__name__}"
        raise ValueError(f"a step is a mapping (type, component or command, inputs, outputs), not {shown}")
    kind = value.get("type", "command")
    if not isinstance(kind, str):
        raise_at("Step", [(("type",), f"must be a string, not a {type(kind).__name__}", kind)])
    kind = kind.lower()
    message = None
    if kind == "component":
        message = "'type: component' is the preview syntax; write 'type: command' (or 'pipeline') beside 'component:'"
    elif kind in UNSUPPORTED_STEP_TYPES:
        message = f"'{kind}' steps are not supported by cible yet; cible runs command, sweep, pipeline and spark steps"
    elif kind not in STEP_TYPES:
        message = (f"{kind!r} is not a step type; Azure's are {', '.join(STEP_TYPES + UNSUPPORTED_STEP_TYPES)}")
    if message:
        raise_at("Step", [(("type",), message, kind)])
    return {**value, "type": kind}


def _step_tag(value: Any) -> str:
    return value.type if isinstance(value, SpecModel) else value["type"]


def _dump_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json", exclude_none=True) if isinstance(v, SpecModel) else v
            for k, v in values.items()}


def sweep_job_dict(step: SweepStep, trial: CommandComponent, *, inputs: dict[str, Any], outputs: dict[str, Any],
                   compute: str | None) -> dict[str, Any]:
    """The SweepJob a sweep step runs as: its trial is the component (its input declarations say
    which inputs take the sampled hyperparameters)."""
    trial_spec = trial.model_dump(mode="json", exclude_none=True, exclude={"compute", "schema_"})
    spec: dict[str, Any] = {"type": "sweep", "trial": trial_spec, "inputs": inputs, "outputs": outputs}
    for key in ("sampling_algorithm", "search_space", "objective", "early_termination", "limits", "resources",
                "queue_settings"):
        value = getattr(step, key)
        if value is not None:
            spec[key] = value.model_dump(mode="json", exclude_none=True) if isinstance(value, SpecModel) else \
                {k: v.model_dump(mode="json", exclude_none=True) for k, v in value.items()}
    if step.identity is not None:
        spec["identity"] = step.identity
    if compute is not None:
        spec["compute"] = compute
    return spec
