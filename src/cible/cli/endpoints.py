"""`cible online-endpoint …`, as `az ml online-endpoint …` (the deployments' verbs: cli/deployments.py).

Every verb takes `--local` where az does: local endpoints are a namespace of their own, served on
the server's machine without auth. What a flag's text means is checked here, before any request
(`--traffic "blue=90 green=10"`, `--set a.b=c`): a typo is a usage error, not a round trip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.groups import new_group
from cible.cli.output import console, emit, err_console, print_fields, print_json, print_table, warn_loaded

app = new_group()

NameOpt = Annotated[str, typer.Option("--name", "-n", help="endpoint name")]
LocalOpt = Annotated[bool, typer.Option("--local", help="a local endpoint (served on the server's machine, no auth)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b.c=value (repeat it)")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="do not wait for the operation to finish")]
DELETE_WAIT_S = 600.0  # how long `delete` waits for the replicas to stop (without --no-wait)
SHOW_KEYS = ["name", "auth_mode", "provisioning_state", "scoring_uri", "openapi_uri", "traffic", "mirror_traffic",
             "deployments", "description", "tags", "compute", "local", "created_by", "created_at"]
TABLE = [("name", "name"), ("auth_mode", "auth_mode"), ("provisioning_state", "provisioning_state"),
         ("scoring_uri", "scoring_uri"), ("traffic", "traffic")]
METRICS = [("deployment", "deployment"), ("requests/s", "requests_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
           ("errors", "errors")]


def client():  # noqa: ANN201
    from cible.sdk import MLClient

    return MLClient()


# ---- flags (pure) ---------------------------------------------------------------------------------


def traffic_option(text: str, option: str = "--traffic") -> dict[str, int]:
    """`--traffic "blue=90 green=10"` (or `--mirror-traffic "green=10"`) as a map; a usage error
    that shows the form when it is not one. Whether the shares are valid for the endpoint is the
    server's to say (it knows the deployments)."""
    from cible.core.errors import InvalidSpecError
    from cible.core.planning.traffic import parse_traffic

    try:
        return parse_traffic(text, what="traffic" if option == "--traffic" else "mirror traffic")
    except InvalidSpecError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{option}'") from None


def set_option(assignments: list[str] | None) -> list[str]:
    """`--set a.b=value` items, each checked for its form (the server applies them to the stored spec)."""
    from cible.core.errors import InvalidSpecError
    from cible.core.specs.azureml.overrides import parse_assignment

    for item in assignments or []:
        try:
            parse_assignment(item)
        except InvalidSpecError as exc:
            raise typer.BadParameter(exc.message.removeprefix(f"--set {item!r}: "), param_hint="'--set'") from None
    return list(assignments or [])


def shares(split: dict[str, int] | None) -> str:
    """A traffic map in the CLI's own form: `blue=90 green=10`."""
    return " ".join(f"{name}={share}" for name, share in (split or {}).items())


# ---- drawing --------------------------------------------------------------------------------------


def _for_people(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {**endpoint, "traffic": shares(endpoint.get("traffic")),
            "mirror_traffic": shares(endpoint.get("mirror_traffic")),
            "deployments": ", ".join(endpoint.get("deployments") or [])}


def draw_endpoint(endpoint: dict[str, Any]) -> None:
    print_fields(_for_people(endpoint), SHOW_KEYS)
    metrics = endpoint.get("metrics")
    if endpoint.get("local") or not metrics:
        return
    rows = [{"deployment": name, **{key: _figure(figures.get(key)) for _, key in METRICS[1:]}}
            for name, figures in sorted(metrics.items())]
    print_table(rows, METRICS, title="last 5 minutes")


def _figure(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def draw_endpoints(endpoints: list[dict[str, Any]]) -> None:
    print_table([_for_people(e) for e in endpoints], TABLE)


# ---- verbs ----------------------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="endpoint name (default: the file's)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="online endpoint YAML")] = None,
    auth_mode: Annotated[Optional[str], typer.Option("--auth-mode", help="key or aml_token")] = None,
    local: LocalOpt = False,
    set_: SetOpt = None,
    no_wait: NoWaitOpt = False,  # noqa: ARG001 (az's: an endpoint is ready at once)
) -> None:
    """Create an online endpoint from YAML (or flags)."""
    loaded = _load(name, file, auth_mode, set_)
    warn_loaded(loaded)
    created = client().online_endpoints.begin_create_or_update(loaded.entity, local=local, update=False).result()
    emit(created, draw_endpoint)


def _load(name: str | None, file: Path | None, auth_mode: str | None, set_: list[str] | None) -> Any:
    from cible.core.specs.azureml.loader import load_spec, load_spec_dict

    overrides = [*(set_ or ()), *([f"auth_mode={auth_mode}"] if auth_mode else [])]
    if file is not None:
        return load_spec(file, "online-endpoint", set_overrides=overrides, name=name)
    if name is None:
        raise typer.BadParameter("give the endpoint's YAML (-f) or at least its name (-n)", param_hint="'--name'")
    from cible.core.specs.azureml.overrides import parse_assignment, set_path

    data: dict[str, Any] = {"name": name}
    for item in overrides:
        parts, value = parse_assignment(item)
        set_path(data, parts, value, item)
    return load_spec_dict(data, "online-endpoint", source="flags")


@app.command("show")
def show(name: NameOpt, local: LocalOpt = False) -> None:
    """Show an endpoint: its scoring URI, traffic, and each deployment's requests/s, latency and errors."""
    emit(client().online_endpoints.get(name, local=local), draw_endpoint)


@app.command("list")
def list_(local: LocalOpt = False) -> None:
    """List the online endpoints (the local ones with --local)."""
    emit(client().online_endpoints.list(local=local), draw_endpoints)


@app.command("update")
def update(
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="endpoint name (default: the file's)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="online endpoint YAML")] = None,
    traffic: Annotated[Optional[str], typer.Option(
        "--traffic", "-r", help="the split over deployments, e.g. \"blue=90 green=10\"")] = None,
    mirror_traffic: Annotated[Optional[str], typer.Option(
        "--mirror-traffic", help="copy a share of live requests to a deployment, e.g. \"green=10\"")] = None,
    local: LocalOpt = False,
    set_: SetOpt = None,
    no_wait: NoWaitOpt = False,  # noqa: ARG001 (az's: an endpoint's update applies at once)
) -> None:
    """Change an endpoint: its spec (-f, --set), its traffic split, its mirror."""
    split = traffic_option(traffic) if traffic is not None else None
    mirror = traffic_option(mirror_traffic, "--mirror-traffic") if mirror_traffic is not None else None
    if file is None and not set_ and split is None and mirror is None:
        raise typer.BadParameter("give what to change: -f, --traffic, --mirror-traffic or --set")
    if file is None and name is None:
        raise typer.BadParameter("give the endpoint's name (-n)", param_hint="'--name'")
    ops = client().online_endpoints
    spec = None
    if file is not None:
        spec = _load(name, file, None, set_)
        warn_loaded(spec)
        name = spec.entity.name
    elif set_:
        spec = _changed(ops.get(name, local=local), set_option(set_))
    emit(ops.begin_update(name, endpoint=spec.entity if spec else None, traffic=split, mirror_traffic=mirror,
                          local=local).result(), draw_endpoint)


def _changed(endpoint: dict[str, Any], assignments: list[str]) -> Any:
    """The endpoint's spec (as `show` gives it) with `--set` applied, loaded as a file would be."""
    from cible.core.specs.azureml.loader import load_spec_dict
    from cible.core.specs.azureml.overrides import parse_assignment, set_path
    from cible.sdk.endpoints import ENDPOINT_READ_ONLY

    # Traffic stays out unless --set changes it: the spec sent then leaves the split as it is.
    touched = {item.split("=", 1)[0].split(".")[0] for item in assignments}
    data = {k: v for k, v in endpoint.items()
            if k not in ENDPOINT_READ_ONLY and (k not in ("traffic", "mirror_traffic") or k in touched)}
    for item in assignments:
        parts, value = parse_assignment(item)
        set_path(data, parts, value, item)
    return load_spec_dict(data, "online-endpoint", source="--set")


@app.command("delete")
def delete(
    name: NameOpt,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    no_wait: NoWaitOpt = False,
    local: LocalOpt = False,
) -> None:
    """Delete an endpoint and its deployments; waits until their replicas have stopped (unless --no-wait)."""
    ops = client().online_endpoints
    ops.get(name, local=local)  # a name that does not exist is said before asking anything
    what = f"{'local' if local else 'online'} endpoint '{name}'"
    if not yes:
        typer.confirm(f"delete {what} and all its deployments?", abort=True)
    poller = ops.begin_delete(name, local=local)
    if not no_wait:
        err_console.print(f"deleting {what}: stopping its replicas …", highlight=False)
        poller.result(timeout=DELETE_WAIT_S)
    emit({"name": name, "local": local, "deleted": not no_wait}, lambda _: console.print(
        f"deleted {what}" if not no_wait else f"deleting {what} (`cible online-endpoint show -n {name}` says when "
        "it is gone)", highlight=False))


@app.command("invoke")
def invoke(
    name: NameOpt,
    request_file: Annotated[Path, typer.Option("--request-file", "-r", help="the request body (JSON)")],
    deployment_name: Annotated[Optional[str], typer.Option(
        "--deployment-name", "-d", help="send it to this deployment, whatever the traffic split")] = None,
    local: LocalOpt = False,
) -> None:
    """Send a request to the endpoint and print the answer.

    The file's bytes are POSTed to its scoring URI with a key or token (none for a local endpoint);
    an answer other than a success exits non-zero with its status and body."""
    body = client().online_endpoints.invoke(name, request_file=request_file, deployment_name=deployment_name,
                                            local=local)
    emit(_parsed(body), lambda _: _write(body))


def _parsed(body: str) -> Any:
    import json

    try:
        return json.loads(body)
    except ValueError:
        return body


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


@app.command("get-credentials")
def get_credentials(name: NameOpt) -> None:
    """The endpoint's keys (auth_mode key) or a new token (aml_token), as JSON."""
    emit(client().online_endpoints.get_keys(name), print_json)


@app.command("regenerate-keys")
def regenerate_keys(
    name: NameOpt,
    key_type: Annotated[str, typer.Option("--key-type", help="primary or secondary")] = "primary",
    no_wait: NoWaitOpt = False,  # noqa: ARG001 (az's: done at once)
) -> None:
    """Regenerate the endpoint's primary or secondary key (the other keeps working meanwhile)."""
    if key_type not in ("primary", "secondary"):
        raise typer.BadParameter(f"{key_type!r} is not a key; use primary or secondary", param_hint="'--key-type'")
    client().online_endpoints.begin_regenerate_keys(name, key_type=key_type).result()
    emit({"name": name, "key_type": key_type, "regenerated": True}, lambda _: console.print(
        f"regenerated the {key_type} key of endpoint '{name}' (`cible online-endpoint get-credentials -n {name}`)",
        highlight=False))
