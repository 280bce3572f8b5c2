"""A pipeline's next moves, decided from its spec and its steps' child jobs (pure).

The orchestrator calls ``decide_pipeline`` on each pass with what it observed: each step's child
job (or the earlier job it reuses) and that job's status. A step starts as soon as every step it
binds to has Completed (or was Reused); its child job's spec is the step with every binding
resolved: ``${{parent.inputs.x}}`` to the pipeline's value, ``${{parent.jobs.a.outputs.o}}`` to
``azureml://jobs/<a's job>/outputs/o``, ``${{parent.outputs.y}}`` to the pipeline output's settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cible.core.errors import InvalidSpecError
from cible.core.models.components import DATA_TYPES, LITERAL_TYPES, CommandComponent, input_value_problem
from cible.core.models.jobs import JobInput
from cible.core.models.pipelines import (
    ARTIFACTS,
    AnyStep,
    CommandStep,
    PipelineComponent,
    PipelineJob,
    PipelineStep,
    PortOutput,
    SparkComponent,
    SparkStep,
    StepInput,
    SweepStep,
    is_local_compute,
    parse_binding,
    spark_job_dict,
    step_component,
    sweep_job_dict,
)
from cible.core.planning.pipeline_components import resolve_components

COMPLETED, FAILED, CANCELED, CANCEL_REQUESTED = "Completed", "Failed", "Canceled", "CancelRequested"
REUSED, SKIPPED = "Reused", "Skipped"
DONE = frozenset({COMPLETED, REUSED})  # a step whose outputs exist
ENDED = frozenset({COMPLETED, REUSED, FAILED, CANCELED, SKIPPED})
REUSE_KEY_VERSION = 1  # bump when what decides a step's result changes: earlier runs stop matching
_ABSENT = object()  # an optional input given no value (left out, so `$[[ ]]` drops)


@dataclass(frozen=True)
class StepView:
    """What the orchestrator sees of one step."""

    name: str
    job: str | None  # its child job, or the earlier job it reuses
    status: str | None  # a JobStatus value, "Reused", "Skipped"; None: not started
    error: dict[str, Any] | None = None
    # A sweep or nested pipeline step's outputs once it ended: output -> the URI of the data (its
    # best trial's, or the inner step's that made it), which is what a later step's reuse key names.
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StepLaunch:
    step: str
    spec: dict[str, Any]  # the child job: a CommandJob, SweepJob, PipelineJob or SparkJob dict
    reuse_key: str | None  # an earlier job with this key and Completed serves instead


@dataclass
class PipelineDecision:
    launch: list[StepLaunch] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # child job names
    skip: list[str] = field(default_factory=list)  # steps that will never run
    end: str | None = None  # "Completed", "Failed" or "Canceled"
    error: dict[str, Any] | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # pipeline output -> azureml://jobs/<job>/outputs/<o>


class _StepProblem(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


def decide_pipeline(spec: PipelineJob | Mapping[str, Any], steps: Mapping[str, StepView], *, cancel_requested: bool,
                    default_compute: str | None, force_rerun: bool = False,
                    components: Mapping[str, dict[str, Any]] | None = None) -> PipelineDecision:
    """The next moves of the pipeline ``spec`` given its ``steps`` (by step name; a step not in it
    has not started). ``components`` resolves registered component references the spec still has;
    ``default_compute`` is the compute of steps for which neither they nor the pipeline name one
    (None: the server's choice)."""
    try:
        graph = _Graph(resolve_components(spec, components or {}), default_compute, force_rerun)
    except InvalidSpecError as exc:
        jobs = spec.jobs if isinstance(spec, PipelineJob) else spec.get("jobs")
        return _fail_now(list(jobs or {}), steps, {"code": "InvalidSpec", "message": exc.message})
    order = list(graph.jobs)
    status = {name: (steps[name].status if name in steps else None) for name in order}
    live = [name for name in order if status[name] is not None and status[name] not in ENDED]
    not_started = [name for name in order if status[name] is None]

    if cancel_requested:
        cancel = [steps[n].job for n in live if status[n] != CANCEL_REQUESTED and steps[n].job]
        if live:
            return PipelineDecision(cancel=cancel)  # type: ignore[arg-type]
        return PipelineDecision(skip=not_started, end=CANCELED)

    failed = [name for name in order if status[name] == FAILED]
    if failed and not graph.continue_on_failure:
        return _fail_now(order, steps, _step_error(failed[0], steps[failed[0]]))

    blocked: set[str] = set()
    for name in graph.topological():
        if any(status[d] in (FAILED, CANCELED, SKIPPED) or d in blocked for d in graph.depends[name]):
            blocked.add(name)
    ready = [name for name in not_started
             if name not in blocked and all(status[d] in DONE for d in graph.depends[name])]
    decision = PipelineDecision(skip=[name for name in not_started if name in blocked])
    try:
        decision.launch = [graph.launch(name, steps) for name in ready]
    except _StepProblem as problem:
        return _fail_now(order, steps, {"code": "InvalidSpec", "message": f"step '{problem.step}': {problem.message}"})
    waiting = [name for name in not_started if name not in blocked and name not in ready]
    if live or decision.launch or waiting:
        return decision
    if failed:
        decision.end, decision.error = FAILED, _step_error(failed[0], steps[failed[0]])
    elif any(status[name] in (CANCELED, SKIPPED) for name in order):
        canceled = next((name for name in order if status[name] == CANCELED), None)
        decision.end = CANCELED
        if canceled is not None:  # canceled by someone else than this pipeline: said
            decision.error = {"code": "StepCanceled", "message": f"step '{canceled}' was canceled"}
    else:
        decision.end, decision.outputs = COMPLETED, graph.pipeline_outputs(steps)
    return decision


def _fail_now(order: list[str], steps: Mapping[str, StepView], error: dict[str, Any]) -> PipelineDecision:
    """End Failed at once: live steps canceled, steps not started never will be."""
    views = [steps.get(name) for name in order]
    cancel = [v.job for v in views if v is not None and v.job and v.status is not None
              and v.status not in ENDED and v.status != CANCEL_REQUESTED]
    skip = [name for name, v in zip(order, views) if v is None or v.status is None]
    return PipelineDecision(cancel=cancel, skip=skip, end=FAILED, error=error)


def _step_error(name: str, view: StepView) -> dict[str, Any]:
    error = dict(view.error or {})
    message = error.get("message") or "its job failed"
    return {**error, "code": error.get("code") or "StepFailed", "message": f"step '{name}' failed: {message}"}


class _Graph:
    """One pipeline's steps with its inputs' values and outputs' settings (the ``parent`` of bindings)."""

    def __init__(self, job: PipelineJob, default_compute: str | None, force_rerun: bool) -> None:
        settings = job.settings
        self.job = job
        self.continue_on_failure = settings.continue_on_step_failure
        self.force_rerun = settings.force_rerun or force_rerun
        self.default_compute = settings.default_compute or job.compute or default_compute
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        component = job.component
        if isinstance(component, PipelineComponent):
            self.jobs: dict[str, AnyStep] = dict(component.jobs)
            for name, port in component.inputs.items():
                if port.default is not None:
                    self.inputs[name] = port.default
            for name, out in component.outputs.items():
                self.outputs[name] = {"type": out.type, **({"mode": out.mode} if out.mode else {})}
        else:
            self.jobs = dict(job.jobs or {})
        for name, value in job.inputs.items():
            given = _pipeline_input(value)
            if given is not _ABSENT:
                self.inputs[name] = given
        for name, out in job.outputs.items():
            self.outputs[name] = {**self.outputs.get(name, {}), **out.model_dump(mode="json", exclude_none=True)}
        self.depends = {name: _depends(step) for name, step in self.jobs.items()}
        # Command steps whose default artifacts folder a later step reads (`outputs.artifacts`,
        # bindable undeclared, as Azure's hello-pipeline-default-artifacts does).
        self.artifacts_read = {binding.step for step in self.jobs.values() for binding in _bindings(step)
                               if binding.step is not None and binding.side == "outputs" and binding.name == ARTIFACTS}

    def topological(self) -> list[str]:
        """Steps after the steps they bind to (the model refuses cycles)."""
        done: dict[str, None] = {}

        def visit(name: str) -> None:
            if name not in done:
                for before in self.depends[name]:
                    visit(before)
                done[name] = None

        for name in self.jobs:
            visit(name)
        return list(done)

    # -- bindings ----------------------------------------------------------------------------
    def value(self, given: Any, steps: Mapping[str, StepView]) -> Any:
        """A step input as given, bindings resolved (``_ABSENT``: bound to nothing)."""
        if isinstance(given, StepInput):
            written = given.model_dump(mode="json", exclude_none=True)
            binding = parse_binding(given.path)
            if binding is None:
                return written
            bound = self.bound(binding, steps)
            if bound is _ABSENT:
                return _ABSENT
            if isinstance(bound, dict):
                return {**bound, **{k: v for k, v in written.items() if k != "path"}}
            return {**written, "path": str(bound)}
        binding = parse_binding(given)
        return given if binding is None else self.bound(binding, steps)

    def bound(self, binding: Any, steps: Mapping[str, StepView]) -> Any:
        if binding.step is None:
            return self.inputs.get(binding.name, _ABSENT)
        if binding.side == "outputs":
            job = steps[binding.step].job
            out_type = self.step_outputs(binding.step).get(binding.name, {}).get("type", "uri_folder")
            return {"type": out_type, "path": f"azureml://jobs/{job}/outputs/{binding.name}"}
        step = self.jobs[binding.step]
        if binding.name in step.inputs:
            return self.value(step.inputs[binding.name], steps)
        component = step_component(step)
        port = component.inputs.get(binding.name) if component is not None else None
        return _ABSENT if port is None or port.default is None else _typed(port, port.default)

    def step_outputs(self, name: str) -> dict[str, dict[str, Any]]:
        """A step's outputs as its child job gets them: declared, overridden by the step, and a
        binding to a pipeline output taking that output's type, mode and path."""
        step = self.jobs[name]
        component = step_component(step)
        result: dict[str, dict[str, Any]] = {}
        for port, declared in (component.outputs if component is not None else {}).items():
            result[port] = {"type": declared.type, **({"mode": declared.mode} if declared.mode else {})}
        for port, given in step.outputs.items():
            written = given.model_dump(mode="json", exclude_none=True) if isinstance(given, PortOutput) else {}
            binding = parse_binding(given if isinstance(given, str) else written.get("path"))
            override = dict(written)
            if binding is not None:
                override = {**self.outputs.get(binding.name, {}), **{k: v for k, v in written.items() if k != "path"}}
            result[port] = {**result.get(port, {}), **override}
        if name in self.artifacts_read and isinstance(step, CommandStep) and ARTIFACTS not in result:
            # Declared for the child job, so that its plan has the output a consumer's
            # azureml://jobs/<job>/outputs/artifacts names (the job's artifacts folder): left
            # undeclared, the consumer's submit was refused ("has no output 'artifacts'").
            result[ARTIFACTS] = {"type": "uri_folder"}
        for out in result.values():
            out.setdefault("type", "uri_folder")
        return result

    def step_inputs(self, name: str, steps: Mapping[str, StepView], *, defaults: bool,
                    skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """A step's inputs, bound; with ``defaults`` the component's defaults fill the gaps and a
        required input left without a value is a problem."""
        step = self.jobs[name]
        component = step_component(step)
        if component is None:  # an inline command: its inputs as given
            values = {port: self.value(given, steps) for port, given in step.inputs.items()}
            return {port: value for port, value in values.items() if value is not _ABSENT}
        result: dict[str, Any] = {}
        for port, declared in component.inputs.items():
            if port in skip:
                continue
            value = self.value(step.inputs[port], steps) if port in step.inputs else _ABSENT
            if value is _ABSENT and defaults and declared.default is not None:
                value = declared.default
            if value is _ABSENT:
                if defaults and not declared.optional:
                    raise _StepProblem(name, f"input '{port}' is required and has no value")
                continue
            if declared.type in LITERAL_TYPES and isinstance(value, dict):
                raise _StepProblem(name, f"input '{port}' is a {declared.type} input, given data ({value.get('path')})")
            problem = input_value_problem(declared, value)
            if problem:
                raise _StepProblem(name, f"input '{port}': {problem}")
            result[port] = _typed(declared, value)
        return result

    def compute(self, name: str) -> str | None:
        """The compute a step runs on: its own (bound), else the pipeline's default."""
        return self.own_compute(name) or self.default_compute

    def own_compute(self, name: str) -> str | None:
        """The compute the step itself names (a binding resolved), None when it names none."""
        value: Any = self.jobs[name].compute
        binding = parse_binding(value)
        if binding is not None:
            value = self.inputs.get(binding.name)
            if value is not None and not isinstance(value, str):
                raise _StepProblem(name, f"compute is bound to input '{binding.name}', which is not a compute name")
        if isinstance(value, str) and is_local_compute(value):
            raise _StepProblem(name, "'local' compute cannot run a pipeline step")
        return value or None

    # -- the child jobs ------------------------------------------------------------------------
    def launch(self, name: str, steps: Mapping[str, StepView]) -> StepLaunch:
        step = self.jobs[name]
        if isinstance(step, SweepStep):
            return StepLaunch(name, self._sweep(name, step, steps), None)
        if isinstance(step, PipelineStep):
            return StepLaunch(name, self._nested(name, step, steps), None)
        spec = self._spark(name, step, steps) if isinstance(step, SparkStep) else self._command(name, step, steps)
        component = step_component(step)
        deterministic = component.is_deterministic if isinstance(component, (CommandComponent, SparkComponent)) \
            else True
        keyed = self._keyed(spec, steps)
        return StepLaunch(name, spec, reuse_key(keyed) if deterministic and not self.force_rerun else None)

    def _keyed(self, spec: dict[str, Any], steps: Mapping[str, StepView]) -> dict[str, Any]:
        """``spec`` as its reuse key sees it: an input read from a sweep or nested pipeline step names
        the data that step's output is (a job that a rerun reuses), not the step's own job, which is
        new on each run (sweep and pipeline steps are never reused themselves): else a step after a
        nested pipeline was never reused, however unchanged."""
        data = {f"azureml://jobs/{view.job}/outputs/{out}": uri
                for other, view in steps.items() if view.job and other in self.jobs
                and isinstance(self.jobs[other], (SweepStep, PipelineStep)) for out, uri in view.outputs.items()}
        inputs = {port: {**value, "path": data[value["path"]]}
                  if isinstance(value, dict) and value.get("path") in data else value
                  for port, value in (spec.get("inputs") or {}).items()}
        return {**spec, "inputs": inputs}

    def _common(self, name: str, step: AnyStep, spec: dict[str, Any]) -> dict[str, Any]:
        spec["display_name"] = name
        if self.job.experiment_name:
            spec["experiment_name"] = self.job.experiment_name
        for key in ("tags", "description"):
            if getattr(step, key):
                spec[key] = getattr(step, key)
        identity = step.identity or self.job.identity
        if identity is not None:
            spec["identity"] = identity
        return spec

    def _command(self, name: str, step: CommandStep, steps: Mapping[str, StepView]) -> dict[str, Any]:
        component = step_component(step)
        source: Any = component if isinstance(component, CommandComponent) else step
        spec: dict[str, Any] = {"type": "command", "command": source.command}
        if source.code is not None:
            spec["code"] = source.code
        if source.environment is not None:
            spec["environment"] = _dump(source.environment)
        variables = {**(component.environment_variables if component is not None else {}),
                     **step.environment_variables}
        if variables:
            spec["environment_variables"] = variables
        # A step's resources or distribution replace the component's whole (as a dump keeps its defaults).
        for key in ("resources", "distribution"):
            value = getattr(step, key) or (getattr(component, key) if component is not None else None)
            if value is not None:
                spec[key] = _dump(value)
        for key in ("limits", "queue_settings", "services"):
            if getattr(step, key) is not None:
                spec[key] = _dump(getattr(step, key))
        spec["inputs"] = self.step_inputs(name, steps, defaults=True)
        spec["outputs"] = self.step_outputs(name)
        compute = self.compute(name)
        if compute is not None:
            spec["compute"] = compute
        return self._common(name, step, spec)

    def _spark(self, name: str, step: SparkStep, steps: Mapping[str, StepView]) -> dict[str, Any]:
        """A spark step's SparkJob. With resources.instance_type and no compute of its own it is serverless
        Spark (as on Azure): the pipeline's default compute is not given to it."""
        component = step_component(step)
        own = self.own_compute(name)
        serverless = own is None and step.resources is not None and step.resources.instance_type is not None
        spec = spark_job_dict(step, component if isinstance(component, SparkComponent) else None,
                              inputs=self.step_inputs(name, steps, defaults=True), outputs=self.step_outputs(name),
                              compute=None if serverless else own or self.default_compute)
        return self._common(name, step, spec)

    def _sweep(self, name: str, step: SweepStep, steps: Mapping[str, StepView]) -> dict[str, Any]:
        trial = step_component(step)
        assert isinstance(trial, CommandComponent)  # resolved by _resolved
        # The sweep applies the trial's defaults and puts the sampled values in the hyperparameters.
        inputs = self.step_inputs(name, steps, defaults=False, skip=tuple(step.search_space))
        spec = sweep_job_dict(step, trial, inputs=inputs, outputs=self.step_outputs(name), compute=self.compute(name))
        return self._common(name, step, spec)

    def _nested(self, name: str, step: PipelineStep, steps: Mapping[str, StepView]) -> dict[str, Any]:
        component = step_component(step)
        assert isinstance(component, PipelineComponent)  # resolved by _resolved
        settings: dict[str, Any] = {"continue_on_step_failure": self.continue_on_failure,
                                    "force_rerun": self.force_rerun}
        compute = self.compute(name)  # the nested steps' default: this step's compute, else this pipeline's
        if compute is not None:
            settings["default_compute"] = compute
        if self.job.settings.default_datastore is not None:
            settings["default_datastore"] = self.job.settings.default_datastore
        spec = {"type": "pipeline", "component": component.model_dump(mode="json", exclude_none=True,
                                                                      exclude={"schema_"}),
                "inputs": self.step_inputs(name, steps, defaults=False), "outputs": self.step_outputs(name),
                "settings": settings}
        return self._common(name, step, spec)

    def pipeline_outputs(self, steps: Mapping[str, StepView]) -> dict[str, str]:
        """Each pipeline output -> the step output bound to it, in the job that made it."""
        found: dict[str, str] = {}
        for name, step in self.jobs.items():
            for port, given in step.outputs.items():
                binding = parse_binding(given.path if isinstance(given, PortOutput) else given)
                if binding is not None and name in steps and steps[name].job:
                    found[binding.name] = f"azureml://jobs/{steps[name].job}/outputs/{port}"
        return found


def _pipeline_input(value: Any) -> Any:
    """A pipeline input's value: a literal, a data mapping, or a literal-typed input's default."""
    if isinstance(value, JobInput):
        if value.type in LITERAL_TYPES:
            return _ABSENT if value.default is None else value.default
        written = value.model_dump(mode="json", exclude_none=True)
        return {k: v for k, v in written.items() if k in ("type", "path", "mode")}
    return value


def _typed(port: Any, value: Any) -> Any:
    """A value as a component's input takes it: data as ``{type, path[, mode]}``."""
    if port.type not in DATA_TYPES:
        return value
    if isinstance(value, dict):
        kept = {k: v for k, v in value.items() if k in ("path", "mode")}
        return {"type": value.get("type") or port.type, **kept}
    return {"type": port.type, "path": str(value)}


def _bindings(step: AnyStep) -> list[Any]:
    """The bindings of a step's inputs."""
    found = [parse_binding(given.path if isinstance(given, StepInput) else given) for given in step.inputs.values()]
    return [binding for binding in found if binding is not None]


def _depends(step: AnyStep) -> list[str]:
    found: list[str] = []
    for binding in _bindings(step):
        if binding.step is not None and binding.step not in found:
            found.append(binding.step)
    return found


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json", exclude_none=True) if hasattr(value, "model_dump") else value


def reuse_key(spec: Mapping[str, Any]) -> str:
    """What decides a command or spark step's result, hashed: the same key means an earlier run's outputs serve.

    Its command, code snapshot, environment, inputs as bound (an upstream output is named by the job
    that made it, so a reused upstream keeps the key), its outputs' types and modes, environment
    variables, distribution and node count; a spark step's program too (entry, files, conf, args, the
    Spark runtime)."""
    material = {
        "version": REUSE_KEY_VERSION,
        "command": spec.get("command"),
        "code": spec.get("code"),
        "environment": spec.get("environment"),
        "inputs": spec.get("inputs") or {},
        "outputs": {name: {"type": out.get("type"), "mode": out.get("mode")}
                    for name, out in (spec.get("outputs") or {}).items()},
        "environment_variables": spec.get("environment_variables") or {},
        "distribution": spec.get("distribution"),
        "instance_count": (spec.get("resources") or {}).get("instance_count", 1),
    }
    if spec.get("type") == "spark":  # a command step's key stays as it was
        material["spark"] = {key: spec.get(key) for key in ("entry", "py_files", "jars", "files", "archives",
                                                            "conf", "args")}
        material["spark"]["runtime_version"] = (spec.get("resources") or {}).get("runtime_version")
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
