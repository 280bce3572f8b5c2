"""`cible batch-endpoint …`, as `az ml batch-endpoint …` (the deployments' verbs: cli/batch_deployments.py).

`invoke` makes a job on the deployment's cluster and prints it (its name is what `--query name`
gives, as on Azure); `--stream` (cible's) follows it as `cible job stream` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.endpoints import SetOpt, set_option
from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_fields, print_table, warn_loaded

app = new_group()

NameOpt = Annotated[str, typer.Option("--name", "-n", help="endpoint name")]
SHOW_KEYS = ["name", "auth_mode", "provisioning_state", "default_deployment", "deployments", "scoring_uri",
             "description", "tags", "created_by", "created_at"]
TABLE = [("name", "name"), ("default deployment", "default_deployment"), ("deployments", "deployments"),
         ("provisioning_state", "provisioning_state")]
JOB_TABLE = [("name", "name"), ("deployment", "deployment"), ("status", "status"), ("created", "created")]
JOB_KEYS = ["name", "display_name", "status", "experiment_name", "compute", "batch_of", "start_time", "end_time"]


def client():  # noqa: ANN201
    from cible.sdk import MLClient

    return MLClient()


def _for_people(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {**endpoint, "default_deployment": (endpoint.get("defaults") or {}).get("deployment_name") or "",
            "deployments": ", ".join(endpoint.get("deployments") or [])}


def draw_endpoint(endpoint: dict[str, Any]) -> None:
    print_fields(_for_people(endpoint), SHOW_KEYS)


def draw_job(job: dict[str, Any]) -> None:
    print_fields(job, JOB_KEYS)


def draw_jobs(jobs: list[dict[str, Any]]) -> None:
    rows = [{**j, "deployment": str(j.get("batch_of") or "").partition("/")[2],
             "created": (j.get("creation_context") or {}).get("created_at", "")} for j in jobs]
    print_table(rows, JOB_TABLE)


def _load(name: str | None, file: Path | None, set_: list[str] | None) -> Any:
    from cible.core.specs.azureml.loader import load_spec, load_spec_dict

    if file is not None:
        loaded = load_spec(file, "batch-endpoint", set_overrides=set_ or (), name=name)
        warn_loaded(loaded)
        return loaded.entity
    if name is None:
        raise typer.BadParameter("give the endpoint's YAML (-f) or at least its name (-n)", param_hint="'--name'")
    from cible.core.specs.azureml.overrides import parse_assignment, set_path

    data: dict[str, Any] = {"name": name}
    for item in set_option(set_):
        parts, value = parse_assignment(item)
        set_path(data, parts, value, item)
    return load_spec_dict(data, "batch-endpoint", source="flags").entity


@app.command("create")
def create(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="endpoint name (default: the file's)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="batch endpoint YAML")] = None,
    set_: SetOpt = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="accepted, as az: an endpoint is ready at once")] = False,  # noqa: ARG001
) -> None:
    """Create a batch endpoint from YAML (or just a name)."""
    endpoint = _load(name, file, set_)
    emit(client().batch_endpoints.begin_create_or_update(endpoint, update=False).result(), draw_endpoint)


@app.command("show")
def show(name: NameOpt) -> None:
    """Show a batch endpoint: its default deployment and its deployments."""
    emit(client().batch_endpoints.get(name), draw_endpoint)


@app.command("list")
def list_() -> None:
    """List the batch endpoints."""
    emit(client().batch_endpoints.list(), lambda items: print_table([_for_people(e) for e in items], TABLE))


@app.command("update")
def update(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="endpoint name (default: the file's)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="batch endpoint YAML")] = None,
    set_: SetOpt = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="accepted, as az: applied at once")] = False,  # noqa: ARG001
) -> None:
    """Change an endpoint: a new spec (-f), or fields (--set defaults.deployment_name=D)."""
    ops = client().batch_endpoints
    if file is not None:
        endpoint = _load(name, file, set_)
        emit(ops.begin_update(endpoint.name, endpoint=endpoint).result(), draw_endpoint)
        return
    assignments = set_option(set_)
    if not assignments:
        raise typer.BadParameter("give what to change: -f or --set (e.g. --set defaults.deployment_name=blue)")
    if name is None:
        raise typer.BadParameter("give the endpoint's name (-n)", param_hint="'--name'")
    emit(ops.begin_update(name, set=assignments).result(), draw_endpoint)


@app.command("delete")
def delete(
    name: NameOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="accepted, as az: deleted at once")] = False,  # noqa: ARG001
) -> None:
    """Delete a batch endpoint and its deployments (the jobs they made stay)."""
    ops = client().batch_endpoints
    ops.get(name)  # a name that does not exist is said before asking anything
    if not yes:
        typer.confirm(f"delete batch endpoint '{name}' and all its deployments?", abort=True)
    answer = ops.begin_delete(name).result()
    emit(answer, lambda _: console.print(f"deleted batch endpoint '{name}'", highlight=False))


@app.command("invoke")
def invoke(
    name: NameOpt,
    input_: Annotated[Optional[str], typer.Option(
        "--input", help="a local file or folder (uploaded), azureml:<data>@latest, azureml:<data>:<version>, "
                              "or azureml://datastores/<datastore>/paths/<path>")] = None,
    input_type: Annotated[Optional[str], typer.Option(
        "--input-type", help="uri_folder or uri_file (default: uri_file for a local file, else uri_folder)")] = None,
    deployment_name: Annotated[Optional[str], typer.Option(
        "--deployment-name", "-d", help="the deployment to use (default: the endpoint's default)")] = None,
    output_path: Annotated[Optional[str], typer.Option(
        "--output-path", help="where the results go: azureml://datastores/<datastore>/paths/<path>")] = None,
    file: Annotated[Optional[Path], typer.Option(
        "--file", "-f", help="a YAML with the input: inputs: {input_data: {type, path}}")] = None,
    set_: SetOpt = None,
    mini_batch_size: Annotated[Optional[int], typer.Option(
        "--mini-batch-size", min=1, help="files per run() call, for this job")] = None,
    instance_count: Annotated[Optional[int], typer.Option(
        "--instance-count", min=1, help="nodes, for this job")] = None,
    job_name: Annotated[Optional[str], typer.Option("--job-name", help="the job's name (default: generated)")] = None,
    experiment_name: Annotated[Optional[str], typer.Option(
        "--experiment-name", help="the job's experiment (default: the endpoint's name)")] = None,
    stream: Annotated[bool, typer.Option("--stream", "-s", help="follow the job until it ends (cible's)")] = False,
) -> None:
    """Score data with a deployment: a job on its cluster, printed (`--query name` is its name)."""
    if file is not None:
        file_input, file_type = _input_file(file)
        input_, input_type = input_ or file_input, input_type or file_type
    if not input_:
        raise typer.BadParameter("give the data to score (--input, or --file with inputs.input_data)",
                                 param_hint="'--input'")
    if input_type is not None and input_type not in ("uri_folder", "uri_file"):
        raise typer.BadParameter(f"{input_type!r}: uri_folder or uri_file", param_hint="'--input-type'")
    ml = client()
    job = ml.batch_endpoints.invoke(
        name, input=input_, deployment_name=deployment_name, input_type=input_type, output_path=output_path,
        mini_batch_size=mini_batch_size, instance_count=instance_count, job_name=job_name,
        experiment_name=experiment_name, set=set_option(set_))
    if not stream:
        emit(job, draw_job)
        return
    from cible.cli.jobs import follow

    follow(ml, job["name"])


def _input_file(file: Path) -> tuple[str | None, str | None]:
    """`--file inputs.yml`: `inputs: {input_data: {type, path}}` (Azure's form; its one input by any name).
    A relative local path is the file's folder's."""
    import yaml

    from cible.core.specs.azureml.refs import classify_path

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}", param_hint="'--file'") from None
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(inputs, dict) or not inputs:
        return None, None
    value = inputs.get("input_data", next(iter(inputs.values())))
    path, kind = (value.get("path"), value.get("type")) if isinstance(value, dict) else (value, None)
    if isinstance(path, str) and classify_path(path) == "local" and not Path(path).is_absolute():
        path = str((file.parent / path).resolve())
    return path, kind


@app.command("list-jobs")
def list_jobs(name: NameOpt) -> None:
    """The jobs the endpoint's invocations made, newest first."""
    emit(client().batch_endpoints.list_jobs(name), draw_jobs)
