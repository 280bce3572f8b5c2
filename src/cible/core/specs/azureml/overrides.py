"""``--set a.b.c=value`` overrides, applied to the loaded dict before validation (Azure reference §1.1)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml

from cible.core.errors import InvalidSpecError


def parse_assignment(assignment: str) -> tuple[tuple[str, ...], Any]:
    """Split ``a.b.c=value`` into ``(("a", "b", "c"), parsed value)``.

    The value is read as YAML (``30`` -> int, ``true`` -> bool, ``[1, 2]`` -> list) so
    typed fields work. Text that YAML would read as a mapping only because it holds
    ``": "`` (``--set command=echo a: b``) stays text, and unparsable text stays text.
    """
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidSpecError(f"--set {assignment!r}: expected <path>=<value>, e.g. --set limits.timeout=30")
    parts = tuple(key.split("."))
    if any(not part for part in parts):
        raise InvalidSpecError(f"--set {assignment!r}: empty segment in the path {key!r}")
    if raw == "":
        return parts, ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return parts, raw
    if isinstance(value, (dict, list)) and not raw.lstrip().startswith(("{", "[")):
        return parts, raw
    return parts, value


def set_path(data: dict[str, Any], parts: tuple[str, ...], value: Any, assignment: str) -> None:
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            # `--set inputs.x.list.0=a`: numeric segments index into lists.
            if not part.isdigit() or int(part) >= len(node):
                raise InvalidSpecError(f"--set {assignment}: {part!r} is not an index of the list at "
                                       f"{'.'.join(parts[:depth]) or '<root>'}")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise InvalidSpecError(f"--set {assignment}: {'.'.join(parts[:depth])!r} is a "
                                   f"{type(node).__name__}, not a mapping")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}  # new intermediate maps are created, like `--set tags.x=y`
            node = node[part]


def apply_set_overrides(data: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` assignment applied in order."""
    result = copy.deepcopy(data) if data is not None else {}
    for assignment in assignments:
        parts, value = parse_assignment(assignment)
        set_path(result, parts, value, assignment)
    return result
