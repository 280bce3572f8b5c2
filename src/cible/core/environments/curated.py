"""Curated environments: Azure's named environments, as package lists cible installs with uv.

The table is data (curated.yaml in this package). Every spelling Azure accepts for a curated
environment resolves to its entry: `AzureML-sklearn-1.5`, `sklearn-1.5`,
`azureml:AzureML-sklearn-1.5@latest`, `azureml:AzureML-sklearn-1.5:1`,
`azureml://registries/azureml/environments/sklearn-1.5/labels/latest` or `.../versions/<v>`.

Two kinds of entries: `environments` have fixed names; `families` match a name pattern (a regular
expression whose named groups, e.g. the PyTorch and CUDA versions of `acpt-pytorch-2.8-cuda12.6`,
fill `{group}` placeholders in the entry), so one entry covers every version Azure publishes.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from cible.core.errors import InvalidRequestError, NotFoundError

_REGISTRY = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/environments/(?P<name>[^/]+)"
    r"(?:/(?:versions/(?P<version>[^/]+)|labels/(?P<label>[^/]+)))?/?$",
    re.IGNORECASE,
)
_ARM = re.compile(r"^azureml:/subscriptions/.+/environments/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?$", re.IGNORECASE)
# Azure's workspace-level curated names carry this prefix; its registry names do not.
_PREFIX = "azureml-"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Keys of a family entry that are not copied into the entry a name resolves to.
_FAMILY_ONLY = ("match", "defaults", "examples")


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("curated.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _table() -> tuple[dict[str, Any], ...]:
    return tuple(_data()["environments"])


@lru_cache(maxsize=1)
def _families() -> tuple[tuple[re.Pattern[str], dict[str, Any]], ...]:
    return tuple((re.compile(f["match"], re.IGNORECASE), f) for f in _data().get("families") or [])


def curated_environments() -> list[dict[str, Any]]:
    """Every fixed-name curated entry (copies)."""
    return copy.deepcopy(list(_table()))


def curated_families() -> list[dict[str, Any]]:
    """Every family entry as written in the table, placeholders and all (copies)."""
    return copy.deepcopy([f for _, f in _families()])


def curated_names() -> list[str]:
    """Display names, for error messages: 'AzureML-sklearn-1.5 (sklearn-1.5)',
    'AzureML-acpt-pytorch-<torch>-cuda<cuda>'."""
    names = [f"{e['name']} ({', '.join(e.get('aliases') or [])})" if e.get("aliases") else e["name"] for e in _table()]
    return names + [_PLACEHOLDER.sub(r"<\1>", f["name"]) for _, f in _families()]


def split_reference(ref: str) -> tuple[str, str | None, str | None] | None:
    """An environment reference -> (name, version, registry) or None when it is not one.

    registry is set for azureml://registries/<registry>/... references; a label (@latest,
    labels/latest) leaves version None.
    """
    ref = ref.strip()
    m = _REGISTRY.fullmatch(ref)
    if m:
        return m["name"], m["version"], m["registry"]
    m = _ARM.fullmatch(ref)
    if m:
        return m["name"], m["version"], None
    if ref.lower().startswith("azureml:"):
        ref = ref[len("azureml:"):]
    if not ref or "/" in ref:
        return None
    name, at, _label = ref.partition("@")
    version = None
    if not at:
        name, colon, version = ref.partition(":")
        version = version if colon and version else None
    if not name or ":" in name:
        return None
    return name, version, None


def _fill(value: Any, values: dict[str, str]) -> Any:
    """`value` with every `{group}` placeholder replaced; an unknown one is a table error."""
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            if m[1] not in values:
                raise KeyError(f"curated.yaml: placeholder {{{m[1]}}} has no group or default")
            return values[m[1]]
        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return copy.deepcopy(value)


def _from_family(family: dict[str, Any], match: re.Match[str]) -> dict[str, Any]:
    values = {str(k): str(v) for k, v in (family.get("defaults") or {}).items()}
    values.update({k: v for k, v in match.groupdict().items() if v is not None})
    return {k: _fill(v, values) for k, v in family.items() if k not in _FAMILY_ONLY}


def resolve_curated(ref: str) -> dict[str, Any] | None:
    """The curated entry `ref` names (a copy, placeholders filled), or None when it names none."""
    if not isinstance(ref, str):
        return None
    parts = split_reference(ref)
    if parts is None:
        return None
    name, _version, registry = parts
    if registry is not None and registry.lower() != "azureml":
        return None
    wanted = name.lower()
    bare = wanted.removeprefix(_PREFIX)
    for entry in _table():
        names = [n.lower() for n in (entry["name"], *(entry.get("aliases") or []))]
        if wanted in names or bare in names:
            return copy.deepcopy(entry)
    for pattern, family in _families():
        m = pattern.fullmatch(bare)
        if m:
            return _from_family(family, m)
    return None


# -- as Azure's `azureml` registry lists them (`az ml environment list --registry-name azureml`) -------------
REGISTRY = "azureml"


def registry_listing() -> list[dict[str, Any]]:
    """Every curated environment under its registry name (`sklearn-1.5`; a family once, with its placeholders:
    `acpt-pytorch-<torch>-cuda<cuda>`), with the reference a job names it by and what cible builds."""
    entries = [((e.get("aliases") or [e["name"]])[0], e) for e in _table()]
    entries += [(f["name"].removeprefix("AzureML-"), f) for _, f in _families()]
    items: dict[str, dict[str, Any]] = {}
    for name, entry in entries:
        name = _PLACEHOLDER.sub(r"<\1>", name)
        items.setdefault(name, {
            "name": name, "version": entry.get("version"),
            "python": _PLACEHOLDER.sub(r"<\1>", str(entry.get("python") or "")),
            "reference": _registry_reference(name),
            "description": _PLACEHOLDER.sub(r"<\1>", " ".join((entry.get("description") or "").split()))})
    return list(items.values())


def registry_entry(name: str, registry: str = REGISTRY) -> dict[str, Any]:
    """One curated environment as `az ml environment show --registry-name azureml` names it, with the
    packages cible builds it from. NotFoundError naming the registry's environments."""
    check_registry(registry)
    entry = resolve_curated(f"azureml://registries/{REGISTRY}/environments/{name}")
    if entry is None:
        listed = ", ".join(item["name"] for item in registry_listing())
        raise NotFoundError(f"environment '{name}' is not in the {REGISTRY} registry (its environments: {listed})",
                            details={"name": name})
    return {"name": name, "curated_name": entry["name"], "version": entry.get("version"),
            "reference": _registry_reference(name),
            "description": " ".join((entry.get("description") or "").split()), "python": entry.get("python"),
            "cuda": entry.get("cuda"), "requirements": entry.get("requirements") or []}


def _registry_reference(name: str) -> str:
    """How a job names a curated environment of the registry: its latest version."""
    return f"azureml://registries/{REGISTRY}/environments/{name}/labels/latest"


def check_registry(registry: str) -> None:
    """cible knows one registry: Azure's curated environments (`azureml`)."""
    if registry.lower() != REGISTRY:
        raise InvalidRequestError(f"--registry-name: cible knows one registry, '{REGISTRY}' (Azure's curated "
                                  f"environments), not '{registry}'", details={"field": "registry_name"})
