"""Spark components and spark steps of pipelines (Azure reference §3.6, §3.9).

A ``type: spark`` component is a Spark job's program (code, entry, py_files, jars, files, archives,
conf, args, environment) with typed ports, as a command component is a command's. A ``type: spark``
step runs one: ``component:`` (inline, a local file the loader inlines, or a registered
``azureml:<name>:<version>``), or the Spark fields written on the step itself. As on Azure, a step
with a component sets what decides *where* and *with what* it runs — ``resources`` (serverless
Spark), ``compute``, ``identity``, ``conf`` (merged over the component's), inputs and outputs —
and takes its program from the component. Each step runs as a ``type: spark`` child job
(``cible.core.planning.pipelines``), checked here with ``SparkJob``'s own rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    ValidationError,
    model_validator,
)

from cible.core.naming import AssetName

from .assets import Version
from .common import LowerStr, SpecModel, StrMap
from .components import (
    ComponentInput,
    ComponentOutput,
    Problem,
    _empty_map,
    _outputs_map,
    check_command_problems,
    command_problems,
    port_name_problems,
    raise_at,
)
from .jobs import MAX_DESCRIPTION_CHARS, MAX_DISPLAY_NAME_CHARS, EnvironmentValue
from .pipeline_steps import _component_kind, _component_reference, _inline_tag, _StepBase
from .spark import SparkConf, SparkEntry, SparkJob, SparkPaths, SparkResources

PROGRAM_KEYS = ("code", "entry", "py_files", "jars", "files", "archives", "args", "environment")
_LISTS = ("py_files", "jars", "files", "archives")


class SparkComponent(SpecModel):
    """A ``type: spark`` component: a Spark program with typed inputs and outputs."""

    type: Annotated[Literal["spark"], LowerStr] = "spark"
    name: AssetName | None = None
    version: Version = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: StrMap = Field(default_factory=dict)
    is_deterministic: StrictBool = True
    code: str | None = None
    entry: SparkEntry
    py_files: SparkPaths = Field(default_factory=list)
    jars: SparkPaths = Field(default_factory=list)
    files: SparkPaths = Field(default_factory=list)
    archives: SparkPaths = Field(default_factory=list)
    conf: SparkConf = Field(default_factory=dict)
    args: str | None = None
    # As a Spark job's: it runs in its Spark runtime's environment unless the workspace says otherwise.
    environment: EnvironmentValue | None = None
    inputs: Annotated[dict[str, ComponentInput], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, ComponentOutput], BeforeValidator(_outputs_map)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ports_args_and_conf(self) -> SparkComponent:
        problems = port_name_problems(self.inputs, self.outputs)
        if not problems and self.args is not None:
            problems += command_problems(self.args, self.inputs, self.outputs, loc=("args",))
        if not problems:  # what a Spark job of this program would be refused for (conf, entry and jars)
            problems += spark_job_problems(_program(self, self.conf))
        raise_at("SparkComponent", problems)
        return self


SparkComponentValue = Annotated[
    Annotated[StrictStr, Tag("reference")] | Annotated[SparkComponent, Tag("inline")],
    Discriminator(_inline_tag), BeforeValidator(_component_reference), _component_kind("spark"),
]


class SparkStep(_StepBase):
    """``type: spark``: a Spark component (``component:``), or a Spark program written on the step."""

    type: Literal["spark"] = "spark"
    component: SparkComponentValue | None = None
    code: str | None = None
    entry: SparkEntry | None = None
    py_files: SparkPaths | None = None
    jars: SparkPaths | None = None
    files: SparkPaths | None = None
    archives: SparkPaths | None = None
    conf: SparkConf | None = None  # over the component's, key by key
    args: str | None = None
    environment: EnvironmentValue | None = None
    # instance_type without compute: serverless Spark (the pipeline's default compute does not apply)
    resources: SparkResources | None = None

    @model_validator(mode="after")
    def _inline_or_component(self) -> SparkStep:
        problems: list[Problem] = []
        if self.component is None:
            if self.entry is None:
                problems.append((("entry",), ("a spark step needs 'entry' (a Python file or a JVM class in its "
                                              "code) or 'component' (a spark component)"), None))
            elif self.args is not None:
                problems += check_command_problems(("args",), self.args, inputs=self.inputs.keys(),
                                                   outputs=self.outputs.keys())
        else:
            for key in PROGRAM_KEYS:
                if getattr(self, key) is not None:
                    problems.append(((key,), (f"'{key}' comes from the component; a step with 'component' "
                                              "cannot set it (a step sets conf, resources, compute, identity, "
                                              "inputs and outputs)"), None))
        component = self.component if isinstance(self.component, SparkComponent) else None
        if not problems and (component is not None or self.component is None):
            # The child job's rules (a registered component's wait until the server resolves it).
            problems += spark_job_problems(spark_job_dict(self, component, inputs={}, outputs={}, compute=None))
        raise_at("SparkStep", problems)
        return self


def _program(source: SparkComponent | SparkStep, conf: dict[str, Any]) -> dict[str, Any]:
    """The Spark job fields of a component or an inline step (JSON types)."""
    spec: dict[str, Any] = {"type": "spark"}
    if source.entry is not None:
        spec["entry"] = source.entry.model_dump(mode="json", exclude_none=True)
    for key in ("code", "args"):
        if getattr(source, key) is not None:
            spec[key] = getattr(source, key)
    for key in _LISTS:
        if getattr(source, key):
            spec[key] = list(getattr(source, key))
    if conf:
        spec["conf"] = conf
    if source.environment is not None:
        environment = source.environment
        spec["environment"] = environment.model_dump(mode="json", exclude_none=True) \
            if isinstance(environment, SpecModel) else environment
    return spec


def spark_job_dict(step: SparkStep, component: SparkComponent | None, *, inputs: dict[str, Any],
                   outputs: dict[str, Any], compute: str | None) -> dict[str, Any]:
    """The SparkJob a spark step runs as: the component's program (or the step's own), its conf
    updated by the step's, the step's resources, identity and compute."""
    conf = {**(component.conf if component is not None else {}), **(step.conf or {})}
    spec = _program(component if component is not None else step, conf)
    if step.resources is not None:
        spec["resources"] = step.resources.model_dump(mode="json", exclude_none=True)
    spec["inputs"], spec["outputs"] = inputs, outputs
    if step.identity is not None:
        spec["identity"] = step.identity
    if compute is not None:
        spec["compute"] = compute
    return spec


def spark_job_problems(spec: dict[str, Any]) -> list[Problem]:
    """What ``SparkJob`` refuses in ``spec``, as problems at the same keys (one its whole-job checks
    find, ``conf: ...``, at the key its message starts with)."""
    try:
        SparkJob.model_validate(spec)
    except ValidationError as exc:
        problems: list[Problem] = []
        for found in exc.errors():
            loc, message = tuple(found["loc"]), found["msg"].removeprefix("Value error, ")
            head, colon, rest = message.partition(": ")
            if not loc and colon and head.split(".")[0] in SparkJob.model_fields:
                loc, message = tuple(head.split(".")), rest
            problems.append((loc, message, None))
        return problems
    return []
