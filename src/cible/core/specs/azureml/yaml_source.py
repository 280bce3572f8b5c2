"""YAML parsing that matches ``yaml.safe_load`` but remembers where each key and value was.

Values are built by PyYAML's own SafeLoader constructor, so YAML 1.1 rules apply
exactly as in Azure's SDK (``yes`` -> True, ``01`` -> 1, ``1e-3`` stays a string,
``2022-01-01`` -> date). Marks are collected from the composed node tree afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from cible.core.errors import InvalidSpecError

Path_ = tuple[Any, ...]  # key path into the parsed data: ("inputs", "data", "mode"), ("x", 0)


@dataclass(frozen=True)
class Mark:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class ParsedYaml:
    data: Any
    key_marks: dict[Path_, Mark] = field(default_factory=dict)  # where a mapping key is written
    value_marks: dict[Path_, Mark] = field(default_factory=dict)  # where the value starts


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str, source: str) -> ParsedYaml:
    """Parse one YAML document; syntax errors become InvalidSpecError with ``source:line:col``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        # construct_document also flattens `<<` merge keys into the node tree.
        data = loader.construct_document(node) if node is not None else None
        parsed = ParsedYaml(data)
        if node is not None:
            _collect(loader, node, (), parsed, set())
        return parsed
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise InvalidSpecError(f"{where}: invalid YAML: {problem}", details=[{
            "file": source, "line": mark.line + 1 if mark else None, "column": mark.column + 1 if mark else None,
            "field": None, "message": f"invalid YAML: {problem}",
        }]) from None
    except yaml.YAMLError as exc:
        raise InvalidSpecError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _collect(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, parsed: ParsedYaml, active: set[int]) -> None:
    if id(node) in active:  # recursive alias (`&a [*a]`): stop rather than loop
        return
    parsed.value_marks[path] = _mark(node)
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            parsed.key_marks[path + (key,)] = _mark(key_node)
            _collect(loader, value_node, path + (key,), parsed, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _collect(loader, item, path + (index,), parsed, active)
    active.discard(id(node))
