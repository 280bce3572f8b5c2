"""Finding, or starting, the local workspace's server."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from typing import Any

from cible.client.http import WorkspaceClient
from cible.core.errors import CibleError, ServerUnavailableError
from cible.server.process import ensure_token
from cible.workspace import WorkspacePaths

START_TIMEOUT_S = 60.0


def read_server_info(paths: WorkspacePaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.server_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_healthy(url: str, token: str) -> bool:
    client = WorkspaceClient(url, token, timeout=2.0)
    try:
        return client.json("GET", "/health").get("status") == "ok"
    except CibleError:
        return False
    finally:
        client.close()


def running_server(paths: WorkspacePaths) -> dict[str, Any] | None:
    info = read_server_info(paths)
    if info and paths.token_file.exists() and is_healthy(info["url"], paths.token_file.read_text().strip()):
        return info
    return None


def ensure_local_server(paths: WorkspacePaths) -> tuple[str, str]:
    """URL and token of the workspace's server, starting it in the background if none answers."""
    token = ensure_token(paths)
    info = running_server(paths)
    if info:
        return info["url"], token
    with open(paths.start_lock, "a+") as lock:  # two CLIs starting at once start one server
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = running_server(paths)
        if info:
            return info["url"], token
        return start_server(paths)["url"], token


def start_server(paths: WorkspacePaths) -> dict[str, Any]:
    paths.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CIBLE_HOME": str(paths.home)}
    with open(paths.server_log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cible", "server", "run"], env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    token = ensure_token(paths)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailableError(
                f"the cible server exited with code {proc.returncode} while starting; "
                f"last lines of {paths.server_log}:\n{_tail(paths.server_log)}"
            )
        info = read_server_info(paths)
        if info and info.get("pid") == proc.pid and is_healthy(info["url"], token):
            return info
        time.sleep(0.05)  # polling a child's readiness, bounded by the deadline
    raise ServerUnavailableError(f"the cible server did not answer within {START_TIMEOUT_S:.0f}s; see {paths.server_log}")


def _tail(path, lines: int = 15) -> str:  # noqa: ANN001
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
