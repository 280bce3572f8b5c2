"""`cible job …`: the verbs of `az ml job`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cible.cli.output import OutputFormat, console, print_fields, print_json, print_table, warn

app = typer.Typer(help="Submit, follow, cancel and download jobs.", no_args_is_help=True)

OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")]
NameOpt = Annotated[str, typer.Option("--name", "-n", help="job name")]
SHOW_KEYS = ["name", "display_name", "status", "queue_reason", "experiment_name", "compute", "command", "start_time",
             "end_time", "output_uris", "mlflow_run_id", "metrics_unavailable", "warnings", "error"]


def _client():  # noqa: ANN202
    from cible.sdk import MLClient

    return MLClient()


def _print_job(job: dict, output: OutputFormat) -> None:
    if output == OutputFormat.json:
        print_json(job)
        return
    print_fields(job, SHOW_KEYS)
    for key in ("params", "metrics"):
        if job.get(key):
            print_table([{"name": k, "value": v} for k, v in sorted(job[key].items())],
                        [("name", "name"), ("value", "value")], title=key)
    history = job.get("status_history")
    if history:
        print_table(history, [("status", "status"), ("at", "at"), ("reason", "reason")], title="status history")


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="job YAML (Azure ML CLI v2)")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="job name")] = None,
    stream: Annotated[bool, typer.Option("--stream", "-s", help="follow the log until the job ends")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Submit a job from a YAML file."""
    from cible.core.specs.azureml.loader import load_spec

    loaded = load_spec(file, "job", set_overrides=set_ or (), name=name)
    for line in loaded.warnings:
        warn(line)
    client = _client()
    job = client.jobs.create_or_update(loaded.entity)
    for line in job.get("warnings", []):
        if line not in loaded.warnings:
            warn(line)
    if not stream:
        _print_job(job, output)
        return
    _stream(client, job["name"], output)


def _stream(client, name: str, output: OutputFormat) -> None:  # noqa: ANN001
    log_out = sys.stderr.buffer if output == OutputFormat.json else sys.stdout.buffer
    if output != OutputFormat.json:
        console.print(f"RunId: {name}\nWeb View: {client.url}/api/v1/jobs/{name}\n", highlight=False)
    try:
        job = client.jobs.stream(name, out=log_out)
    finally:
        if output != OutputFormat.json:
            final = client.jobs.get(name)
            console.print(f"\nExecution Summary\n=================\nRunId: {name}\nStatus: {final['status']}", highlight=False)
    if output == OutputFormat.json:
        print_json(job)


@app.command("show")
def show(name: NameOpt, output: OutputOpt = OutputFormat.table) -> None:
    """Show a job: status, why, history, error."""
    _print_job(_client().jobs.get(name), output)


@app.command("list")
def list_(
    max_results: Annotated[Optional[int], typer.Option("--max-results", "-r")] = 50,
    status: Annotated[Optional[str], typer.Option("--status")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """List jobs, newest first."""
    jobs = _client().jobs.list(max_results=max_results, status=status)
    if output == OutputFormat.json:
        print_json(jobs)
        return
    rows = [{**job, "created": job["creation_context"]["created_at"][:19].replace("T", " ")} for job in jobs]
    print_table(rows, [("name", "name"), ("display name", "display_name"), ("status", "status"),
                       ("experiment", "experiment_name"), ("compute", "compute"), ("created (UTC)", "created")])


@app.command("stream")
def stream_(name: NameOpt, output: OutputOpt = OutputFormat.table) -> None:
    """Follow a job's log until it ends; non-zero exit when it fails."""
    _stream(_client(), name, output)


@app.command("cancel")
def cancel(name: NameOpt, output: OutputOpt = OutputFormat.table) -> None:
    """Cancel a job: its whole process tree is ended."""
    client = _client()
    client.jobs.begin_cancel(name)
    _print_job(client.jobs.get(name), output)


@app.command("download")
def download(
    name: NameOpt,
    download_path: Annotated[Path, typer.Option("--download-path", "-p")] = Path("."),
    output_name: Annotated[Optional[str], typer.Option("--output-name")] = None,
    all_: Annotated[bool, typer.Option("--all", help="default artifacts and every named output")] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Download a job's artifacts (artifacts/…) or named outputs (named-outputs/<name>/…)."""
    files = _client().jobs.download(name, download_path=download_path, output_name=output_name, all=all_)
    if output == OutputFormat.json:
        print_json([str(f) for f in files])
    else:
        console.print(f"downloaded {len(files)} file(s) to {download_path}", highlight=False)
