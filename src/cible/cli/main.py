"""The `cible` command: `cible <noun> <verb>`, as `az ml <noun> <verb>`."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from cible.cli import (
    attach,
    batch_deployments,
    batch_endpoints,
    components,
    computes,
    deployments,
    endpoints,
    jobs,
    quotas,
    server,
)
from cible.cli.assets import asset_app
from cible.cli.studio import studio as studio_command
from cible.cli.output import add_global_options, emit, err_console, print_fields, print_table


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cible {version('cible')}")
        raise typer.Exit()


app = typer.Typer(
    help="cible: compute targets for machine learning, driven by Azure ML CLI v2 YAML. Every command takes "
         "-o table|json|yaml|tsv|none and --query JMESPATH, as az does.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version, help="Print cible's version and exit.")] = False) -> None:
    """cible: compute targets for machine learning, driven by Azure ML CLI v2 YAML."""


compute_app = typer.Typer(help="Compute targets.", no_args_is_help=True)
app.add_typer(jobs.app, name="job")
app.add_typer(compute_app, name="compute")
computes.register(compute_app)
attach.register(compute_app)
quota_app = typer.Typer(help="Workspace vCPU quotas and increase requests.", no_args_is_help=True)
cost_app = typer.Typer(help="What compute costs (indicative catalog prices).", no_args_is_help=True)
app.add_typer(quota_app, name="quota")
app.add_typer(cost_app, name="cost")
quotas.register(quota_app, cost_app)
app.add_typer(server.app, name="server")
app.add_typer(asset_app("environment", "environments", "Versioned environments."), name="environment")
app.add_typer(asset_app("data", "data", "Versioned data assets."), name="data")
app.add_typer(asset_app("model", "models", "Versioned models."), name="model")
app.add_typer(components.app, name="component")
app.add_typer(endpoints.app, name="online-endpoint")
app.add_typer(deployments.app, name="online-deployment")
app.add_typer(batch_endpoints.app, name="batch-endpoint")
app.add_typer(batch_deployments.app, name="batch-deployment")


@compute_app.command("list")
def compute_list() -> None:
    """List the workspace's compute targets."""
    from cible.sdk import MLClient

    emit(MLClient().compute.list(), lambda items: print_table(
        items, [("name", "name"), ("type", "type"), ("state", "state"), ("provisioning", "provisioning_state"),
                ("description", "description")]))


@compute_app.command("show")
def compute_show(name: Annotated[str, typer.Option("--name", "-n")]) -> None:
    """Show one compute target."""
    from cible.sdk import MLClient

    emit(MLClient().compute.get(name), lambda item: print_fields(item, list(item)))


@compute_app.command("list-sizes")
def compute_list_sizes(
    type_: Annotated[Optional[str], typer.Option("--type", help="amlcompute or computeinstance")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--cpu", help="only GPU (or only CPU) sizes")] = None,
    include_retired: Annotated[bool, typer.Option("--include-retired", help="also sizes of retired series")] = False,
) -> None:
    """VM sizes (vCPUs, memory, GPUs, indicative price), as `az ml compute list-sizes`."""
    from cible.sdk import MLClient

    emit(MLClient().compute.list_sizes(type=type_, gpu=gpu, include_retired=include_retired), lambda sizes: print_table(
        sizes, [("name", "name"), ("vCPUs", "vCPUs"), ("memory GB", "memoryGB"), ("GPUs", "gpus"),
                ("GPU", "gpu_model"), ("category", "category"), ("$/h", "price_per_hour"), ("retired", "retired_on")]))


@compute_app.command("show-size")
def compute_show_size(name: Annotated[str, typer.Argument(help="e.g. Standard_DS3_v2")]) -> None:
    """One VM size: shape, GPU architecture and the CUDA it needs, retirement, price."""
    from cible.sdk import MLClient

    emit(MLClient().compute.show_size(name), lambda size: print_fields(size, list(size)))


app.command("studio")(studio_command)


@app.command("quickstart")
def quickstart() -> None:
    """Make the local workspace (if needed), train the example model, register it."""
    from importlib.resources import files

    from cible.sdk import MLClient, load_job

    job_file = files("cible") / "quickstart" / "job.yml"
    client = MLClient()
    err_console.print(f"workspace: {client.paths.home}  server: {client.url}", highlight=False)
    job = client.jobs.create_or_update(load_job(str(job_file)))
    job = jobs.follow(client, job["name"], emit_job=False)
    model = client.models.create_or_update(
        {"name": "iris-classifier", "type": "mlflow_model", "path": f"azureml://jobs/{job['name']}/outputs/model"}
    )
    err_console.print(f"registered model {model['name']}:{model['version']} from job {job['name']}", highlight=False)
    err_console.print(jobs.next_steps(job["name"], client.paths.home), highlight=False, soft_wrap=True)
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
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
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
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc} (run with --debug for a traceback)", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
