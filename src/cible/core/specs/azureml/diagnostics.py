"""Turning validation problems into ``file:line:col: field: message`` lines.

pydantic reports locations in *model* terms (they include union tags such as
``'pytorch'`` or ``'object'``); this module maps them back onto the YAML data so
each problem points at the key or value the user wrote.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from cible.core.errors import InvalidSpecError

from .yaml_source import Mark, ParsedYaml, Path_


def dotted(path: Path_) -> str:
    """``("a", "b", 0, "c")`` -> ``a.b[0].c``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class SourceMap:
    """Where the data being validated came from: marks from the YAML and ``--set``/``--name`` overrides."""

    source: str
    parsed: ParsedYaml | None = None
    overrides: dict[Path_, str] = field(default_factory=dict)  # path -> "--set a.b=1"

    def _override_for(self, path: Path_) -> str | None:
        for target, text in self.overrides.items():
            shorter = min(len(target), len(path))
            if shorter and target[:shorter] == path[:shorter]:
                return text
        return None

    def _mark(self, path: Path_, prefer_key: bool) -> Mark | None:
        if self.parsed is None:
            return None
        order = (self.parsed.key_marks, self.parsed.value_marks)
        if not prefer_key:
            order = order[::-1]
        for probe in range(len(path), -1, -1):  # nearest ancestor that has a mark
            for marks in order:
                mark = marks.get(path[:probe])
                if mark is not None:
                    return mark
        return None

    def problem(self, path: Path_, message: str, *, prefer_key: bool = False, show_field: bool = True) -> dict:
        """One entry of InvalidSpecError.details: {file, line, column, field, message}."""
        override = self._override_for(path)
        mark = None if override else self._mark(path, prefer_key)
        return {
            "file": self.source,
            "line": mark.line if mark else None,
            "column": mark.column if mark else None,
            "field": dotted(path) or None,
            "message": message,
            "override": override,
            "show_field": show_field,
        }

    def location(self, path: Path_, *, prefer_key: bool = True) -> str:
        """``file:line:col`` (or ``file (from --set ...)``) for a warning."""
        entry = self.problem(path, "", prefer_key=prefer_key)
        return _where(entry)


def _where(entry: dict) -> str:
    if entry.get("override"):
        return f"{entry['file']} (from {entry['override']})"
    if entry["line"] is not None:
        return f"{entry['file']}:{entry['line']}:{entry['column']}"
    return entry["file"]


def raise_problems(problems: list[dict]) -> typing.NoReturn:
    """Raise one InvalidSpecError listing every problem, one per line."""
    # File order reads best; problems without a line (overrides, dicts) go last.
    problems = sorted(problems, key=lambda e: (e["line"] is None, e["line"] or 0, e["column"] or 0))
    lines = []
    for entry in problems:
        show_field = entry.pop("show_field", True)
        prefix = f"{entry['field']}: " if entry["field"] and show_field else ""
        lines.append(f"{_where(entry)}: {prefix}{entry['message']}")
        entry.pop("override", None)  # details keep only {file, line, column, field, message}
    raise InvalidSpecError("\n".join(lines), details=problems)


# ---- mapping pydantic errors onto the data ---------------------------------------------


def _data_path(loc: tuple[Any, ...], data: Any) -> Path_:
    """Drop the parts of a pydantic loc that are union tags rather than keys in the data."""
    path: list[Any] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and index == len(loc) - 1:
            path.append(part)  # a missing key: keep it, it is what the message is about
        elif not isinstance(node, (dict, list)):
            break  # below a scalar: nothing more in the data to point at
        # else: a union tag such as 'pytorch' or 'object' that only exists in the model
    return tuple(path)


def _unwrap(annotation: Any, node: Any) -> Any:
    """Strip Annotated/Optional and pick the union member that fits ``node``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [_unwrap(arg, node) for arg in typing.get_args(annotation) if arg is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if isinstance(node, dict) and models:
                wanted = node.get("type")
                for model in models:
                    field_info = model.model_fields.get("type")
                    if field_info is not None and wanted in typing.get_args(field_info.annotation):
                        return model
                return models[0]
            containers = [m for m in members if typing.get_origin(m) in (dict, list)]
            return containers[0] if containers else (members[0] if members else None)
        else:
            return annotation


def field_by_key(model: type[BaseModel], key: Any) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def model_at(root: type[BaseModel], path: Path_, data: Any) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` (for 'allowed keys' lists)."""
    annotation: Any = root
    node = data
    for part in path:
        annotation = _unwrap(annotation, node)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = field_by_key(annotation, part)
            if info is None:
                return None
            annotation = info.annotation
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        elif origin is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return None
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    annotation = _unwrap(annotation, node)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def allowed_keys(model: type[BaseModel]) -> list[str]:
    keys = [info.alias or name for name, info in model.model_fields.items()]
    return sorted(key for key in keys if key != "$schema")


def _choices(expected: str) -> str:
    return ", ".join(re.findall(r"'([^']*)'", expected)) or expected


def validation_problems(exc: ValidationError, root: type[BaseModel], data: Any, where: SourceMap,
                        label: str) -> list[dict]:
    """Problems for every error in ``exc``; ``label`` names the root ('command job', 'environment')."""
    problems = []
    for error in exc.errors():
        kind, ctx = error["type"], error.get("ctx") or {}
        path = _data_path(error["loc"], data)
        parent = path[:-1]
        context = dotted(parent) or label
        if kind == "extra_forbidden":
            key = path[-1] if path else "?"
            model = model_at(root, parent, data)
            message = f"unknown key '{key}' in {context}"
            if model is not None:
                keys = allowed_keys(model)
                message += f"; allowed keys: {', '.join(keys)}"
                close = difflib.get_close_matches(str(key), keys, n=1)
                if close:
                    message += f"; did you mean '{close[0]}'?"
            problems.append(where.problem(path, message, prefer_key=True, show_field=False))
        elif kind == "missing":
            problems.append(where.problem(parent, f"missing required key '{path[-1]}' in {context}",
                                          prefer_key=True, show_field=False))
        elif kind == "literal_error":
            message = f"{error['input']!r} is not one of {_choices(ctx.get('expected', ''))}"
            problems.append(where.problem(path, message))
        elif kind == "union_tag_invalid":
            message = f"{ctx.get('tag')!r} is not one of {_choices(ctx.get('expected_tags', ''))}"
            problems.append(where.problem(path + (ctx.get("discriminator", "type").strip("'"),), message))
        elif kind == "union_tag_not_found":
            problems.append(where.problem(path, f"missing key {ctx.get('discriminator')} that selects the kind"))
        else:
            message = error["msg"].removeprefix("Value error, ")
            value = error.get("input")
            if kind not in ("value_error", "assertion_error") and isinstance(value, (str, int, float, bool)):
                message += f" (got {value!r})"
            problems.append(where.problem(path, message))
    return problems
