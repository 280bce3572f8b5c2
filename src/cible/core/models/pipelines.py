"""Pipeline jobs and pipeline components (Azure reference §3.5-3.6).

A pipeline is a graph of steps: each step is a command (inline, or from a command component), a
sweep (``trial:`` a command component), a Spark program (inline, or from a spark component) or a
nested pipeline component. Steps are wired by
bindings, written as whole values: ``${{parent.inputs.x}}``, ``${{parent.outputs.y}}`` and
``${{parent.jobs.<step>.outputs.<o>}}`` (also ``.inputs.``). This module says what a valid graph
is, each problem reported against the key at fault; ``cible.core.planning.pipelines`` runs it.

Components arrive inlined (a mapping: the client reads local component files) or as registered
references (``azureml:<name>:<version>``, ``@latest``) that the server resolves; checks that need a
component's ports wait until it is resolved.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, StrictStr, Tag, field_validator, model_validator

from cible.core.naming import AssetName, ExperimentName, JobName

from .assets import Version
from .common import LowerStr, SpecModel, StrMap
from .components import (
    CommandComponent,
    ComponentInput,
    ComponentOutput,
    Problem,
    _empty_map,
    _outputs_map,
    input_value_problem,
    port_name_problems,
    raise_at,
    required_inputs,
)
from .jobs import MAX_DESCRIPTION_CHARS, MAX_DISPLAY_NAME_CHARS, MAX_SPEC_BYTES, InputValue, JobInput
from .pipeline_steps import (
    ARTIFACTS,
    STEP_TYPES,
    UNSUPPORTED_STEP_TYPES,
    Binding,
    CommandStep,
    PortOutput,
    StepInput,
    SweepStep,
    _component_kind,
    _component_reference,
    _inline_tag,
    _step_tag,
    _step_type,
    _StepBase,
    is_local_compute,
    parse_binding,
    sweep_job_dict,
)
from .spark_components import SparkComponent, SparkStep, spark_job_dict

__all__ = [
    "ARTIFACTS", "STEP_TYPES", "UNSUPPORTED_STEP_TYPES", "AnyStep", "Binding", "CommandStep", "PipelineComponent",
    "PipelineJob", "PipelineSettings", "PipelineStep", "PortOutput", "SparkComponent", "SparkStep", "Step",
    "StepInput", "SweepStep", "component_input_problems", "graph_problems", "is_local_compute", "parse_binding",
    "spark_job_dict", "step_component", "step_ports", "sweep_job_dict",
]

# Each step is a child job: a pipeline's size is bounded like any list of jobs a user makes at once.
MAX_STEPS = 1000
# A step's name is part of its child job's name (`<pipeline>_<step>`), which follows the job-name rule.
_STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}")


PipelineComponentValue = Annotated[
    Union[Annotated[StrictStr, Tag("reference")], Annotated["PipelineComponent", Tag("inline")]],
    Discriminator(_inline_tag), BeforeValidator(_component_reference), _component_kind("pipeline"),
]


class PipelineStep(_StepBase):
    """``type: pipeline``: a nested pipeline component, run as a child pipeline job."""

    type: Literal["pipeline"] = "pipeline"
    component: PipelineComponentValue


Step = Annotated[
    Union[Annotated[CommandStep, Tag("command")], Annotated[SweepStep, Tag("sweep")],
          Annotated[PipelineStep, Tag("pipeline")], Annotated[SparkStep, Tag("spark")]],
    Discriminator(_step_tag), BeforeValidator(_step_type),
]
AnyStep = Union[CommandStep, SweepStep, PipelineStep, SparkStep]


def step_component(step: AnyStep) -> CommandComponent | PipelineComponent | SparkComponent | None:
    """The component a step runs, when it is inlined (None: an inline command or Spark program, or a
    registered component not resolved yet)."""
    value = step.trial if isinstance(step, SweepStep) else step.component
    return value if isinstance(value, (CommandComponent, PipelineComponent, SparkComponent)) else None


def step_ports(step: AnyStep) -> tuple[dict[str, ComponentInput] | None, set[str] | None, set[str] | None]:
    """(input declarations, input names, output names) of a step; None where not known yet.

    An inline command or Spark step declares no input types: its ports are those it gives."""
    if isinstance(step, CommandStep) and step.component is None:
        return None, set(step.inputs), set(step.outputs) | {ARTIFACTS}
    if isinstance(step, SparkStep) and step.component is None:
        return None, set(step.inputs), set(step.outputs)
    component = step_component(step)
    if component is None:
        return None, None, None
    outputs = set(component.outputs) | ({ARTIFACTS} if isinstance(step, CommandStep) else set())
    return component.inputs, set(component.inputs), outputs


# ---- the graph -----------------------------------------------------------------------------


def graph_problems(jobs: Mapping[str, AnyStep], pipeline_inputs: Collection[str], pipeline_outputs: Collection[str],
                   known_values: Mapping[str, Any] | None = None) -> list[Problem]:
    """Everything wrong with how ``jobs`` are wired, each at its key: unknown steps and ports,
    values a component's inputs refuse, required inputs left out, ``local`` compute, cycles.

    ``known_values`` are the pipeline inputs' values where known at load (literals)."""
    known_values = known_values or {}
    problems: list[Problem] = []
    if len(jobs) > MAX_STEPS:
        problems.append(((), f"the pipeline has {len(jobs)} steps; at most {MAX_STEPS} are allowed", None))
    ports = {name: step_ports(step) for name, step in jobs.items()}
    depends: dict[str, list[str]] = {}
    for name, step in jobs.items():
        at: tuple[Any, ...] = ("jobs", name)
        depends[name] = []
        if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
            problems.append((at, f"{name!r} is not a step name: up to 128 letters, digits, '_' and '-', not "
                             "starting with '-'", name))
        declared, input_names, output_names = ports[name]

        def bound(value: Any, loc: tuple[Any, ...]) -> Binding | None:
            try:
                return parse_binding(value)
            except ValueError as exc:
                problems.append((loc, str(exc), value))
                return None

        if step.compute is not None:
            binding = bound(step.compute, at + ("compute",))
            if binding is not None and (binding.step is not None or binding.side != "inputs"):
                problems.append((at + ("compute",), f"a step's compute can be bound only to a pipeline input, not "
                                 f"'{binding}'", step.compute))
            elif binding is not None and binding.name not in pipeline_inputs:
                problems.append((at + ("compute",), _unknown("the pipeline", "input", binding.name, pipeline_inputs), None))
            else:
                value = known_values.get(binding.name) if binding else step.compute
                if isinstance(value, str) and is_local_compute(value):
                    problems.append((at + ("compute",), "'local' compute cannot run a pipeline step; name a "
                                     "compute target or leave it to the pipeline's default", step.compute))

        for port, value in step.inputs.items():
            loc = at + ("inputs", port)
            if input_names is not None and declared is not None and port not in input_names:
                problems.append((loc, _unknown(f"the {_what(step)}", "input", port, input_names), port))
                continue
            path_loc = loc + ("path",) if isinstance(value, JobInput) else loc
            binding = bound(value.path if isinstance(value, JobInput) else value, path_loc)
            if binding is None:
                if declared is not None and not isinstance(value, JobInput) and not _hold(value):
                    problem = input_value_problem(declared[port], value)
                    if problem:
                        problems.append((loc, problem, value))
                continue
            if binding.step is None:
                if binding.side == "outputs":
                    problems.append((path_loc, f"a step input cannot be bound to a pipeline output ('{binding}')",
                                     None))
                elif binding.name not in pipeline_inputs:
                    problems.append((path_loc, _unknown("the pipeline", "input", binding.name, pipeline_inputs), None))
                elif declared is not None and binding.name in known_values and not isinstance(value, JobInput):
                    problem = input_value_problem(declared[port], known_values[binding.name])
                    if problem:
                        problems.append((path_loc, f"pipeline input '{binding.name}': {problem}", None))
                continue
            if binding.step not in jobs:
                problems.append((path_loc, _unknown("the pipeline", "step", binding.step, jobs), None))
                continue
            _, other_inputs, other_outputs = ports[binding.step]
            names = other_outputs if binding.side == "outputs" else other_inputs
            if names is not None and binding.name not in names:
                problems.append((path_loc, _unknown(f"step '{binding.step}'", binding.side[:-1], binding.name,
                                                    names - {ARTIFACTS}), None))
                continue
            depends[name].append(binding.step)

        if declared is not None:
            given = set(step.inputs) | (set(step.search_space) if isinstance(step, SweepStep) else set())
            missing = [port for port in required_inputs(declared) if port not in given]
            if missing:
                problems.append((at + ("inputs",) if step.inputs else at,
                                 f"the {_what(step)} requires input{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(missing)}; give {'them' if len(missing) > 1 else 'it'} here", None))

        for port, value in step.outputs.items():
            loc = at + ("outputs", port)
            if output_names is not None and declared is not None and port not in output_names:
                problems.append((loc, _unknown(f"the {_what(step)}", "output", port, output_names - {ARTIFACTS}),
                                 port))
                continue
            path_loc = loc + ("path",) if isinstance(value, PortOutput) else loc
            target = value.path if isinstance(value, PortOutput) else value
            binding = bound(target, path_loc)
            if binding is None:
                if isinstance(value, str):
                    problems.append((loc, f"an output is a mapping (type, mode, path) or ${{{{parent.outputs.<name>}}}}, "
                                     f"not {value!r}", value))
                continue
            if binding.step is not None or binding.side != "outputs":
                problems.append((path_loc, f"a step output can be bound only to a pipeline output, not '{binding}'",
                                 None))
            elif binding.name not in pipeline_outputs:
                problems.append((path_loc, _unknown("the pipeline", "output", binding.name, pipeline_outputs), None))
    problems += _cycle_problems(depends)
    return problems


def _hold(value: Any) -> bool:
    """A literal that is an expression, checked elsewhere (a binding)."""
    return isinstance(value, str) and "${{" in value


def _what(step: AnyStep) -> str:
    component = step_component(step)
    kind = "trial component" if isinstance(step, SweepStep) else "component"
    return f"{kind} '{component.name}'" if component is not None and component.name else kind


def _unknown(owner: str, kind: str, name: Any, known: Collection[Any]) -> str:
    """``the pipeline has no step 'x'; its steps: a, b``."""
    listed = ", ".join(sorted(str(k) for k in known)) or "(none)"
    return f"{owner} has no {kind} '{name}'; its {kind}s: {listed}"


def _cycle_problems(depends: Mapping[str, list[str]]) -> list[Problem]:
    """A cycle among the steps, named in order (``a -> b -> a``): one problem per cycle found."""
    problems: list[Problem] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in depends:
        if state.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        state[start] = 1
        while stack:
            node, index = stack[-1]
            nexts = depends.get(node, [])
            if index == len(nexts):
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            stack[-1] = (node, index + 1)
            following = nexts[index]
            if state.get(following) == 1:
                cycle = path[path.index(following):] + [following]
                problems.append((("jobs", following), f"the steps form a cycle: {' -> '.join(cycle)}", None))
            elif not state.get(following) and following in depends:
                state[following] = 1
                stack.append((following, 0))
                path.append(following)
    return problems


# ---- the pipeline component ------------------------------------------------------------------


class PipelineComponent(SpecModel):
    """A ``type: pipeline`` component: steps with the component's own ports as ``parent``."""

    type: Annotated[Literal["pipeline"], LowerStr] = "pipeline"
    name: AssetName | None = None
    version: Version = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: StrMap = Field(default_factory=dict)
    inputs: Annotated[dict[str, ComponentInput], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, ComponentOutput], BeforeValidator(_outputs_map)] = Field(default_factory=dict)
    jobs: dict[str, Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _graph(self) -> PipelineComponent:
        problems = port_name_problems(self.inputs, self.outputs)
        for name, port in self.inputs.items():
            if port.type not in ("number", "integer", "boolean", "string") and port.default is not None:
                problems.append((("inputs", name, "default"), f"a pipeline component's {port.type} input cannot have "
                                 "a default: its data comes from the pipeline that uses the component", None))
        defaults = {name: port.default for name, port in self.inputs.items() if port.default is not None}
        problems += graph_problems(self.jobs, self.inputs, self.outputs, defaults)
        raise_at("PipelineComponent", problems)
        return self


# ---- the pipeline job ------------------------------------------------------------------------


class PipelineSettings(SpecModel):
    """``settings:``; other keys are tolerated (Azure's own 3a example has ``default_datestore``),
    kept, and named in the load's warnings."""

    model_config = ConfigDict(extra="allow")

    default_compute: str | None = None  # azureml:<compute>, or azureml:serverless
    default_datastore: str | None = None
    continue_on_step_failure: bool = True  # Azure's docs: true; its examples mostly set false
    force_rerun: bool = False

    @field_validator("default_compute")
    @classmethod
    def _not_local(cls, value: str | None) -> str | None:
        if value is not None and is_local_compute(value):
            raise ValueError("'local' compute cannot run pipeline steps; name a compute target")
        return value



class PipelineJob(SpecModel):
    """A ``type: pipeline`` job: ``jobs`` written here, or the steps of a pipeline ``component``."""

    type: Literal["pipeline"] = "pipeline"
    name: JobName | None = None
    display_name: str | None = Field(None, max_length=MAX_DISPLAY_NAME_CHARS)
    experiment_name: ExperimentName | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS)
    tags: StrMap = Field(default_factory=dict)
    compute: str | None = None  # the steps' compute when neither they nor settings.default_compute name one
    settings: Annotated[PipelineSettings, BeforeValidator(lambda v: {} if v is None else v)] = \
        Field(default_factory=PipelineSettings)
    inputs: Annotated[dict[str, InputValue], BeforeValidator(_empty_map)] = Field(default_factory=dict)
    outputs: Annotated[dict[str, PortOutput], BeforeValidator(_outputs_map)] = Field(default_factory=dict)
    jobs: dict[str, Step] | None = None
    component: PipelineComponentValue | None = None
    identity: dict[str, Any] | None = None
    # Read-only, server-populated: present in `az ml job show` output, ignored on create.
    status: str | None = None
    id: str | None = None
    creation_context: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @field_validator("compute")
    @classmethod
    def _not_local(cls, value: str | None) -> str | None:
        if value is not None and is_local_compute(value):
            raise ValueError("'local' compute cannot run pipeline steps; name a compute target")
        return value

    @model_validator(mode="after")
    def _graph(self) -> PipelineJob:
        problems: list[Problem] = []
        if self.jobs is None and self.component is None:
            problems.append(((), "missing required key 'jobs' in pipeline job (or 'component': a pipeline "
                             "component to run)", None))
        elif self.jobs is not None and self.component is not None:
            problems.append((("component",), "a pipeline job has 'jobs' or 'component', not both", None))
        elif self.jobs is not None:
            if not self.jobs:
                problems.append((("jobs",), "a pipeline needs at least one step", None))
            known = {k: v for k, v in self.inputs.items() if not isinstance(v, JobInput)}
            problems += graph_problems(self.jobs, self.inputs, self.outputs, known)
        elif isinstance(self.component, PipelineComponent):
            problems += component_input_problems(self.component, self.inputs, self.outputs)
        raise_at("PipelineJob", problems)
        size = len(self.model_dump_json(exclude_none=True).encode())
        if size > MAX_SPEC_BYTES:
            raise ValueError(f"the job spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES} are allowed "
                             "(keep long texts and data in files: `code`, inputs)")
        return self


def component_input_problems(component: PipelineComponent, inputs: Mapping[str, Any],
                             outputs: Collection[str]) -> list[Problem]:
    """A pipeline job in the ``component:`` form gives the component's inputs and outputs."""
    problems: list[Problem] = []
    for name, value in inputs.items():
        if name not in component.inputs:
            problems.append((("inputs", name), _unknown("the pipeline component", "input", name, component.inputs),
                             name))
        elif not isinstance(value, JobInput):
            problem = input_value_problem(component.inputs[name], value)
            if problem:
                problems.append((("inputs", name), problem, value))
    missing = [name for name in required_inputs(component.inputs) if name not in inputs]
    if missing:
        problems.append((("inputs",), f"the pipeline component requires input{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)}", None))
    for name in outputs:
        if name not in component.outputs:
            problems.append((("outputs", name), _unknown("the pipeline component", "output", name,
                                                         component.outputs), name))
    return problems


PipelineStep.model_rebuild()
PipelineComponent.model_rebuild()
PipelineJob.model_rebuild()
