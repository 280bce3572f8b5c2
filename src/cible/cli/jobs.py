"""`cible job …`: the verbs of `az ml job`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.groups import new_group
from cible.cli.output import (
    STATUS_STYLES,
    OutputFormat,
    console,
    current,
    emit,
    err_console,
    print_fields,
    print_gpus,
    print_table,
    warn_answered,
    warn_loaded,
)

app = new_group()

NameOpt = Annotated[str, typer.Option("--name", "-n", help="job name")]
SHOW_KEYS = ["name", "type", "display_name", "status", "queue_reason", "parent_job_name", "experiment_name", "compute",
             "command", "start_time", "end_time", "output_uris", "mlflow_run_id", "metrics_unavailable", "warnings"]


def _client():  # noqa: ANN202
    from cible.sdk import MLClient

    return MLClient()


def web_view(url: str, name: str) -> str:
    """The job's page in the studio (a browser without a session signs in first: `cible studio`)."""
    from urllib.parse import quote

    return f"{url}/jobs/{quote(name, safe='')}"


def _draw_job(job: dict, url: str | None = None) -> None:
    print_fields(job, SHOW_KEYS)
    if url:
        console.print(f"[bold]Web View[/bold]  {web_view(url, job['name'])}", highlight=False, soft_wrap=True)
    error = job.get("error")
    if error:  # as text: a traceback's lines stay lines
        console.print(f"[bold]error[/bold]  [red]{error.get('code', 'Error')}[/red]", highlight=False)
        console.print(str(error.get("message", "")).rstrip(), highlight=False, markup=False, soft_wrap=True)
    for key in ("params", "metrics"):
        if job.get(key):
            print_table([{"name": k, "value": v} for k, v in sorted(job[key].items())],
                        [("name", "name"), ("value", "value")], title=key)
    _draw_children(job)
    _draw_batch(job)
    print_gpus(job.get("gpu_usage"))
    history = job.get("status_history")
    if history:
        print_table(history, [("status", "status"), ("at", "at"), ("by", "by"), ("reason", "reason")],
                    title="status history")


def _draw_children(job: dict) -> None:
    """A sweep's trials and best trial, an AutoML job's searches and best models, a pipeline's steps."""
    automl = job.get("type") == "automl"
    if job.get("trials"):
        metric = job.get("primary_metric") or (job.get("objective") or {}).get("primary_metric", "metric")
        rows = [{**t, "parameters": ", ".join(f"{k}={v}" for k, v in t["parameters"].items()),
                 "why": t.get("terminated") or t.get("error") or "", "algorithm": t.get("algorithm") or ""}
                for t in job["trials"]]
        columns = [("#", "index"), ("trial", "name"), ("status", "status"), (metric, "metric"),
                   ("parameters", "parameters"), ("why", "why")]
        if automl:
            columns.insert(3, ("algorithm", "algorithm"))
        print_table(rows, columns, title="trials")
    if automl and job.get("models"):
        print_table([{**m, "trial": m.get("trial", "")} for m in job["models"]],
                    [("rank", "rank"), ("algorithm", "algorithm"), (job.get("primary_metric") or "metric", "metric"),
                     ("seconds", "time_s"), ("trial", "trial")], title="best models")
    for warning in job.get("automl_warnings") or []:
        console.print(f"[yellow]warning[/yellow] {warning}", highlight=False)
    best = job.get("best_trial")
    if best:
        params = ", ".join(f"{k}={v}" for k, v in best["parameters"].items())
        algorithm = f"{best['algorithm']}  " if best.get("algorithm") else ""
        console.print(f"[bold]best trial[/bold]  {best['name']}  {algorithm}{best['metric']}  ({params})",
                      highlight=False)
        if best.get("test_metrics"):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in best["test_metrics"].items() if isinstance(v, (int, float)))
            console.print(f"[bold]on test_data[/bold]  {shown}", highlight=False)
    if job.get("steps"):
        rows = [{**step, "job": step.get("job") or "", "compute": str(step.get("compute") or "").removeprefix("azureml:")}
                for step in job["steps"]]
        print_table(rows, [("step", "name"), ("status", "status"), ("job", "job"), ("compute", "compute")],
                    title="steps")


def batch_progress_line(batch: dict) -> str:
    """A batch job's progress in one line: "mini-batches 7/10 done, 1 failed, 123,456 rows/s"."""
    line = f"mini-batches {batch.get('done', 0)}/{batch.get('total', 0)} done"
    if batch.get("failed"):
        line += f", {batch['failed']} failed"
    if batch.get("running"):
        line += f", {batch['running']} running"
    if batch.get("rows_per_second"):
        line += f", {batch['rows_per_second']:,.0f} rows/s"
    if batch.get("outcome") == "failed" and batch.get("reason"):
        line += f" (failed: {batch['reason']})"
    return line


def _draw_batch(job: dict) -> None:
    """A batch job's mini-batches: the progress line, rows, and the failed ones with their errors."""
    from rich.markup import escape

    batch = job.get("batch")
    if not batch:
        return
    # The reason is the user's error text ("[columns]", "[/tmp/x]"): never read as markup.
    console.print(f"[bold]batch[/bold]  {escape(batch_progress_line(batch))}, {batch.get('rows', 0):,} rows from "
                  f"{batch.get('files', 0):,} files", highlight=False)
    if batch.get("reason") and batch.get("outcome") != "failed":
        console.print(f"[bold]batch note[/bold]  {escape(batch['reason'])}", highlight=False)
    failed = batch.get("failed_mini_batches") or []
    if failed:
        rows = [{**f, "files": ", ".join(f["files"][:3]) + (" …" if len(f["files"]) > 3 else ""),
                 "error": str(f.get("error") or "")} for f in failed]
        more = batch.get("failed_mini_batches_count", len(failed)) - len(failed)
        print_table(rows, [("#", "index"), ("files", "files"), ("tries", "tries"), ("error", "error")],
                    title="failed mini-batches" + (f" (and {more} more)" if more > 0 else ""))


class _ProgressOut:
    """The log's output with a batch job's progress line under it: on a terminal one line redrawn in place
    (cleared before log bytes are written, drawn again after); elsewhere a new line per change."""

    def __init__(self, out: Any, tty: bool) -> None:
        import threading

        self.out, self.tty, self.line, self.lock = out, tty, "", threading.Lock()

    def write(self, data: bytes) -> int:
        with self.lock:
            if self.tty and self.line:
                self.out.write(b"\r\x1b[K")
            self.out.write(data)
            if self.tty and self.line:
                if not data.endswith(b"\n"):
                    self.out.write(b"\n")
                self.out.write(self.line.encode())
            self.out.flush()
        return len(data)

    def flush(self) -> None:
        with self.lock:
            self.out.flush()

    def show(self, line: str) -> None:
        with self.lock:
            if line == self.line:
                return
            self.out.write((b"\r\x1b[K" + line.encode()) if self.tty else (line + "\n").encode())
            self.out.flush()
            self.line = line

    def end(self) -> None:
        with self.lock:
            if self.tty and self.line:
                self.out.write(b"\n")
                self.out.flush()
            self.line = ""


def _watch_batch(client: Any, name: str, out: _ProgressOut, stop: Any) -> None:
    """Poll a batch job's progress each second while its log is followed."""
    while not stop.wait(1.0):
        try:
            batch = client.jobs.get(name).get("batch")
        except Exception:  # noqa: BLE001 - a missed poll: the next one says it
            continue
        if batch:
            out.show(batch_progress_line(batch))


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="job YAML (Azure ML CLI v2)")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="job name")] = None,
    stream: Annotated[bool, typer.Option("--stream", "-s", help="follow the log until the job ends")] = False,
) -> None:
    """Submit a job from a YAML file."""
    from cible.core.specs.azureml.loader import load_spec

    loaded = load_spec(file, "job", set_overrides=set_ or (), name=name)
    warn_loaded(loaded)
    client = _client()
    job = client.jobs.create_or_update(loaded.entity)
    shown = warn_answered(job, loaded)
    if not stream:
        emit(job, lambda _: _draw_job(shown, client.url))
        return
    follow(client, job["name"])


def follow(client: Any, name: str, *, emit_job: bool = True) -> dict:
    """Stream a job's log, with its status changes and, while it waits, why; Ctrl-C stops following
    (the job goes on). For people (-o table, none) the log goes to stdout; a script's formats
    (json, yaml, tsv) get the job at the end on stdout (unless `emit_job` is off: the caller
    emits a result of its own) and the log on stderr."""
    from rich.text import Text

    from cible.core.errors import JobFailedError

    for_people = current.format in (OutputFormat.table, OutputFormat.none) and current.query is None
    log_out, notes = (sys.stdout.buffer, console) if for_people else (sys.stderr.buffer, err_console)
    notes.print(f"RunId: {name}\nWeb View: {web_view(client.url, name)}\n", highlight=False, soft_wrap=True)

    def said(job: dict) -> None:
        log_out.flush()
        at = datetime.now().astimezone().strftime("%H:%M:%S")
        why = f": {job['queue_reason']}" if job.get("queue_reason") else ""
        notes.print(Text.assemble((at, "dim"), " ", (job["status"], STATUS_STYLES.get(job["status"], "")), why))

    failed, watcher = None, None
    if client.jobs.get(name).get("type") == "batch":  # its mini-batches' progress under the log
        import threading

        log_out = _ProgressOut(log_out, tty=(sys.stdout if for_people else sys.stderr).isatty())
        stop = threading.Event()
        watcher = (threading.Thread(target=_watch_batch, args=(client, name, log_out, stop), daemon=True), stop)
        watcher[0].start()
    try:
        job = client.jobs.stream(name, out=log_out, on_status=said)
    except KeyboardInterrupt:
        log_out.flush()
        err_console.print(f"\nstopped following job {name}; it goes on. Follow it again with `cible job stream -n "
                          f"{name}`, stop it with `cible job cancel -n {name}`.", highlight=False)
        raise typer.Exit(130) from None
    except JobFailedError as exc:
        failed, job = exc, client.jobs.get(name)
    finally:
        if watcher is not None:
            watcher[1].set()
            watcher[0].join(5)
    if watcher is not None:
        if job.get("batch"):
            log_out.show(batch_progress_line(job["batch"]))
        log_out.end()
    notes.print(f"\nExecution Summary\n=================\nRunId: {name}\nStatus: {job['status']}", highlight=False)
    if emit_job:
        emit(job, lambda _: None)  # for people the summary has said it
    if failed is not None:
        raise failed
    return job


def next_steps(name: str, home: Path | None) -> str:
    """What to try after a first job, printed at the end of the quickstart."""
    import shutil

    where = ""
    if shutil.which("cible") is None:  # installed in a venv that is not active
        venv = Path(sys.prefix)
        where = (f"(`cible` is not on your PATH: `source {venv / 'bin' / 'activate'}` first, or call "
                 f"{venv / 'bin' / 'cible'})")
    steps = [(f"cible job show -n {name}", "status, metrics, history"),
             ("cible studio --open", "the workspace in a browser"),
             (f"cible job download -n {name} --all -p out/", ""),
             ("cible model list", ""),
             ("cible job create -f examples/jobs/hello-code.yml --stream", "in a clone of the repository"),
             ("cible compute create -n cpu-cluster --type amlcompute --min-instances 0 --max-instances 2", "")]
    width = max(len(command) for command, why in steps if why)  # the comments in one column
    lines = [f"  {command:{width}}   # {why}" if why else f"  {command}" for command, why in steps]
    return (f"\nnext: {where}\n" + "\n".join(lines) + "\n"
            f"logs: the server's in {home / 'server.log' if home else 'its host'}; a job's with "
            f"`cible job stream -n NAME` or `cible job download -n NAME --all`")


@app.command("show")
def show(name: NameOpt) -> None:
    """Show a job: status, why, history, error."""
    client = _client()
    emit(client.jobs.get(name), lambda job: _draw_job(job, client.url))


@app.command("list")
def list_(
    max_results: Annotated[Optional[int], typer.Option("--max-results", "-r")] = 50,
    status: Annotated[Optional[str], typer.Option("--status", help="e.g. running, completed (any case)")] = None,
    include_archived: Annotated[bool, typer.Option("--include-archived", help="archived jobs too")] = False,
    archived_only: Annotated[bool, typer.Option("--archived-only", help="only archived jobs")] = False,
    parent_job_name: Annotated[Optional[str], typer.Option(
        "--parent-job-name", "-p", help="list this sweep's trials or this pipeline's steps")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="only the jobs you submitted")] = False,
    created_by: Annotated[Optional[str], typer.Option("--created-by", help="only the jobs this user submitted")] = None,
) -> None:
    """List jobs, newest first (a sweep's trials or a pipeline's steps with --parent-job-name)."""
    if mine and created_by:
        raise typer.BadParameter("give --mine or --created-by, not both")
    client = _client()
    if mine:
        created_by = client.users.me()["name"]
    emit(client.jobs.list(max_results=max_results, status=status, parent_job_name=parent_job_name,
                          list_view_type=view_type(include_archived, archived_only), created_by=created_by),
         _draw_jobs)


def view_type(include_archived: bool, archived_only: bool) -> str:
    """azure-ai-ml's list_view_type for az's two flags."""
    if include_archived and archived_only:
        raise typer.BadParameter("give --include-archived or --archived-only, not both")
    return "All" if include_archived else "ArchivedOnly" if archived_only else "ActiveOnly"


def _draw_jobs(jobs: list[dict]) -> None:
    rows = [{**job, "created": _local_time(job["creation_context"]["created_at"]),
             "compute": str(job.get("compute") or "").removeprefix("azureml:")} for job in jobs]
    print_table(rows, [("name", "name"), ("status", "status"), ("display name", "display_name"),
                       ("compute", "compute"), ("created", "created"), ("experiment", "experiment_name")])


def _local_time(stamp: str) -> str:
    """An API time (UTC, ISO) as this machine's local time, to the second."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if when.tzinfo is None:  # an older server answered without a zone: it meant UTC
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@app.command("stream")
def stream_(name: NameOpt) -> None:
    """Follow a job's log until it ends; non-zero exit when it fails."""
    follow(_client(), name)


@app.command("cancel")
def cancel(name: NameOpt) -> None:
    """Cancel a job: its whole process tree is ended."""
    client = _client()
    client.jobs.begin_cancel(name)
    emit(client.jobs.get(name), _draw_job)


@app.command("download")
def download(
    name: NameOpt,
    download_path: Annotated[Path, typer.Option("--download-path", "-p")] = Path("."),
    output_name: Annotated[Optional[str], typer.Option("--output-name")] = None,
    all_: Annotated[bool, typer.Option("--all", help="default artifacts and every named output")] = False,
) -> None:
    """Download a job's artifacts (artifacts/…) or named outputs (named-outputs/<name>/…)."""
    files = _client().jobs.download(name, download_path=download_path, output_name=output_name, all=all_)
    emit([str(f) for f in files],
         lambda _: console.print(f"downloaded {len(files)} file(s) to {download_path}", highlight=False))


@app.command("archive")
def archive(name: NameOpt) -> None:
    """Hide an ended job from `job list` (`--include-archived` shows it again)."""
    emit(_client().jobs.archive(name), _draw_job)


@app.command("restore")
def restore(name: NameOpt) -> None:
    """Bring an archived job back into `job list`."""
    emit(_client().jobs.restore(name), _draw_job)


@app.command("update")
def update(
    name: NameOpt,
    set_: Annotated[list[str], typer.Option(
        "--set", help="display_name=…, description=… or tags.KEY=VALUE (repeat it)")],
) -> None:
    """Change a job's display name, description or tags, as `az ml job update --set`."""
    client = _client()
    changes: dict[str, Any] = {}
    for item in set_:
        field, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {item!r}: write FIELD=VALUE, e.g. --set display_name=baseline")
        if field.startswith("tags."):
            changes.setdefault("tags", dict(client.jobs.get(name).get("tags") or {}))[field[5:]] = value
        else:
            changes[field] = value  # the server names a field that cannot change
    emit(client.jobs.update(name, **changes), _draw_job)


@app.command("validate")
def validate(
    file: Annotated[Path, typer.Option("--file", "-f", help="job YAML (Azure ML CLI v2)")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value")] = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="job name")] = None,
) -> None:
    """Check a job as its submit would (the YAML, its compute, environment and inputs), creating
    nothing; non-zero exit when it would be refused."""
    from cible.core.specs.azureml.loader import load_spec

    loaded = load_spec(file, "job", set_overrides=set_ or (), name=name)
    warn_loaded(loaded)
    result = _client().jobs.validate(loaded.entity, raise_on_failure=True)
    warn_answered(result, loaded)
    emit(result, lambda r: console.print(f"{file}: valid; it would run on {r.get('target') or 'its compute'}",
                                         highlight=False))
