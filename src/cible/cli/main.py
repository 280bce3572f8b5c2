"""The `cible` command: `cible <noun> <verb>`, as `az ml <noun> <verb>`."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cible.cli.groups import LazyGroups
from cible.cli.login import login as login_command
from cible.cli.login import logout as logout_command
from cible.cli.output import add_global_options, emit, err_console
from cible.cli.studio import studio as studio_command


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cible {version('cible')}")
        raise typer.Exit()


app = typer.Typer(
    help="cible: compute targets for machine learning, driven by Azure ML CLI v2 YAML. Every command takes "
         "-o table|json|yaml|tsv|none and --query JMESPATH, as az does.",
    no_args_is_help=True,
    cls=LazyGroups,  # the command groups: imported when named (groups.py)
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version, help="Print cible's version and exit.")] = False) -> None:
    """cible: compute targets for machine learning, driven by Azure ML CLI v2 YAML."""


app.command("studio")(studio_command)
app.command("login")(login_command)
app.command("logout")(logout_command)


@app.command("quickstart")
def quickstart() -> None:
    """Make the local workspace (if needed), train the example model, register it."""
    from importlib.resources import files

    from cible.cli import jobs
    from cible.sdk import MLClient, load_job

    job_file = files("cible") / "quickstart" / "job.yml"
    client = MLClient()
    home = client.paths.home if client.paths else None  # None: a team server (`cible login`, CIBLE_URL)
    err_console.print(f"workspace: {home or client.url}  server: {client.url}", highlight=False)
    job = client.jobs.create_or_update(load_job(str(job_file)))
    job = jobs.follow(client, job["name"], emit_job=False)
    model = client.models.create_or_update(
        {"name": "iris-classifier", "type": "mlflow_model", "path": f"azureml://jobs/{job['name']}/outputs/model"}
    )
    err_console.print(f"registered model {model['name']}:{model['version']} from job {job['name']}", highlight=False)
    err_console.print(jobs.next_steps(job["name"], home), highlight=False, soft_wrap=True)
    emit({"job": job, "model": model}, lambda _: None)  # for people, said above


@app.command("agent", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def agent(ctx: typer.Context) -> None:
    """Run a compute node's agent (the local node provider starts these; see `cible agent --help`)."""
    from cible.agent.__main__ import main as agent_main

    raise typer.Exit(agent_main(ctx.args))


add_global_options(app, skip=frozenset({"agent"}))


def main() -> None:
    debug = "--debug" in sys.argv or os.environ.get("CIBLE_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    from cible.core.errors import CibleError

    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        code = app(prog_name="cible", standalone_mode=False)
    except CibleError as exc:
        if debug:
            raise
        _print_error(exc.message)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted", highlight=False)
        sys.exit(130)
    except typer.exceptions.TyperException as exc:  # usage errors: shown as click shows them
        if hasattr(exc, "show"):
            exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:  # the unexpected: one line, a traceback only with --debug
        if debug:
            raise
        _print_error(f"{type(exc).__name__}: {exc} (run with --debug for a traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _print_error(text: str) -> None:
    from rich.markup import escape  # here: `--help` imports no rich

    # Escaped: a message is text, and rich would take `cible[kubernetes]` for a markup tag and drop it.
    err_console.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)
