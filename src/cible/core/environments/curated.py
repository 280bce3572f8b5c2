"""Curated environments: Azure's named environments, as package lists cible installs with uv.

The table is data (curated.yaml in this package). Every spelling Azure accepts for a curated
environment resolves to its entry: `AzureML-sklearn-1.5`, `sklearn-1.5`,
`azureml:AzureML-sklearn-1.5@latest`, `azureml:AzureML-sklearn-1.5:1`,
`azureml://registries/azureml/environments/sklearn-1.5/labels/latest` or `.../versions/<v>`.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

_REGISTRY = re.compile(
    r"^azureml://registries/(?P<registry>[^/]+)/environments/(?P<name>[^/]+)"
    r"(?:/(?:versions/(?P<version>[^/]+)|labels/(?P<label>[^/]+)))?/?$",
    re.IGNORECASE,
)
_ARM = re.compile(r"^azureml:/subscriptions/.+/environments/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/?$", re.IGNORECASE)


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, Any], ...]:
    text = resources.files(__package__).joinpath("curated.yaml").read_text(encoding="utf-8")
    return tuple(yaml.safe_load(text)["environments"])


def curated_environments() -> list[dict[str, Any]]:
    """Every curated entry (copies)."""
    return copy.deepcopy(list(_table()))


def curated_names() -> list[str]:
    """Display names, for error messages: 'AzureML-sklearn-1.5 (sklearn-1.5)'."""
    return [f"{e['name']} ({', '.join(e.get('aliases') or [])})" if e.get("aliases") else e["name"] for e in _table()]


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


def resolve_curated(ref: str) -> dict[str, Any] | None:
    """The curated entry `ref` names (a copy), or None when it names no curated environment."""
    if not isinstance(ref, str):
        return None
    parts = split_reference(ref)
    if parts is None:
        return None
    name, _version, registry = parts
    if registry is not None and registry.lower() != "azureml":
        return None
    wanted = name.lower()
    for entry in _table():
        names = [entry["name"], *(entry.get("aliases") or [])]
        if any(n.lower() == wanted for n in names):
            return copy.deepcopy(entry)
    return None
