"""`cible batch-deployment …`, as `az ml batch-deployment …`.

A batch deployment runs nothing until its endpoint is invoked, so `create` and `update` answer at
once (Succeeded) once the server has checked it as its first job would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.batch_endpoints import client, draw_jobs
from cible.cli.endpoints import SetOpt, set_option
from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_fields, print_table, warn_loaded

app = new_group()

NameOpt = Annotated[str, typer.Option("--name", "-n", help="deployment name")]
EndpointOpt = Annotated[str, typer.Option("--endpoint-name", "--endpoint", "-e", help="its endpoint's name")]
SHOW_KEYS = ["name", "endpoint_name", "type", "provisioning_state", "is_default", "model", "code_configuration",
             "environment", "compute", "resources", "settings", "component", "job_definition", "description", "tags",
             "created_at"]
TABLE = [("name", "name"), ("endpoint", "endpoint_name"), ("type", "type"), ("default", "is_default"),
         ("compute", "compute"), ("provisioning_state", "provisioning_state")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="accepted, as az: a batch deployment is ready at once")]
SetDefaultOpt = Annotated[bool, typer.Option("--set-default", help="make it the endpoint's default deployment")]


def _ops():  # noqa: ANN202
    return client().batch_deployments


def draw_deployment(deployment: dict[str, Any]) -> None:
    print_fields(deployment, SHOW_KEYS)


def _load(file: Path, name: str | None, endpoint: str | None, set_: list[str] | None) -> Any:
    from cible.core.specs.azureml.loader import load_spec

    overrides = [*(set_ or ()), *([f"endpoint_name={endpoint}"] if endpoint else [])]
    loaded = load_spec(file, "batch-deployment", set_overrides=overrides, name=name)
    warn_loaded(loaded)
    return loaded.entity


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="batch deployment YAML")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="deployment name (default: the file's)")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint-name", "--endpoint", "-e", help="its endpoint (default: the file's endpoint_name)")] = None,
    set_default: SetDefaultOpt = False,
    set_: SetOpt = None,
    no_wait: NoWaitOpt = False,  # noqa: ARG001
) -> None:
    """Create a batch deployment from YAML: local code and model are uploaded."""
    deployment = _load(file, name, endpoint, set_)
    answer = _ops().begin_create_or_update(deployment, set_default=set_default, update=False).result()
    emit(answer, draw_deployment)


@app.command("update")
def update(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="deployment name (default: the file's)")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint-name", "--endpoint", "-e", help="its endpoint (default: the file's endpoint_name)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="batch deployment YAML")] = None,
    set_default: SetDefaultOpt = False,
    set_: SetOpt = None,
    no_wait: NoWaitOpt = False,  # noqa: ARG001
) -> None:
    """Change a deployment: a new spec (-f), or fields of the current one (--set settings.mini_batch_size=20)."""
    if file is not None:
        deployment = _load(file, name, endpoint, set_)
        answer = _ops().begin_update(deployment.name, deployment.endpoint_name, deployment=deployment,
                                     set_default=set_default).result()
        emit(answer, draw_deployment)
        return
    assignments = set_option(set_)
    if not assignments and not set_default:
        raise typer.BadParameter("give what to change: -f, --set (e.g. --set settings.mini_batch_size=20) or "
                                 "--set-default")
    if name is None or endpoint is None:
        raise typer.BadParameter("without -f, give the deployment (-n) and its endpoint (-e)",
                                 param_hint="'--name' / '--endpoint-name'")
    ops = _ops()
    if not assignments:  # only --set-default: the stored spec again
        assignments = [f"name={name}"]
    emit(ops.begin_update(name, endpoint, set=assignments, set_default=set_default).result(), draw_deployment)


@app.command("show")
def show(name: NameOpt, endpoint: EndpointOpt) -> None:
    """Show a batch deployment and its settings."""
    emit(_ops().get(name, endpoint), draw_deployment)


@app.command("list")
def list_(endpoint: EndpointOpt) -> None:
    """List an endpoint's batch deployments."""
    emit(_ops().list(endpoint), lambda items: print_table(items, TABLE))


@app.command("delete")
def delete(
    name: NameOpt,
    endpoint: EndpointOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    no_wait: NoWaitOpt = False,  # noqa: ARG001
) -> None:
    """Delete a batch deployment (not its endpoint's default: change the default first)."""
    ops = _ops()
    ops.get(name, endpoint)  # a name that does not exist is said before asking anything
    what = f"deployment '{name}' of batch endpoint '{endpoint}'"
    if not yes:
        typer.confirm(f"delete {what}?", abort=True)
    answer = ops.begin_delete(name, endpoint).result()
    emit(answer, lambda _: console.print(f"deleted {what}", highlight=False))


@app.command("list-jobs")
def list_jobs(name: NameOpt, endpoint: EndpointOpt) -> None:
    """The jobs the deployment's invocations made, newest first."""
    emit(_ops().list_jobs(endpoint, name), draw_jobs)
