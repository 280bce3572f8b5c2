"""The CLI's command groups load when named (cli/groups.py): `cible --help` imports none of them,
nor rich, httpx or pydantic; each group still works and says its help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cible.cli.groups import GROUPS
from cible.cli.main import app

IMPORTED = """
import contextlib, io, json, sys
from cible.cli.main import main
sys.argv = ["cible", *sys.argv[1:]]
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main()
    except SystemExit:
        pass
print(json.dumps({"modules": sorted(sys.modules), "out": out.getvalue()}))
"""


def imported(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", IMPORTED, *argv], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_help_lists_every_group_and_imports_none_of_them_nor_the_heavy_libraries():
    seen = imported("--help")
    for name, (help_text, _) in GROUPS.items():
        assert f"{name}  " in seen["out"] and help_text.split(":")[0] in seen["out"], name
    groups = {f"cible.cli.{m}" for m in ("jobs", "computes", "attach", "quotas", "server", "assets", "components",
                                         "endpoints", "deployments", "batch_endpoints", "batch_deployments")}
    assert not groups & set(seen["modules"])
    assert not {"rich", "httpx", "pydantic", "yaml", "sqlalchemy"} & set(seen["modules"])


def test_a_group_named_is_the_only_one_imported():
    seen = imported("quota", "--help")
    assert "cible.cli.quotas" in seen["modules"] and "cible.cli.jobs" not in seen["modules"]
    assert "set" in seen["out"] and "request" in seen["out"]


@pytest.mark.parametrize("name", list(GROUPS))
def test_every_group_loads_with_its_commands_and_the_global_options(name: str):
    shown = CliRunner().invoke(app, [name, "--help"])
    assert shown.exit_code == 0, shown.output
    assert "Commands:" in shown.output
    first = shown.output.split("Commands:")[1].split()[0]  # its first command takes -o and --query
    command = CliRunner().invoke(app, [name, first, "--help"])
    assert command.exit_code == 0 and "--query" in command.output and "--output" in command.output, command.output


def test_a_typo_in_a_group_name_says_so():
    shown = CliRunner().invoke(app, ["jobb", "list"])
    assert shown.exit_code != 0 and "No such command 'jobb'" in shown.output


def test_a_loaded_group_is_listed_once():
    from typer.main import get_command

    top = get_command(app)
    ctx = top.make_context("cible", ["job", "list"], resilient_parsing=True)
    assert top.get_command(ctx, "job") is not None  # loaded now
    assert top.list_commands(ctx).count("job") == 1
