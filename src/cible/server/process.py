"""Running the server process: token, single-server lock, port, server.json."""

from __future__ import annotations

import fcntl
import gc
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from cible.core.errors import ConflictError
from cible.runfiles import write_json_atomic
from cible.server.settings import ServerSettings
from cible.server.store.db import refuse_missing_database
from cible.workspace import WorkspacePaths, ensure_token

PORT_FILE = "server.port"  # kept after a stop, unlike server.json


def _hold_lock(path: Path):  # noqa: ANN202
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ConflictError(f"another cible server already serves this workspace ({path.parent})") from None
    return fh


def _logs_to(path: Path) -> bool:
    """Whether this process's stderr is `path` (the CLI starts a background server so)."""
    try:
        here, there = os.fstat(2), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def serve(settings: ServerSettings) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    from cible.server.app import create_app

    paths = settings.paths
    paths.ensure()  # also makes an older workspace's folder, token and log private
    lock = _hold_lock(paths.run_lock)  # two servers on one workspace would both launch jobs
    # Before anything opens the database (which would create an empty one): a workspace with runs
    # and no database is refused. A damaged database is refused when the store first opens it.
    refuse_missing_database(settings.db_url, paths)
    # Taken out of the environment once read: no child of the server (launchers, agents, MLflow)
    # inherits the workspace token, the database's password or Ray's token.
    settings.database_url = settings.db_url
    from_env = os.environ.pop("CIBLE_TOKEN", None)
    for name in ("CIBLE_DATABASE_URL", "CIBLE_RAY_TOKEN"):
        os.environ.pop(name, None)
    token = settings.token or from_env or ensure_token(paths)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin at each start
    sock = _listen(settings.host, settings.port or _previous_port(paths))
    port = sock.getsockname()[1]
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{port}"
    # The URL jobs use to reach the workspace (MLflow tracking): this one, for local launchers.
    app = create_app(settings, token, url=url)
    info = {"pid": os.getpid(), "url": url, "workspace": str(paths.home), "database": _safe_url(settings.db_url),
            "log": str(paths.server_log) if _logs_to(paths.server_log) else "stderr (run in the foreground)"}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = _server_class()(config)
    write_json_atomic(paths.server_file, info)
    (paths.home / PORT_FILE).write_text(str(port))
    # uvicorn re-raises SIGTERM once it has shut down; exit through Python so the
    # cleanup below runs instead of the default handler killing the process.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The socket already listens: say where (in the foreground, on the terminal; started in the
    # background, into server.log).
    print(f"cible server listening on {url} (workspace {paths.home}, database {info['database']}); "
          "SIGINT or SIGTERM stops it", file=sys.stderr, flush=True)
    # What start-up made (imports, the app) lives as long as the server: moved out of the garbage
    # collector's sight, a full collection takes ~2 ms instead of the ~130 ms the gateway would stall for.
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        try:
            if json.loads(paths.server_file.read_text()).get("pid") == os.getpid():
                paths.server_file.unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        lock.close()


def _server_class():  # noqa: ANN202
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:  # noqa: ANN001
            # Agents' long-polls would hold the graceful shutdown for their whole wait.
            self.config.app.state.hub.release_all()
            await super().shutdown(sockets)

    return Server


def _previous_port(paths: WorkspacePaths) -> int:
    """The port the last server of this workspace had: running jobs keep reaching it after a restart."""
    try:
        return int((paths.home / PORT_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _listen(host: str, port: int) -> socket.socket:
    # proto must say TCP: asyncio disables Nagle only on sockets whose proto is IPPROTO_TCP, and
    # with Nagle on every response after a connection's first waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if not port:
            raise
        sock.bind((host, 0))  # the old port is taken by now: any free one
    sock.listen(128)
    return sock


def _exit_on_signal(signum: int, _frame) -> None:  # noqa: ANN001
    raise SystemExit(128 + signum)


def _safe_url(url: str) -> str:
    """The database URL without its password, for status output."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
