"""Printing resources: JSON for scripts (`-o json`), rich tables for people."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str | None = None) -> None:
    table = Table(title=title, header_style="bold")
    for i, (header, _) in enumerate(columns):
        table.add_column(header, no_wrap=i == 0)  # names stay whole; other cells wrap
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for _, key in columns))
    console.print(table)


def print_fields(data: dict[str, Any], keys: list[str]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key in keys:
        if data.get(key) not in (None, "", [], {}):
            table.add_row(key, _cell(data[key]))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
