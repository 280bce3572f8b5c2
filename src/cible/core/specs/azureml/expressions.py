"""``${{ … }}`` and ``$[[ … ]]`` expressions in commands and output paths (Azure reference §1.4).

Stdlib only: the launcher imports this module without pydantic or PyYAML.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Collection, Mapping

from cible.core.errors import InvalidSpecError

# `${{ inputs.x }}`: whitespace inside the braces is allowed.
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.DOTALL)
# Either an optional block or a plain expression, so one pass sees each exactly once
# and substituted values are never scanned again.
_TOKEN = re.compile(r"\$\[\[(?P<block>.*?)\]\]|\$\{\{\s*(?P<expr>.*?)\s*\}\}", re.DOTALL)
# `$[[inputs.x]]` without `${{}}` (seen in the examples): value of x or nothing.
_SHORT_BLOCK = re.compile(r"^\s*inputs\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
_REFERENCE = re.compile(r"^(?P<ns>[A-Za-z_][A-Za-z0-9_]*)\.(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)$")

COMMAND_NAMESPACES = ("inputs", "outputs", "search_space")
OUTPUT_PATH_TOKENS = ("name", "output_name", "default_datastore")


def format_literal(value: object) -> str:
    """Text a literal input becomes in a command: ``True`` -> ``"True"``, ``1.0`` -> ``"1.0"``, None -> ``""``."""
    if value is None:
        return ""
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return str(value)


def _split(expression: str) -> tuple[str, str]:
    match = _REFERENCE.fullmatch(expression)
    if not match:
        raise InvalidSpecError(
            f"malformed expression '${{{{{expression}}}}}'; expected ${{{{inputs.<name>}}}} or ${{{{outputs.<name>}}}}"
        )
    return match["ns"], match["name"]


def _block_references(block: str) -> list[tuple[str, str]]:
    short = _SHORT_BLOCK.fullmatch(block)
    if short:
        return [("inputs", short["name"])]
    return [_split(expr) for expr in _EXPR.findall(block)]


def referenced(template: str) -> set[tuple[str, str]]:
    """Every ``(namespace, name)`` a command refers to, inside optional blocks too."""
    found: set[tuple[str, str]] = set()
    for match in _TOKEN.finditer(template):
        if match["block"] is not None:
            found.update(_block_references(match["block"]))
        else:
            found.add(_split(match["expr"]))
    return found


def _names(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _lookup(ns: str, name: str, inputs: Mapping[str, object], outputs: Mapping[str, object],
            search_space: Mapping[str, object] | None) -> str:
    if ns == "inputs":
        table, what = inputs, "input"
    elif ns == "outputs":
        table, what = outputs, "output"
    elif ns == "search_space" and search_space is not None:
        table, what = search_space, "search_space parameter"
    else:
        raise InvalidSpecError(f"unknown expression namespace '{ns}' in '${{{{{ns}.{name}}}}}'; "
                               f"a command may use {', '.join(COMMAND_NAMESPACES[:2 if search_space is None else 3])}")
    if name not in table:
        raise InvalidSpecError(
            f"the command refers to {what} '{name}' which is not given; defined {what}s: {_names(table)}"
        )
    value = table[name]
    return value if isinstance(value, str) else format_literal(value)


def render_command(template: str, *, inputs: Mapping[str, str], outputs: Mapping[str, str],
                   search_space: Mapping[str, str] | None = None) -> str:
    """Substitute a command's expressions.

    ``inputs`` holds the inputs that have a value (literal text or a local path);
    an optional block that mentions an input missing from it is dropped whole.
    """

    def substitute(expr_match: re.Match[str]) -> str:
        ns, name = _split(expr_match.group(1))
        return _lookup(ns, name, inputs, outputs, search_space)

    def token(match: re.Match[str]) -> str:
        block = match["block"]
        if block is None:
            ns, name = _split(match["expr"])
            return _lookup(ns, name, inputs, outputs, search_space)
        short = _SHORT_BLOCK.fullmatch(block)
        if short:
            return _lookup("inputs", short["name"], inputs, outputs, search_space) if short["name"] in inputs else ""
        if any(ns == "inputs" and name not in inputs for ns, name in _block_references(block)):
            return ""
        return _EXPR.sub(substitute, block)

    return _TOKEN.sub(token, template)


def check_command(template: str, *, inputs: Collection[str], outputs: Collection[str],
                  optional_inputs: Collection[str] = (), search_space: Collection[str] | None = None) -> None:
    """Static check of a command against the declared inputs/outputs (before anything runs).

    ``inputs`` are the inputs that will have a value, ``optional_inputs`` those that may not.
    Outside ``$[[ ]]`` every input must be in ``inputs``; inside, an undefined input just
    means the block is dropped. Outputs must always be defined. ``search_space`` is
    allowed only when given (sweep trial commands).
    """
    present = set(inputs)
    optional = set(optional_inputs) - present
    problems: list[str] = []
    for match in _TOKEN.finditer(template):
        in_block = match["block"] is not None
        refs = _block_references(match["block"]) if in_block else [_split(match["expr"])]
        for ns, name in refs:
            if ns == "inputs":
                if in_block or name in present:
                    continue
                if name in optional:
                    problems.append(f"optional input '{name}' is used outside $[[ ]]; wrap it in $[[ ... ]]")
                else:
                    problems.append(f"the command refers to input '{name}' which is not defined; "
                                    f"defined inputs: {_names(present | optional)}")
            elif ns == "outputs":
                if name not in outputs:
                    problems.append(f"the command refers to output '{name}' which is not defined; "
                                    f"defined outputs: {_names(outputs)}")
            elif ns == "search_space" and search_space is not None:
                if name not in search_space:
                    problems.append(f"the command refers to search_space parameter '{name}' which is not "
                                    f"defined; defined parameters: {_names(search_space)}")
            else:
                allowed = "inputs, outputs" + (", search_space" if search_space is not None else "")
                problems.append(f"unknown expression namespace '{ns}' in '${{{{{ns}.{name}}}}}'; "
                                f"a command may use {allowed}")
    if problems:
        raise InvalidSpecError("\n".join(dict.fromkeys(problems)), details=problems)


def resolve_output_path(path: str, *, job_name: str, output_name: str,
                        default_datastore: str = "workspaceblobstore") -> str:
    """Resolve ``${{name}}``, ``${{output_name}}`` and ``${{default_datastore}}`` in an output path."""
    values = {"name": job_name, "output_name": output_name, "default_datastore": default_datastore}

    def token(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in values:
            raise InvalidSpecError(
                f"'${{{{{expression}}}}}' cannot be used in an output path; allowed: "
                + ", ".join(f"${{{{{t}}}}}" for t in OUTPUT_PATH_TOKENS)
            )
        return values[expression]

    return _EXPR.sub(token, path)
