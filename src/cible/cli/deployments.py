"""`cible online-deployment …`, as `az ml online-deployment …`.

`create` and `update` wait, as az does, until the deployment's replicas are ready (Succeeded) or
it has Failed, saying on stderr how it goes; `--no-wait` returns at once. Ctrl-C stops waiting,
not the deployment.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from cible.cli.endpoints import DELETE_WAIT_S, LocalOpt, NoWaitOpt, SetOpt, client, set_option
from cible.cli.groups import new_group
from cible.cli.output import STATUS_STYLES, console, emit, err_console, print_fields, print_table, warn_loaded

app = new_group()

NameOpt = Annotated[str, typer.Option("--name", "-n", help="deployment name")]
EndpointOpt = Annotated[str, typer.Option("--endpoint-name", "--endpoint", "-e", help="its endpoint's name")]
SHOW_KEYS = ["name", "endpoint_name", "provisioning_state", "reason", "model", "code_configuration", "environment",
             "instance_type", "instance_count", "scale_settings", "request_settings", "environment_variables",
             "description", "tags", "local", "created_at"]
TABLE = [("name", "name"), ("endpoint", "endpoint_name"), ("provisioning_state", "provisioning_state"),
         ("instances", "instance_count"), ("ready", "ready")]
REPLICAS = [("replica", "name"), ("state", "state"), ("ready", "ready"), ("version", "version"), ("url", "url"),
            ("node", "node"), ("restarts", "restarts"), ("reason", "reason")]


def _ops():  # noqa: ANN202
    return client().online_deployments


def _ready(deployment: dict[str, Any]) -> str:
    from cible.sdk.endpoints import ready_count

    ready, replicas = ready_count(deployment)
    return f"{ready}/{replicas}"


def draw_deployment(deployment: dict[str, Any]) -> None:
    shown = {k: v for k, v in deployment.items() if k not in ("spec", "replicas")}
    print_fields(shown, SHOW_KEYS)
    replicas = deployment.get("replicas") or []
    if replicas:
        rows = [{**r, "version": r.get("version", r.get("generation"))} for r in replicas]
        columns = [c for c in REPLICAS if any(row.get(c[1]) not in (None, "") for row in rows)]  # what the server says
        print_table(rows, columns, title=f"replicas ({_ready(deployment)} ready)")


def draw_deployments(deployments: list[dict[str, Any]]) -> None:
    print_table([{**d, "ready": _ready(d)} for d in deployments], TABLE)


def follow(poller: Any, local: bool) -> None:
    """Wait for a create or update to settle, a line on stderr at each change; emit the deployment,
    then exit 1 (its reason and where its logs are) if it Failed."""
    from cible.sdk.endpoints import raise_if_failed

    first = poller.initial
    where = " --local" if local else ""

    def said(deployment: dict[str, Any]) -> None:
        at = datetime.now().astimezone().strftime("%H:%M:%S")
        state = str(deployment.get("provisioning_state"))
        why = f": {deployment['reason']}" if deployment.get("reason") else ""
        err_console.print(Text.assemble((at, "dim"), " ", (state, STATUS_STYLES.get(state, "")),
                                        f"  replicas ready {_ready(deployment)}{why}"), soft_wrap=True)

    try:
        deployment = poller.wait(on_change=said)
    except KeyboardInterrupt:
        err_console.print(f"\nstopped waiting for deployment '{first['name']}'; it goes on. `cible online-deployment "
                          f"show -n {first['name']} -e {first['endpoint_name']}{where}` says how it is.",
                          highlight=False)
        raise typer.Exit(130) from None
    emit(deployment, draw_deployment)
    raise_if_failed(deployment)


def _load(file: Path, name: str | None, endpoint: str | None, set_: list[str] | None) -> Any:
    from cible.core.specs.azureml.loader import load_spec

    overrides = [*(set_ or ()), *([f"endpoint_name={endpoint}"] if endpoint else [])]
    loaded = load_spec(file, "online-deployment", set_overrides=overrides, name=name)
    warn_loaded(loaded)
    return loaded.entity


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="online deployment YAML")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="deployment name (default: the file's)")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint-name", "--endpoint", "-e", help="its endpoint (default: the file's endpoint_name)")] = None,
    all_traffic: Annotated[bool, typer.Option("--all-traffic", help="give it 100% of the endpoint's traffic")] = False,
    local: LocalOpt = False,
    set_: SetOpt = None,
    skip_script_validation: Annotated[bool, typer.Option(
        "--skip-script-validation", help="accepted, as az: the scoring script is checked when it is loaded")] = False,  # noqa: ARG001
    no_wait: NoWaitOpt = False,
) -> None:
    """Create a deployment from YAML: local code and model are uploaded (read in place with --local);
    waits until its replicas are ready, or it fails."""
    deployment = _load(file, name, endpoint, set_)
    poller = _ops().begin_create_or_update(deployment, local=local, all_traffic=all_traffic, update=False)
    if no_wait:
        emit(poller.initial, draw_deployment)
        return
    follow(poller, local)


@app.command("update")
def update(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="deployment name (default: the file's)")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint-name", "--endpoint", "-e", help="its endpoint (default: the file's endpoint_name)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="online deployment YAML")] = None,
    set_: SetOpt = None,
    local: LocalOpt = False,
    no_wait: NoWaitOpt = False,
) -> None:
    """Change a deployment: a new spec (-f), or fields of the current one (--set instance_count=2). A new
    model, code or environment rolls its replicas one at a time; waits until it has settled."""
    if file is not None:
        deployment = _load(file, name, endpoint, set_)
        poller = _ops().begin_update(deployment.name, deployment.endpoint_name, deployment=deployment, local=local)
    else:
        assignments = set_option(set_)
        if not assignments:
            raise typer.BadParameter("give what to change: -f or --set (e.g. --set instance_count=2)")
        if name is None or endpoint is None:
            raise typer.BadParameter("without -f, give the deployment (-n) and its endpoint (-e)",
                                     param_hint="'--name' / '--endpoint-name'")
        poller = _ops().begin_update(name, endpoint, set=assignments, local=local)
    if no_wait:
        emit(poller.initial, draw_deployment)
        return
    follow(poller, local)


@app.command("show")
def show(name: NameOpt, endpoint: EndpointOpt, local: LocalOpt = False) -> None:
    """Show a deployment, its state and its replicas."""
    emit(_ops().get(name, endpoint, local=local), draw_deployment)


@app.command("list")
def list_(endpoint: EndpointOpt, local: LocalOpt = False) -> None:
    """List an endpoint's deployments."""
    emit(_ops().list(endpoint, local=local), draw_deployments)


@app.command("delete")
def delete(
    name: NameOpt,
    endpoint: EndpointOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    no_wait: NoWaitOpt = False,
    local: LocalOpt = False,
) -> None:
    """Delete a deployment (it must have no traffic); waits until its replicas have stopped (unless --no-wait)."""
    ops = _ops()
    ops.get(name, endpoint, local=local)  # a name that does not exist is said before asking anything
    what = f"deployment '{name}' of endpoint '{endpoint}'"
    if not yes:
        typer.confirm(f"delete {what}?", abort=True)
    poller = ops.begin_delete(name, endpoint, local=local)
    if not no_wait:
        err_console.print(f"deleting {what}: stopping its replicas …", highlight=False)
        poller.result(timeout=DELETE_WAIT_S)
    emit({"name": name, "endpoint_name": endpoint, "local": local, "deleted": not no_wait},
         lambda _: console.print(f"deleted {what}" if not no_wait else f"deleting {what}", highlight=False))


@app.command("get-logs")
def get_logs(
    name: NameOpt,
    endpoint: EndpointOpt,
    lines: Annotated[int, typer.Option("--lines", "-l", min=1, help="the last N lines")] = 5000,
    container: Annotated[str, typer.Option(
        "--container", "-c", help="inference-server (the scoring server's output: the only one cible has)")]
        = "inference-server",
    local: LocalOpt = False,
) -> None:
    """The scoring server's output (its newest ready replica's): init() errors, run() tracebacks."""
    if container != "inference-server":
        raise typer.BadParameter(f"{container!r}: cible has one container, inference-server (models are read in "
                                 "place, there is no storage-initializer)", param_hint="'--container'")
    text = _ops().get_logs(name, endpoint, lines=lines, local=local)
    emit(text, lambda _: print(text, end="" if text.endswith("\n") or not text else "\n"))


def draw_recommendation(answer: dict[str, Any]) -> None:
    shown = {"recommended_instance_type": answer.get("recommended_instance_type"),
             "memory_gb": answer.get("memory_gb"), "vcpus": answer.get("vcpus"),
             "price_per_hour": answer.get("price_per_hour"), "instance_count": answer.get("instance_count"),
             "peak_memory_mb": answer.get("peak_memory_mb"), "needed_memory_mb": answer.get("needed_memory_mb"),
             "rps": answer.get("rps"), "p50_ms": answer.get("p50_ms"), "p99_ms": answer.get("p99_ms"),
             "requests": answer.get("requests"), "errors": answer.get("errors"),
             "current_instance_type": answer.get("current_instance_type")}
    print_fields({k: v for k, v in shown.items() if v is not None}, list(shown))
    console.print(f"\n{answer.get('explanation', '')}", highlight=False, soft_wrap=True)


@app.command("recommend-size")
def recommend_size(
    name: NameOpt,
    endpoint: EndpointOpt,
    request_file: Annotated[Path, typer.Option(
        "--request-file", "-r", help="a scoring request (JSON), sent as it is, again and again")],
    duration: Annotated[float, typer.Option("--duration", min=1, max=120, help="seconds of load")] = 10,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64, help="requests in flight at once")] = 4,
    target_rps: Annotated[Optional[float], typer.Option(
        "--target-rps", help="requests/s the deployment must answer: gives instance_count")]
        = None,
    local: LocalOpt = False,
) -> None:
    """Load one ready replica with the request for a few seconds, measure its peak memory and requests/s,
    and name the smallest VM size with 150 % of that memory (and the replicas for --target-rps)."""
    if target_rps is not None and not target_rps > 0:
        raise typer.BadParameter("a number of requests per second above 0", param_hint="'--target-rps'")
    err_console.print(f"loading a replica of deployment '{name}' for {duration:g} s at concurrency {concurrency} …",
                      highlight=False)
    answer = _ops().recommend_size(name, endpoint, request_file=request_file, duration_s=duration,
                                   concurrency=concurrency, target_rps=target_rps, local=local)
    emit(answer, draw_recommendation)
