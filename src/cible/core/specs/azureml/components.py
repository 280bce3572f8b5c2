"""Local files in pipeline jobs and components, read on the client (Azure reference §1.1, §3.5-3.6).

Before validation, ``component: ./x.yml`` and ``component: file:./x.yml`` of a step (a sweep
step's ``trial: ./x.yml``, a pipeline job's own ``component:``) are loaded as components and
replaced by their content, their own relative paths (code, additional_includes, environment files,
their components) resolved against *their* file's folder; ``environment: file:...`` of an inline
command or spark step is inlined the same way. A spark component's (or inline spark step's) entry
file, py_files, jars, files and archives are checked in its code folder, as a Spark job's are. Registered components (``azureml:<name>:<version>``,
``@latest``) stay strings: the server resolves them. After validation, local paths written in the
pipeline itself are made absolute and checked, as a command job's are.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from cible.core.models.components import CommandComponent
from cible.core.models.pipelines import (
    STEP_TYPES,
    CommandStep,
    PipelineComponent,
    PipelineJob,
    SparkComponent,
    SparkStep,
    StepInput,
    SweepStep,
    parse_binding,
    step_component,
)

from .diagnostics import SourceMap, raise_problems
from .refs import strip_file_prefix
from .yaml_source import Path_

# The component files being loaded, outermost first: a file that includes itself is refused.
_LOADING: ContextVar[tuple[Path, ...]] = ContextVar("cible_component_files", default=())


def is_file_reference(value: Any) -> bool:
    """``file:...`` or a ``.yml``/``.yaml`` path: never a registered asset's name."""
    if not isinstance(value, str):
        return False
    lowered = value.strip().lower()
    return lowered.startswith("file:") or (lowered.endswith((".yml", ".yaml")) and not lowered.startswith("azureml:"))


def inline_local_files(data: dict, where: SourceMap, base_dir: Path | None, prefix: Path_ = ()) -> None:
    """Replace, in ``data`` (a pipeline job or a component, as parsed), each local component or
    environment file by its content. Without ``base_dir`` nothing can be read: strings stay."""
    if base_dir is None:
        return
    kind = data.get("type")
    if isinstance(kind, str) and kind.lower() == "pipeline":
        _inline_key(data, "component", where, base_dir, prefix)
        jobs = data.get("jobs")
        if isinstance(jobs, dict):
            data["jobs"] = jobs = dict(jobs)  # the caller's mapping stays as it was
            for name, step in jobs.items():
                # A step cible cannot run is refused by validation, not for its files.
                if isinstance(step, dict) and str(step.get("type", "command")).lower() in STEP_TYPES:
                    jobs[name] = step = dict(step)
                    for key in ("component", "trial"):
                        _inline_key(step, key, where, base_dir, prefix + ("jobs", name))
                    _inline_environment(step, where, base_dir, prefix + ("jobs", name))
    else:  # a command or spark component
        _inline_environment(data, where, base_dir, prefix)


def _inline_key(holder: dict, key: str, where: SourceMap, base_dir: Path, prefix: Path_) -> None:
    value = holder.get(key)
    if is_file_reference(value):
        holder[key] = _load_component(value, where, prefix + (key,), base_dir)
    elif isinstance(value, dict):  # written inline: its files are relative to this same file
        holder[key] = value = dict(value)
        inline_local_files(value, where, base_dir, prefix + (key,))


def _local_target(value: str, base_dir: Path) -> Path:
    target = Path(strip_file_prefix(value.strip())).expanduser()
    return (target if target.is_absolute() else base_dir / target).resolve()


def _shown(value: str, where: SourceMap, target: Path) -> str:
    """How messages name an included file: as the user would find it from the including one."""
    if where.source.startswith("<"):
        return str(target)
    return os.path.normpath(os.path.join(os.path.dirname(where.source), strip_file_prefix(value.strip())))


def _load_component(value: str, where: SourceMap, loc: Path_, base_dir: Path) -> dict:
    from .loader import load_spec_text  # the loader calls this module: imported when used

    target = _local_target(value, base_dir)
    if not target.is_file():
        raise_problems([where.problem(loc, f"component file {value!r} not found (looked for {target})",
                                      prefer_key=True)])
    loading = _LOADING.get()
    if target in loading:
        chain = " -> ".join(path.name for path in (*loading[loading.index(target):], target))
        raise_problems([where.problem(loc, f"component file {value!r} includes itself ({chain})", prefer_key=True)])
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise_problems([where.problem(loc, f"cannot read component file {value!r}: {exc}", prefer_key=True)])
    token = _LOADING.set((*loading, target))
    try:
        loaded = load_spec_text(text, "component", source=_shown(value, where, target), base_dir=target.parent)
    finally:
        _LOADING.reset(token)
    # Plain data, as the file would read with its paths made absolute: the pipeline validates it
    # again as part of itself, and its warnings are found there (named by their place in the pipeline).
    return loaded.entity.model_dump(mode="json", exclude_none=True, exclude={"schema_"})


def _inline_environment(holder: dict, where: SourceMap, base_dir: Path, prefix: Path_) -> None:
    from .loader import load_spec  # the loader calls this module: imported when used

    value = holder.get("environment")
    if not is_file_reference(value):
        return
    target = _local_target(value, base_dir)
    if not target.is_file():
        raise_problems([where.problem(prefix + ("environment",),
                                      f"environment file {value!r} not found (looked for {target})")])
    holder["environment"] = load_spec(target, "environment").entity.model_dump(mode="json", exclude_none=True,
                                                                                exclude={"schema_"})


# ---- after validation: local paths written in the pipeline -------------------------------------


class PathResolver(Protocol):
    """The loader's resolver: ``local`` makes one path absolute (checking it exists)."""

    base_dir: Path | None

    def local(self, value: str, path: Path_, what: str) -> str: ...

    def environment(self, env: Any, prefix: Path_) -> None: ...

    def spark_files(self, job: Any, prefix: Path_ = ()) -> None: ...


def resolve_local_paths(entity: Any, resolver: PathResolver, prefix: Path_ = ()) -> None:
    """Make the local paths of a pipeline job or a component absolute (checked to exist)."""
    if isinstance(entity, CommandComponent):
        _component_paths(entity, resolver, prefix)
        return
    if isinstance(entity, SparkComponent):
        _spark_paths(entity, resolver, prefix)
        return
    if isinstance(entity, PipelineJob):
        for name, value in entity.inputs.items():
            if getattr(value, "path", None) is not None:
                value.path = resolver.local(value.path, prefix + ("inputs", name, "path"), f"input '{name}' path")
        if isinstance(entity.component, PipelineComponent):
            resolve_local_paths(entity.component, resolver, prefix + ("component",))
    if not isinstance(entity, (PipelineJob, PipelineComponent)):
        return
    for name, step in (entity.jobs or {}).items():
        at = prefix + ("jobs", name)
        for port, value in step.inputs.items():
            if isinstance(value, StepInput) and value.path is not None and parse_binding(value.path) is None:
                value.path = resolver.local(value.path, at + ("inputs", port, "path"), f"input '{port}' path")
        if isinstance(step, CommandStep) and step.component is None:
            if step.code is not None:
                step.code = resolver.local(step.code, at + ("code",), "code folder")
            if step.environment is not None and not isinstance(step.environment, str):
                resolver.environment(step.environment, at + ("environment",))
        if isinstance(step, SparkStep) and step.component is None:
            _spark_paths(step, resolver, at)
        component = step_component(step)
        if component is not None:
            key = "trial" if isinstance(step, SweepStep) else "component"
            resolve_local_paths(component, resolver, at + (key,))


def _spark_paths(program: SparkComponent | SparkStep, resolver: PathResolver, prefix: Path_) -> None:
    """A spark component's or inline spark step's code folder, environment and the files named in it."""
    if program.code is not None:
        program.code = resolver.local(program.code, prefix + ("code",), "code folder")
    if program.environment is not None and not isinstance(program.environment, str):
        resolver.environment(program.environment, prefix + ("environment",))
    resolver.spark_files(program, prefix)


def _component_paths(component: CommandComponent, resolver: PathResolver, prefix: Path_) -> None:
    if component.code is not None:
        component.code = resolver.local(component.code, prefix + ("code",), "code folder")
    if component.environment is not None and not isinstance(component.environment, str):
        resolver.environment(component.environment, prefix + ("environment",))
    for index, include in enumerate(component.additional_includes or ()):
        at = prefix + ("additional_includes", index)
        if resolver.base_dir is not None and include.lower().endswith(".zip"):
            # `x.zip` names the folder `x`, zipped when the snapshot is made (as Azure does).
            target = _local_target(include, resolver.base_dir)
            if not target.exists() and target.with_suffix("").is_dir():
                component.additional_includes[index] = str(target)  # type: ignore[index]
                continue
        component.additional_includes[index] = resolver.local(include, at, "additional include")  # type: ignore[index]
