"""What a command prints: `-o table|json|yaml|tsv|none` and `--query <JMESPath>`, as `az` does.

Every command (bar the agent) takes both options: `add_global_options` adds them to each
command's parameters once, and each command hands its result to `emit` with the renderer it
prefers for people (`-o table`, the default).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from rich.text import Text


def _piped_width() -> int:
    """Piped, a table keeps its width ($COLUMNS, else 160) rather than rich's 80 columns."""
    try:
        return max(40, int(os.environ.get("COLUMNS") or 160))
    except ValueError:  # COLUMNS=abc: not worth failing a command for
        return 160


class _LazyConsole:
    """rich's Console, made on first use: a command that prints through none (`--help`, `-o json`)
    does not import rich (a tenth of a second of start-up)."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._settings)
        return getattr(self._console, name)


console: Any = _LazyConsole(width=None if sys.stdout.isatty() else _piped_width())
err_console: Any = _LazyConsole(stderr=True)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"
    tsv = "tsv"
    none = "none"


@dataclass
class Rendering:
    format: OutputFormat = OutputFormat.table
    query: Any = None  # a compiled JMESPath expression


current = Rendering()  # one command runs per process: set by `with_global_options`

STATUS_STYLES = {
    "Completed": "green", "Succeeded": "green", "Running": "cyan", "JobRunning": "cyan", "Finalizing": "cyan",
    "Failed": "bold red", "NotResponding": "red", "unusable": "red",
    "Canceled": "yellow", "CancelRequested": "yellow", "Stopped": "yellow", "Stopping": "yellow",
    "Queued": "magenta", "NotStarted": "magenta", "Preparing": "blue", "Provisioning": "blue", "Starting": "blue",
    "Creating": "blue", "Deleting": "yellow", "idle": "green", "running": "cyan", "preparing": "blue",
    "leaving": "yellow", "preempted": "yellow",
}
STATUS_KEYS = {"status", "state", "provisioning_state", "node_state"}


# -- the options every command takes ---------------------------------------------------------------
def _query(value: str | None) -> Any:
    if not value:
        return None  # jmespath is imported only by a command that asks for a query
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(value)
    except JMESPathError as exc:
        raise typer.BadParameter(f"not a JMESPath expression ({exc}); e.g. --query name or --query "
                                 "\"[].{name:name, status:status}\" (https://jmespath.org)",
                                 param_hint="'--query'") from None


GLOBAL_PARAMETERS = [
    inspect.Parameter("cible_output", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[OutputFormat], typer.Option("--output", "-o", case_sensitive=False,
                                             help="Output format: table (default), json, yaml, tsv or none.")]),
    inspect.Parameter("cible_query", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option("--query", metavar="JMESPATH",
                                    help="JMESPath query applied to the result, as az --query (jmespath.org).")]),
]


def with_global_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with `-o` and `--query` added to its parameters; they set `current`."""
    @functools.wraps(command)
    def wrapper(*args: Any, cible_output: OutputFormat | None = None, cible_query: str | None = None,
                **kwargs: Any) -> Any:
        current.format = cible_output or OutputFormat.table
        current.query = _query(cible_query)
        return command(*args, **kwargs)

    signature = inspect.signature(command, eval_str=True)  # the modules use postponed annotations
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), *GLOBAL_PARAMETERS])
    return wrapper


def add_global_options(app: typer.Typer, skip: frozenset[str] = frozenset()) -> None:
    """Give every command of `app` and its sub-apps `-o` and `--query`, except those named in `skip`."""
    for info in app.registered_commands:
        if info.name not in skip and info.callback is not None and not getattr(info.callback, "cible_global", False):
            info.callback = with_global_options(info.callback)
            info.callback.cible_global = True  # type: ignore[attr-defined]
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_global_options(group.typer_instance, skip)


# -- printing a result -----------------------------------------------------------------------------
def emit(data: Any, table: Callable[[Any], None] | None = None) -> None:
    """Print a command's result as `-o` and `--query` ask; `table` draws it for people."""
    if current.query is not None:
        data = current.query.search(data)
        table = None  # the query's shape is not the command's
    fmt = current.format
    if fmt == OutputFormat.none:
        return
    if fmt == OutputFormat.json:
        print_json(data)
    elif fmt == OutputFormat.yaml:
        import yaml

        sys.stdout.write(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False,
                                        allow_unicode=True))
    elif fmt == OutputFormat.tsv:
        sys.stdout.write("".join(line + "\n" for line in tsv_lines(data)))
    elif table is not None:
        table(data)
    else:
        _generic_table(data)


def tsv_lines(data: Any) -> list[str]:
    """az's tsv: a row per list item, the scalar values of an object in order; nested ones left out."""
    rows = data if isinstance(data, list) else [data]
    lines = []
    for row in rows:
        if isinstance(row, dict):
            cells = [_tsv_cell(v) for v in row.values() if not isinstance(v, (dict, list))]
        elif isinstance(row, list):
            cells = [_tsv_cell(v) for v in row if not isinstance(v, (dict, list))]
        else:
            cells = [_tsv_cell(row)]
        lines.append("\t".join(cells))
    return lines


def _tsv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"  # as az prints them
    return str(value).replace("\t", " ").replace("\n", " ")


def _generic_table(data: Any) -> None:
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        keys = list(dict.fromkeys(k for r in data for k, v in r.items() if not isinstance(v, (dict, list))))
        print_table(data, [(k, k) for k in keys])
    elif isinstance(data, list):
        for item in data:
            console.print(_cell(item), highlight=False, soft_wrap=True)
    elif isinstance(data, dict):
        print_fields(data, list(data))
    elif data is not None:
        console.print(_cell(data), highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str | None = None) -> None:
    """A table that fits the terminal: names and statuses are never cut; when even wrapping the
    others cannot make room, the rightmost columns are left out (said under the table)."""
    kept, dropped = fit_columns(rows, columns, console.width)
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for header, key in kept:
        whole = key in STATUS_KEYS or (header, key) == columns[0]
        table.add_column(header, no_wrap=whole, min_width=_natural(rows, header, key) if whole else None,
                         overflow="fold")
    for row in rows:
        table.add_row(*(_styled(key, row.get(key)) for _, key in kept))
    console.print(table)
    if dropped:
        err_console.print(f"(not shown, for width: {', '.join(h for h, _ in dropped)}; -o json or a wider "
                          "terminal shows them)", highlight=False, style="dim")


def fit_columns(rows: list[dict[str, Any]], columns: list[tuple[str, str]],
                width: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Pure: which columns fit `width`. The first column and statuses keep their whole width; the
    others need at least 12 characters (or their natural width, if less) to wrap into."""
    kept = list(columns)
    dropped: list[tuple[str, str]] = []

    def need(cols: list[tuple[str, str]]) -> int:
        total = 1  # the left border
        for i, (header, key) in enumerate(cols):
            natural = _natural(rows, header, key)
            total += (natural if i == 0 or key in STATUS_KEYS else min(natural, 12)) + 3  # padding and border
        return total

    while need(kept) > width and len(kept) > 1:
        droppable = [c for c in kept[1:] if c[1] not in STATUS_KEYS]
        if not droppable:
            break
        dropped.insert(0, droppable[-1])
        kept.remove(droppable[-1])
    return kept, dropped


def _natural(rows: list[dict[str, Any]], header: str, key: str) -> int:
    return max([len(header), *(len(_cell(r.get(key))) for r in rows)])


def print_gpus(usage: dict[str, Any] | None) -> None:
    """`gpu_usage` of a compute or job (by node id, each GPU as its agent last read it): a row per GPU."""
    rows = [{"node": node, "gpu": str(r.get("index", "?")), "model": r.get("name") or "",
             "use": f"{r.get('utilization_percent', 0):g} %",
             "memory": f"{r.get('memory_used_mb', 0)} / {r.get('memory_total_mb') or '?'} MB"}
            for node, readings in (usage or {}).items() if isinstance(readings, list)
            for r in readings if isinstance(r, dict)]
    if rows:
        print_table(rows, [("node", "node"), ("GPU", "gpu"), ("model", "model"), ("use", "use"),
                           ("memory", "memory")], title="GPUs")


def print_fields(data: dict[str, Any], keys: list[str]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key in keys:
        if data.get(key) not in (None, "", [], {}):
            table.add_row(key, _styled(key, data[key]))
    console.print(table)


def _styled(key: str, value: Any) -> Text:
    from rich.text import Text

    text = _cell(value)
    style = STATUS_STYLES.get(text) if key in STATUS_KEYS else None
    return Text(text, style=style or "")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def warn_loaded(loaded: Any) -> None:
    """A loaded spec's warnings, each with its place in the file."""
    for line in loaded.warnings:
        warn(loaded.located(line))


def warn_answered(answer: dict[str, Any], loaded: Any = None) -> dict[str, Any]:
    """Print the server's warnings that the spec's load did not print already; return the answer
    without them, for a table (a script's -o json keeps them in the answer it gets)."""
    said = set(loaded.warnings) if loaded is not None else set()
    for line in answer.get("warnings") or []:
        if line not in said:
            warn(line)
    return {k: v for k, v in answer.items() if k != "warnings"}
