"""Load Azure ML CLI v2 YAML specs into cible's models.

Steps: parse (PyYAML safe_load semantics, with marks) -> ``--set``/``--name``
overrides -> dispatch on ``type`` -> validate -> resolve local paths against the
YAML's directory -> warn about keys cible accepts but does not act on yet.
Every problem is reported as ``file:line:col: field: message``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from cible.automl.spec import AutomlJob
from cible.core.errors import InvalidSpecError
from cible.core.models import COMPUTE_TYPES, CommandJob, Data, Environment, JobInput, Model, SweepJob
from cible.core.models.batch_endpoints import BatchDeployment, BatchEndpoint
from cible.core.models.components import CommandComponent
from cible.core.models.endpoints import DeploymentModel, OnlineDeployment, OnlineEndpoint
from cible.core.models.pipelines import PipelineComponent, PipelineJob
from cible.core.models.spark import SparkJob
from cible.core.models.spark_components import SparkComponent, SparkStep

from .components import inline_local_files, resolve_local_paths
from .diagnostics import SourceMap, raise_problems, validation_problems
from .ignored import ignored_present
from .overrides import parse_assignment, set_path
from .refs import classify_path, strip_file_prefix
from .yaml_source import ParsedYaml, Path_, parse_yaml

SpecKind = Literal["job", "environment", "model", "data", "compute", "component", "online-endpoint",
                   "online-deployment", "batch-endpoint", "batch-deployment"]

_ASSETS: dict[str, tuple[type[BaseModel], str]] = {
    "environment": (Environment, "environment"),
    "model": (Model, "model"),
    "data": (Data, "data asset"),
}
# Kinds whose model does not depend on a `type:` key (a deployment's type is a plain field).
_ENDPOINTS: dict[str, tuple[type[BaseModel], str]] = {
    "online-endpoint": (OnlineEndpoint, "online endpoint"),
    "online-deployment": (OnlineDeployment, "online deployment"),
    "batch-endpoint": (BatchEndpoint, "batch endpoint"),
    "batch-deployment": (BatchDeployment, "batch deployment"),
}
_RUNNABLE_JOB_TYPES = ("command", "sweep", "pipeline", "automl", "spark")
_UNSUPPORTED_JOB_TYPES = ("parallel",)


@dataclass
class LoadedSpec:
    entity: BaseModel  # CommandJob | Environment | Model | Data | one compute model | OnlineEndpoint | …
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    # Where in the file each warning's key is (`file:line:col`): kept apart from the text, which is
    # the server's text for the same key, so a client prints each warning once, with its place.
    locations: dict[str, str] = field(default_factory=dict)

    def located(self, warning: str) -> str:
        where = self.locations.get(warning)
        return f"{where}: {warning}" if where else warning


def load_spec(path: str | Path, kind: SpecKind, *, set_overrides: Sequence[str] = (),
              name: str | None = None) -> LoadedSpec:
    """Load a spec file; relative paths in it resolve against its directory."""
    file = Path(path).expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpecError(f"{path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise InvalidSpecError(f"{path}: cannot read the spec: {exc}") from None
    loaded = load_spec_text(text, kind, source=str(path), base_dir=file.parent,
                            set_overrides=set_overrides, name=name)
    loaded.path = file
    return loaded


def load_spec_text(text: str, kind: SpecKind, *, source: str = "<string>", base_dir: Path | None = None,
                   set_overrides: Sequence[str] = (), name: str | None = None) -> LoadedSpec:
    """Load a spec from YAML text. Without ``base_dir`` local paths are kept as written and not checked."""
    parsed = parse_yaml(text, source)
    return _load(parsed.data, kind, SourceMap(source, parsed), base_dir, set_overrides, name)


def load_spec_dict(data: dict, kind: SpecKind, *, base_dir: Path | None = None,
                   source: str = "<dict>") -> LoadedSpec:
    """Load an already-parsed spec (SDK objects, API bodies): same checks, no line numbers."""
    return _load(data, kind, SourceMap(source, ParsedYaml(data)), base_dir, (), None)


# ---- the pipeline ------------------------------------------------------------------


def _load(data: Any, kind: str, where: SourceMap, base_dir: Path | None,
          set_overrides: Sequence[str], name: str | None) -> LoadedSpec:
    if kind not in ("job", "compute", "component", *_ASSETS, *_ENDPOINTS):
        raise InvalidSpecError(f"unknown spec kind {kind!r}; expected job, component, environment, model, data, "
                               "compute, batch-endpoint, batch-deployment, online-endpoint or online-deployment")
    if data is None:
        raise InvalidSpecError(f"{where.source}: the spec is empty")
    if not isinstance(data, dict):
        raise_problems([where.problem((), f"a {kind} spec must be a mapping, not a {type(data).__name__}")])
    data = dict(data)
    for assignment in set_overrides:
        parts, value = parse_assignment(assignment)
        set_path(data, parts, value, assignment)
        where.overrides[parts] = f"--set {assignment}"
    if name is not None:
        data["name"] = name
        where.overrides[("name",)] = f"--name {name}"

    warnings: list[str] = []
    model, label = _dispatch(kind, data, where)
    if model in (CommandJob, SparkJob, OnlineDeployment, BatchDeployment):
        _inline_file_environment(data, where, base_dir, warnings)
    elif model is SweepJob and isinstance(data.get("trial"), dict):
        data["trial"] = dict(data["trial"])  # the caller's mapping stays as it was
        _inline_file_environment(data["trial"], where, base_dir, warnings, prefix=("trial",))
    elif model in (PipelineJob, PipelineComponent, CommandComponent, SparkComponent):
        inline_local_files(data, where, base_dir)  # local component and environment files, read here
    try:
        entity = model.model_validate(data)
    except ValidationError as exc:
        raise_problems(validation_problems(exc, model, data, where, label))

    _PathResolver(where, base_dir).resolve(entity, data)
    # Before an environment file's warnings: the order the server lists them in, from the inlined body.
    ignored = ignored_present(kind, data)
    warnings[:0] = [_ignored_warning(text) for _, text in ignored]
    locations = {_ignored_warning(text): where.location(path) for path, text in ignored}
    return LoadedSpec(entity=entity, warnings=warnings, locations=locations)


def _ignored_warning(text: str) -> str:
    # The text alone (its place is in LoadedSpec.locations): the server loads the same spec from the
    # request body and stores this text with the job, so a client can tell it has printed it already.
    return f"'{text}' is accepted but not acted on by cible yet"


def _dispatch(kind: str, data: dict, where: SourceMap) -> tuple[type[BaseModel], str]:
    """Pick the model for ``kind`` and the spec's ``type`` (lowercased, as Azure matches it)."""
    if kind in _ASSETS:
        return _ASSETS[kind]
    if kind in _ENDPOINTS:
        return _ENDPOINTS[kind]
    spec_type = data.get("type")
    if isinstance(spec_type, str):
        spec_type = data["type"] = spec_type.lower()
    elif spec_type is not None:  # a list or a mapping cannot be looked up as a type
        raise_problems([where.problem(("type",), f"must be a string, not a {type(spec_type).__name__}")])
    if kind == "component":
        if spec_type is None or spec_type == "command":
            return CommandComponent, "command component"
        if spec_type == "pipeline":
            return PipelineComponent, "pipeline component"
        if spec_type == "spark":
            return SparkComponent, "spark component"
        raise_problems([where.problem(("type",), f"{spec_type!r} is not a component type cible runs; command, "
                                      "pipeline or spark")])
    if kind == "job":
        if spec_type is None or spec_type == "command":
            return CommandJob, "command job"
        if spec_type == "pipeline":
            return PipelineJob, "pipeline job"
        if spec_type == "sweep":
            return SweepJob, "sweep job"
        if spec_type == "automl":
            return AutomlJob, "automl job"
        if spec_type == "spark":
            return SparkJob, "spark job"
        if spec_type in _UNSUPPORTED_JOB_TYPES:
            message = (f"'{spec_type}' jobs are not supported by cible yet; command, sweep, pipeline, automl "
                       "and spark jobs can run")
        else:
            message = (f"{spec_type!r} is not a job type; Azure job types are "
                       f"{', '.join(_RUNNABLE_JOB_TYPES + _UNSUPPORTED_JOB_TYPES)}")
        raise_problems([where.problem(("type",), message)])
    if spec_type is None:
        raise_problems([where.problem((), f"missing required key 'type' in compute; one of {', '.join(COMPUTE_TYPES)}",
                                      show_field=False)])
    if spec_type not in COMPUTE_TYPES:
        raise_problems([where.problem(("type",), f"{spec_type!r} is not one of {', '.join(COMPUTE_TYPES)}")])
    return COMPUTE_TYPES[spec_type], f"{spec_type} compute"


def _is_file_reference(value: str) -> bool:
    if value.lower().startswith("file:"):
        return True
    # `environment: ./env.yml` without the prefix: a YAML file is never an asset name.
    return value.lower().endswith((".yml", ".yaml")) and not value.lower().startswith("azureml:")


def _inline_file_environment(data: dict, where: SourceMap, base_dir: Path | None, warnings: list[str],
                             prefix: Path_ = ()) -> None:
    """``environment: file:./env.yml`` -> that file's Environment, its paths resolved against its own directory.

    ``data`` holds the ``environment`` key: the job, or (``prefix`` ``("trial",)``) a sweep's trial.
    """
    value = data.get("environment")
    if not isinstance(value, str) or not _is_file_reference(value):
        return
    target = Path(strip_file_prefix(value)).expanduser()
    if not target.is_absolute():
        target = (base_dir or Path.cwd()) / target
    if not target.is_file():
        raise_problems([where.problem(prefix + ("environment",),
                                      f"environment file {value!r} not found (looked for {target})")])
    loaded = load_spec(target, "environment")
    data["environment"] = loaded.entity
    # Named as in the job ('environment.os_type'), as the server names them from the inlined body.
    inlined = loaded.entity.model_dump(mode="json", exclude_none=True)
    warnings.extend(_ignored_warning(text)
                    for _, text in ignored_present("environment", inlined, prefix + ("environment",)))


class _PathResolver:
    """Makes local paths absolute (relative to the YAML's directory) and checks they exist."""

    def __init__(self, where: SourceMap, base_dir: Path | None) -> None:
        self.where = where
        self.base_dir = base_dir

    def local(self, value: str, path: Path_, what: str) -> str:
        try:
            kind = classify_path(value)
        except InvalidSpecError as exc:
            raise_problems([self.where.problem(path, exc.message)])
        if kind != "local" or self.base_dir is None:
            return value
        target = Path(strip_file_prefix(value)).expanduser()
        if not target.is_absolute():
            target = self.base_dir / target
        target = target.resolve()
        if not target.exists():
            raise_problems([self.where.problem(path, f"{what} {value!r} does not exist (looked for {target})")])
        return str(target)

    def resolve(self, entity: BaseModel, data: dict) -> None:
        if isinstance(entity, (CommandJob, SparkJob)):
            self.job(entity, data)
            if isinstance(entity, SparkJob):
                self.spark_files(entity)
        elif isinstance(entity, SweepJob):
            self.sweep(entity, data)
        elif isinstance(entity, AutomlJob):
            for name in ("training_data", "validation_data", "test_data"):
                given = getattr(entity, name)
                if given is not None:
                    given.path = self.local(given.path, (name, "path"), f"{name} path")
        elif isinstance(entity, (PipelineJob, PipelineComponent, CommandComponent, SparkComponent)):
            resolve_local_paths(entity, self)
        elif isinstance(entity, Environment):
            self.environment(entity, ())
        elif isinstance(entity, (Model, Data)):
            entity.path = self.local(entity.path, ("path",), f"{type(entity).__name__.lower()} path")
        elif isinstance(entity, (OnlineDeployment, BatchDeployment)):
            self.deployment(entity, data)

    def spark_files(self, job: SparkJob | SparkComponent | SparkStep, prefix: Path_ = ()) -> None:
        """A Spark job's entry file and its py_files, jars, files and archives are in its (local) code folder
        (also a spark component's or an inline spark step's, `prefix` its place)."""
        if self.base_dir is None or job.code is None or not Path(job.code).is_absolute():
            return  # kept as written, or not local (a registered code asset)
        folder = Path(job.code)
        named = [(("entry", "file"), job.entry.file)] if job.entry.file else []
        for key in ("py_files", "jars", "files", "archives"):
            # An archive may be renamed on the executors: `data.zip#data`.
            named += [((key, i), item.split("#", 1)[0] if key == "archives" else item)
                      for i, item in enumerate(getattr(job, key) or ())]
        for path, item in named:
            if not folder.is_dir():
                raise_problems([self.where.problem(prefix + ("code",), f"{job.code} is a file; code is the folder "
                                                   "that holds the entry file")])
            if "://" not in item and not (folder / strip_file_prefix(item)).is_file():
                raise_problems([self.where.problem(prefix + path, f"{item!r} not found in the code folder {folder}")])

    def job(self, job: CommandJob | SparkJob, data: dict) -> None:
        if job.code is not None:
            job.code = self.local(job.code, ("code",), "code folder")
        for input_name, value in job.inputs.items():
            if isinstance(value, JobInput) and value.path is not None:
                value.path = self.local(value.path, ("inputs", input_name, "path"), f"input '{input_name}' path")
        # An environment from `file:` was already resolved against its own file.
        if isinstance(job.environment, Environment) and isinstance(data.get("environment"), dict):
            self.environment(job.environment, ("environment",))

    def sweep(self, sweep: SweepJob, data: dict) -> None:
        trial, trial_data = sweep.trial, data.get("trial") or {}
        if trial.code is not None:
            trial.code = self.local(trial.code, ("trial", "code"), "code folder")
        for input_name, value in sweep.inputs.items():
            if isinstance(value, JobInput) and value.path is not None:
                value.path = self.local(value.path, ("inputs", input_name, "path"), f"input '{input_name}' path")
        if isinstance(trial.environment, Environment) and isinstance(trial_data.get("environment"), dict):
            self.environment(trial.environment, ("trial", "environment"))

    def environment(self, env: Environment, prefix: Path_) -> None:
        if isinstance(env.conda_file, str):
            env.conda_file = self.local(env.conda_file, prefix + ("conda_file",), "conda file")
        if env.build is not None:
            env.build.path = self.local(env.build.path, prefix + ("build", "path"), "build context")

    def deployment(self, deployment: OnlineDeployment | BatchDeployment, data: dict) -> None:
        if isinstance(deployment.model, DeploymentModel):
            deployment.model.path = self.local(deployment.model.path, ("model", "path"), "model path")
        code = deployment.code_configuration
        if code is not None:
            code.code = self.local(code.code, ("code_configuration", "code"), "code folder")
            self.scoring_script(code.code, code.scoring_script)
        # An environment from `file:` was already resolved against its own file.
        if isinstance(deployment.environment, Environment) and isinstance(data.get("environment"), dict):
            self.environment(deployment.environment, ("environment",))

    def scoring_script(self, code: str, script: str) -> None:
        """The scoring script is a file in the (local, resolved) code folder: said at load, not at deploy."""
        if self.base_dir is None or not Path(code).is_absolute():
            return  # kept as written, or not local (a registered code asset)
        folder = Path(code)
        if not folder.is_dir():
            raise_problems([self.where.problem(("code_configuration", "code"),
                                               f"{code} is a file; code is the folder that holds the scoring script")])
        if not (folder / script).is_file():
            raise_problems([self.where.problem(("code_configuration", "scoring_script"),
                                               f"scoring script {script!r} not found in the code folder {folder}")])
