"""YAML parsing that matches ``yaml.safe_load`` but remembers where each key and value was.

Values are built by PyYAML's own SafeLoader constructor, so YAML 1.1 rules apply
exactly as in Azure's SDK (``yes`` -> True, ``01`` -> 1, ``1e-3`` stays a string,
``2022-01-01`` -> date). Marks are collected from the composed node tree afterwards.
One deliberate difference: a mapping that repeats a key is refused, where PyYAML
silently keeps the last value (a second ``compute:`` would quietly win).
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
        if node is not None:
            _refuse_duplicate_keys(loader, node, source)
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


def _refuse_duplicate_keys(loader: yaml.SafeLoader, root: yaml.Node, source: str) -> None:
    """Raise one InvalidSpecError naming every repeated key, at any depth, with both lines.

    Runs on the composed tree before construction: construction flattens ``<<`` merge
    keys into the mapping, and a key that overrides a merged one is not a duplicate.
    """
    problems: list[dict] = []
    seen_nodes: set[int] = set()  # an anchored mapping reused by aliases is checked once
    stack: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (index,)) for index, item in enumerate(node.value))
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node)  # `1` and `01` are the same key, as PyYAML builds them
            stack.append((value_node, path + (key,)))
            mark = _mark(key_node)
            try:
                earlier = first.setdefault(key, mark)
            except TypeError:  # an unhashable key fails construction later with PyYAML's own message
                continue
            if earlier is not mark:
                problems.append(_duplicate(source, path, key, mark, earlier))
    if problems:
        problems.sort(key=lambda entry: (entry["line"], entry["column"]))
        raise InvalidSpecError("\n".join(entry.pop("text") for entry in problems), details=problems)


def _duplicate(source: str, path: Path_, key: Any, mark: Mark, earlier: Mark) -> dict:
    parent = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    where = f" in {parent}" if parent else ""
    message = f"duplicate key {key!r}{where} (first at line {earlier.line}); keep one"
    return {"file": source, "line": mark.line, "column": mark.column,
            "field": f"{parent}.{key}" if parent else str(key), "message": message,
            "text": f"{source}:{mark.line}:{mark.column}: {message}"}


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
