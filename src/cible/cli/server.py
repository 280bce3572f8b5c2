"""`cible server`: run the control plane, or start/stop/status the local one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_fields

app = new_group(no_args_is_help=False)

HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="workspace folder [default: $CIBLE_HOME or ~/.cible]")]


def _paths(home: Path | None):  # noqa: ANN202
    from cible.workspace import WorkspacePaths, default_home

    return WorkspacePaths(home.expanduser().resolve() if home else default_home())


@app.callback(invoke_without_command=True)
def server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port)")] = 0,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="SQLAlchemy URL; default SQLite in the workspace; postgresql://… for teams")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the server in the foreground (`cible server`), or manage the local one."""
    if ctx.invoked_subcommand is None:
        _serve(host, port, database_url, home)


@app.command("run")
def run(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 0,
    database_url: Annotated[Optional[str], typer.Option("--database-url")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the server in the foreground."""
    _serve(host, port, database_url, home)


def _serve(host: str, port: int, database_url: str | None, home: Path | None) -> None:
    from cible.server.process import serve
    from cible.server.settings import ServerSettings

    settings = ServerSettings(host=host, port=port, database_url=database_url)
    if home:
        settings.home = home.expanduser().resolve()
    serve(settings)


@app.command("start")
def start(home: HomeOpt = None) -> None:
    """Start the local workspace's server in the background (no-op when it runs)."""
    from cible.client.local import ensure_local_server, read_server_info

    paths = _paths(home)
    ensure_local_server(paths)
    _print_status(read_server_info(paths) or {})


@app.command("status")
def status(home: HomeOpt = None) -> None:
    """Say whether the local server runs: pid, URL, workspace."""
    from cible.client.local import running_server

    paths = _paths(home)
    info = running_server(paths)
    _print_status(info or {"status": "stopped", "workspace": str(paths.home)})
    if not info:
        raise typer.Exit(3)


@app.command("stop")
def stop(home: HomeOpt = None) -> None:
    """Stop the local server. Running jobs go on; the next server picks them up."""
    from cible.client.local import read_server_info

    paths = _paths(home)
    info = read_server_info(paths)
    if not info or not _alive(info["pid"]):
        emit({"status": "stopped", "workspace": str(paths.home)},
             lambda _: console.print("no cible server is running for this workspace", highlight=False))
        return
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the server process to exit
    if _alive(info["pid"]):
        os.kill(info["pid"], signal.SIGKILL)
    emit({"status": "stopped", "pid": info["pid"], "workspace": str(paths.home)},
         lambda _: console.print(f"stopped the cible server (pid {info['pid']})", highlight=False))


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _print_status(info: dict) -> None:
    info = {"status": info.get("status", "running"), **info}
    emit(info, lambda shown: print_fields(shown, ["status", "pid", "url", "workspace", "database", "log"]))
