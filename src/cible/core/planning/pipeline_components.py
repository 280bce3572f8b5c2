"""A pipeline's registered component references (`azureml:name:version`, `@latest`) replaced by the
components' specs, which the server looked up, and the pipeline validated again as a whole."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from cible.core.errors import InvalidSpecError
from cible.core.models.pipelines import PipelineJob

# Registered components within registered components, at most this deep (a chain, not a cycle, of them).
MAX_COMPONENT_NESTING = 32


def resolve_components(spec: PipelineJob | Mapping[str, Any], components: Mapping[str, dict[str, Any]]) -> PipelineJob:
    """The pipeline with each registered component reference replaced by its spec, validated again
    as a whole: the checks of a step against its component run now that the component is known."""
    data = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, PipelineJob) else dict(spec)
    missing: list[str] = []
    replaced = _replace_references(data, components, missing, "")
    if missing:
        raise InvalidSpecError("; ".join(f"{where}: component '{ref}' is not resolved" for where, ref in missing))
    if isinstance(spec, PipelineJob) and not replaced:
        return spec
    try:
        return PipelineJob.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise InvalidSpecError("; ".join(lines)) from None


def _replace_references(node: dict[str, Any], components: Mapping[str, dict[str, Any]], missing: list,
                        where: str, chain: tuple[str, ...] = ()) -> bool:
    """Replace in ``node`` each registered reference by its component, recursively; ``chain``: the
    references being replaced around ``node`` (a registered pipeline component that names itself,
    through ``@latest`` or another component, is refused rather than replaced without end)."""
    replaced = False

    def expand(holder: dict[str, Any], key: str, at: str) -> tuple[str, ...]:
        """Put the component `holder[key]` names in its place; the chain its content is within."""
        nonlocal replaced
        value = holder[key]
        if value not in components:
            missing.append((at, value))
            return chain
        if value in chain:
            raise InvalidSpecError(f"{at}: component '{value}' includes itself ({' -> '.join((*chain, value))})")
        if len(chain) >= MAX_COMPONENT_NESTING:
            raise InvalidSpecError(f"{at}: registered components nest more than {MAX_COMPONENT_NESTING} deep "
                                   f"({' -> '.join((*chain, value))})")
        holder[key], replaced = dict(components[value]), True
        return (*chain, value)

    inner = chain
    if isinstance(node.get("component"), str) and where == "":  # a pipeline job's own `component:`
        inner = expand(node, "component", "component")
    if isinstance(node.get("component"), dict):
        node["component"] = dict(node["component"])
        replaced |= _replace_references(node["component"], components, missing, f"{where}component.", inner)
    if isinstance(node.get("jobs"), dict):
        node["jobs"] = dict(node["jobs"])
    for name, step in list((node.get("jobs") or {}).items()):
        if not isinstance(step, dict):
            continue
        node["jobs"][name] = step = dict(step)
        for key in ("component", "trial"):
            inner = chain
            if isinstance(step.get(key), str):
                inner = expand(step, key, f"{where}jobs.{name}.{key}")
            if isinstance(step.get(key), dict):
                replaced |= _replace_references(step[key], components, missing, f"{where}jobs.{name}.{key}.", inner)
    return replaced
