"""Finding, or starting, the local workspace's server."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from typing import Any

from cible.client.http import API, httpx, tls_verify  # httpx as cible.client.http imports it (see there)
from cible.core.errors import ServerUnavailableError
from cible.workspace import WorkspacePaths, ensure_token

START_TIMEOUT_S = 60.0


def read_server_info(paths: WorkspacePaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.server_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_healthy(url: str, token: str) -> bool:
    """Whether the workspace's server answers: ok, or degraded (it runs, but its store cannot write
    or its disk is nearly full: requests say why, and starting a second server would not help)."""
    try:
        response = httpx.get(f"{url.rstrip('/')}{API}/health", headers={"Authorization": f"Bearer {token}"},
                             timeout=2.0, verify=tls_verify(url))
        return response.json().get("status") in ("ok", "degraded")
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


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
    paths.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "CIBLE_HOME": str(paths.home)}
    # The server's log can hold job commands and errors: 0600 (the server makes an older one so too).
    with os.fdopen(os.open(paths.server_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
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
