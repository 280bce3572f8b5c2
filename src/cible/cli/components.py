"""`cible component create|list|show|archive|restore`, as `az ml component …`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cible.cli.assets import add_version_commands
from cible.cli.groups import new_group
from cible.cli.output import emit, print_fields, warn_answered, warn_loaded

app = new_group()

COLUMNS = [("name", "name"), ("version", "version"), ("type", "type"), ("display_name", "display_name"),
           ("description", "description")]
SHOW_KEYS = ["name", "version", "type", "display_name", "description", "is_deterministic", "code", "environment",
             "command", "inputs", "outputs", "jobs", "tags", "is_archived", "creation_context"]


def _operations():  # noqa: ANN202
    from cible.sdk import MLClient

    return MLClient().components


def _draw(item: dict) -> None:
    print_fields(item, [*SHOW_KEYS, *(k for k in item if k not in SHOW_KEYS)])


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="component YAML (Azure ML CLI v2)")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="the component's name (wins over the file's)")] = None,
    version: Annotated[Optional[str], typer.Option("--version", "-v", help="the version (wins over the file's); "
                                                  "default: the file's, else the next one")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b=value")] = None,
) -> None:
    """Register a component version from YAML; its code and additional_includes are uploaded.

    Registering a version again is harmless with the same content and refused with other content."""
    from cible.core.specs.azureml.loader import load_spec

    overrides = []
    for assignment in set_ or ():
        key, sep, raw = assignment.partition("=")
        if sep and key.strip() == "version":  # text as typed: `--set version=01` is not version 1
            version = raw.strip()
        else:
            overrides.append(assignment)
    loaded = load_spec(file, "component", set_overrides=overrides, name=name)
    warn_loaded(loaded)
    created = _operations().create_or_update(loaded.entity, version=version)
    shown = warn_answered(created, loaded)
    emit(created, lambda _: _draw(shown))


add_version_commands(app, _operations, _draw, COLUMNS, "component")
