"""Command components (Azure reference §3.6): a command with typed inputs, the unit of a pipeline step.

A component declares its ports (``inputs``/``outputs``); a step gives values for them. The checks
of one value against its declaration (type, ``min``/``max``, ``enum``) live here as
``input_value_problem`` so the pipeline model (at load) and the pipeline planner (when a bound
value is known) say the same thing.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictBool, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from cible.core.errors import InvalidSpecError
from cible.core.naming import AssetName
from cible.core.specs.azureml.expressions import check_command

from .assets import Version
from .common import LowerStr, SpecModel, StrMap
from .jobs import (
    MAX_DESCRIPTION_CHARS,
    MAX_DISPLAY_NAME_CHARS,
    CommandText,
    Distribution,
    EnvironmentValue,
    EnvironmentVariables,
    JobResources,
    OutputType,
)

LITERAL_TYPES = ("number", "integer", "boolean", "string")
DATA_TYPES = ("uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model", "triton_model")
ComponentInputType = Literal[
    "number", "integer", "boolean", "string",
    "uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model", "triton_model",
]
# Azure refuses these port names: each becomes an environment variable of the job's process.
RESERVED_PORT_NAMES = ("path", "ld_library_path", "user", "logname", "home", "pwd", "shell")
# Ports are written ${{inputs.<name>}}: Azure takes Python identifiers.
_PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")

Problem = tuple[tuple[Any, ...], str, Any]  # (loc below the model, message, the value at fault)


def raise_at(title: str, problems: list[Problem]) -> None:
    """Raise pydantic errors located at keys below the model being validated: pydantic prefixes
    them with the model's own place, and the loader maps each to its file:line."""
    if problems:
        # The text goes in the context: a message template would read `${{...}}` braces as fields.
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=PydanticCustomError("value_error", "{text}", {"text": text}), loc=loc, input=value)
            for loc, text, value in problems
        ])


def _empty_map(value: Any) -> Any:
    return {} if value is None else value  # `inputs:` with nothing under it


def _outputs_map(value: Any) -> Any:
    # `outputs: {model: }` is a default output; made explicit so a dump (exclude_none) keeps it.
    if value is None:
        return {}
    if isinstance(value, dict):
        return {key: {} if item is None else item for key, item in value.items()}
    return value


# ---- one value against its declaration ----------------------------------------------------


def _as_number(value: Any, integer: bool) -> float | int | None:
    """The number a literal stands for (YAML leaves `1e-3` a string), or None when it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if integer and not value.is_integer() else value
    if isinstance(value, str):
        try:
            return int(value.strip()) if integer else float(value.strip())
        except ValueError:
            return None
    return None


def input_value_problem(port: ComponentInput, value: Any) -> str | None:
    """Why ``value`` cannot be given to an input declared as ``port`` (a sentence), or None.

    Data inputs take a mapping (``{type, path}``) or a path; literal inputs a scalar of their type.
    """
    if port.type in DATA_TYPES:
        if isinstance(value, (bool, int, float)):
            return f"a {port.type} input takes data (a mapping with a path, or a binding), not {value!r}"
        return None
    if isinstance(value, (dict, list)):
        return f"a {port.type} input takes a literal value, not a {'mapping' if isinstance(value, dict) else 'list'}"
    if port.type == "boolean":
        if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
            return None
        return f"{value!r} is not a boolean (true or false)"
    if port.type in ("integer", "number"):
        number = _as_number(value, port.type == "integer")
        if number is None or (isinstance(number, float) and math.isnan(number)):
            return f"{value!r} is not {'an integer' if port.type == 'integer' else 'a number'}"
        if port.min is not None and number < port.min:
            return f"{value!r} is below the input's min {port.min:g}"
        if port.max is not None and number > port.max:
            return f"{value!r} is above the input's max {port.max:g}"
        return None
    if port.enum is not None and str(value) not in [str(item) for item in port.enum]:
        return f"{value!r} is not one of {', '.join(str(item) for item in port.enum)}"
    return None


# ---- ports ----------------------------------------------------------------------------------


class ComponentInput(SpecModel):
    """An input a component declares (``inputs.<name>``); a step gives its value."""

    type: Annotated[ComponentInputType, LowerStr]
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    default: Any = None
    optional: StrictBool = False
    min: float | None = None  # number and integer inputs
    max: float | None = None
    enum: list[Any] | None = None  # string inputs
    mode: Literal["ro_mount", "download", "direct", "eval_mount", "eval_download", "mount"] | None = None

    @field_validator("enum")
    @classmethod
    def _enum_values(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None:
            if not value:
                raise ValueError("an enum lists at least one value")
            if any(isinstance(item, (dict, list)) for item in value):
                raise ValueError("enum values are literals (strings, numbers)")
        return value

    @model_validator(mode="after")
    def _declaration(self) -> ComponentInput:
        problems: list[Problem] = []
        numeric = self.type in ("number", "integer")
        for key in ("min", "max"):
            if getattr(self, key) is not None and not numeric:
                problems.append(((key,), f"'{key}' applies to number and integer inputs, not {self.type}",
                                 getattr(self, key)))
        if self.enum is not None and self.type != "string":
            problems.append((("enum",), f"'enum' applies to string inputs, not {self.type}", self.enum))
        if numeric and self.min is not None and self.max is not None and self.min > self.max:
            problems.append((("min",), f"min {self.min:g} is above max {self.max:g}", self.min))
        if self.mode is not None and self.type in LITERAL_TYPES:
            problems.append((("mode",), f"'mode' applies to data inputs, not {self.type}", self.mode))
        if not problems and self.default is not None:
            problem = input_value_problem(self, self.default)
            if problem:
                problems.append((("default",), f"the default: {problem}", self.default))
        raise_at("ComponentInput", problems)
        return self


class ComponentOutput(SpecModel):
    """An output a component declares (``outputs.<name>``): a folder or file the command writes."""

    type: Annotated[OutputType, LowerStr] = "uri_folder"
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    mode: Literal["rw_mount", "upload", "direct"] | None = None


def port_name_problems(inputs: dict[str, Any], outputs: dict[str, Any]) -> list[Problem]:
    """Azure's rules for port names: identifiers, not reserved, one name for one port."""
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for kind, ports in (("inputs", inputs), ("outputs", outputs)):
        for name in ports:
            if not isinstance(name, str) or not _PORT_NAME.fullmatch(name):
                problems.append(((kind, name), f"{name!r} is not a port name: letters, digits and '_', starting "
                                 "with a letter or '_' (it is written ${{" + kind + ".<name>}})", name))
            elif name.lower() in RESERVED_PORT_NAMES:
                problems.append(((kind, name), f"'{name}' is reserved by Azure (it names an environment variable "
                                 f"of the job); reserved: {', '.join(RESERVED_PORT_NAMES)}", name))
            elif name.lower() in seen:
                problems.append(((kind, name), f"'{name}' is also the name of {seen[name.lower()]}; an input and an "
                                 "output cannot share a name (letter case aside)", name))
            else:
                seen[name.lower()] = f"{kind[:-1]} '{name}'"
    return problems


# ---- the component ---------------------------------------------------------------------


class CommandComponent(SpecModel):
    """A ``type: command`` component: a registered or inline unit of work with typed ports."""

    type: Annotated[Literal["command"], LowerStr] = "command"
    name: AssetName | None = None  # Azure's docs say lowercase and '_'; its own examples use '-' and capitals
    version: Version = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: StrMap = Field(default_factory=dict)
    is_deterministic: StrictBool = True
    command: CommandText
    code: str | None = None
    # Azure requires one; cible, as for a command job, runs without one on the node's Python.
    environment: EnvironmentValue | None = None
    environment_variables: EnvironmentVariables = Field(default_factory=dict)
    distribution: Distribution | None = None
    resources: JobResources | None = None
    inputs: Annotated[dict[str, ComponentInput], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, ComponentOutput], BeforeValidator(_outputs_map)] = Field(default_factory=dict)
    additional_includes: list[str] | None = None
    # Not a component field in Azure's schema, yet a shipped example (6a_tf_hello_world) sets it and
    # Azure only warns: accepted and ignored (the step's compute decides).
    compute: str | None = None

    @model_validator(mode="after")
    def _ports_and_command(self) -> CommandComponent:
        problems = port_name_problems(self.inputs, self.outputs)
        if not problems:
            problems += command_problems(self.command, self.inputs, self.outputs)
        raise_at("CommandComponent", problems)
        return self


def command_problems(command: str, inputs: dict[str, ComponentInput], outputs: dict[str, Any],
                     loc: tuple[Any, ...] = ("command",)) -> list[Problem]:
    """``${{inputs.x}}``/``${{outputs.y}}`` in a component's command name declared ports; an
    optional input without a default is used only inside ``$[[ ]]``."""
    given = [name for name, port in inputs.items() if not port.optional or port.default is not None]
    optional = [name for name, port in inputs.items() if port.optional and port.default is None]
    return check_command_problems(loc, command, inputs=given, outputs=outputs.keys(), optional_inputs=optional)


def check_command_problems(loc: tuple[Any, ...], command: str, **names: Any) -> list[Problem]:
    """What ``check_command(command, **names)`` finds in a command, as problems at ``loc``."""
    try:
        check_command(command, **names)
    except InvalidSpecError as exc:
        found = exc.details if isinstance(exc.details, list) else [exc.message]
        return [(loc, str(text), None) for text in found]
    return []


def required_inputs(inputs: dict[str, ComponentInput]) -> list[str]:
    """The inputs a step must give: neither optional nor defaulted."""
    return [name for name, port in inputs.items() if not port.optional and port.default is None]
