"""Helpers for the e2e tests: run the real `cible` CLI as subprocesses, against a real server process.

Every workspace lives in its own tmp folder (CIBLE_HOME); the CLI starts the workspace's server
in the background on first use, and the fixture's teardown stops it. Starting a server costs a
few seconds, so tests that do not disturb the server share one workspace per module
(`workspace`); tests that stop or kill the server take a fresh one (`fresh_workspace`).
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cible.testing import kill_nodes, wait_until  # noqa: F401  (wait_until re-exported for the tests)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "jobs"
COMMAND_TIMEOUT_S = 180  # one CLI call; --stream of the slowest example stays well under it
TERMINAL = {"Completed", "Failed", "Canceled"}



class Workspace:
    """One CIBLE_HOME, and a way to run the CLI against it."""

    def __init__(self, root: Path, tracking: bool = False) -> None:
        self.root = root
        self.home = root / "home"
        self.cwd = root / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIBLE_")}
        env["CIBLE_HOME"] = str(self.home)
        # MLflow's tracking server costs ~15 s of CPU per workspace; only tests of tracking start it.
        env["CIBLE_TRACKING"] = "1" if tracking else "0"
        # Jobs that name no compute run on `local` here; the serverless tests pop this (default: serverless).
        env["CIBLE_DEFAULT_COMPUTE"] = "local"
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("NO_COLOR", None)
        env["NO_COLOR"] = "1"  # plain error lines, whatever the terminal
        env["COLUMNS"] = "200"  # rich wraps at the terminal width; keep error lines whole
        self.env = env
        self._sdk: tuple[str, Any] | None = None  # the server (pid and URL), and an SDK client of it

    def cible(self, *args: str | os.PathLike, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run `python -m cible ARGS`; with check, fail the test (showing stderr) on a non-zero exit."""
        cmd = [sys.executable, "-m", "cible", *map(str, args)]
        proc = subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`cible {' '.join(map(str, args))}` exited {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str | os.PathLike) -> Any:
        """Run a command with `-o json` and parse its stdout."""
        proc = self.cible(*args, "-o", "json")
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"`cible {' '.join(map(str, args))} -o json` printed no JSON: {exc}\n{proc.stdout!r}\n{proc.stderr}") from None

    def sdk(self) -> Any:
        """An SDK client of this workspace's running server, in this process: what the tests poll
        through (a CLI process per poll costs a second of CPU; the CLI itself is tested by the
        commands that change things). None when no server answers: the caller runs the CLI, which
        starts one with this workspace's environment."""
        from cible.client.http import WorkspaceClient
        from cible.client.local import running_server
        from cible.sdk.client import ComputeOperations
        from cible.sdk.jobs import JobOperations
        from cible.workspace import WorkspacePaths

        info = running_server(WorkspacePaths(self.home))
        if info is None:
            return None
        server = f"{info.get('pid')} {info['url']}"
        if self._sdk is None or self._sdk[0] != server:  # a server restarted since: a new client
            if self._sdk is not None:
                self._sdk[1].client.close()
            client = WorkspaceClient(info["url"], WorkspacePaths(self.home).token_file.read_text().strip())
            client._http.headers["X-Cible-User"] = self.env.get("CIBLE_USER") or getpass.getuser()  # as the CLI's
            self._sdk = (server, SimpleNamespace(client=client, jobs=JobOperations(client),
                                                 compute=ComputeOperations(client)))
        return self._sdk[1]

    def _read(self, read: Any, *cli: str) -> Any:
        """`read(sdk)` through the running server as the CLI's `-o json` prints it; the CLI when none
        answers (it starts one)."""
        from cible.core.errors import ServerUnavailableError

        sdk = self.sdk()
        try:
            if sdk is not None:
                return json.loads(json.dumps(read(sdk), default=str))
        except ServerUnavailableError:
            pass
        return self.json(*cli)

    def job(self, name: str) -> dict[str, Any]:
        return self._read(lambda sdk: sdk.jobs.get(name), "job", "show", "-n", name)

    def wait_status(self, name: str, statuses: set[str] | str = frozenset(TERMINAL), timeout: float = 60.0) -> dict[str, Any]:
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)

        def check() -> dict[str, Any] | None:
            job = self.job(name)
            return job if job["status"] in wanted else None

        return wait_until(check, timeout, interval=0.2, message=f"job {name} to be {sorted(wanted)}")

    def run_log(self, name: str) -> str:
        """The job's std_log.txt as the server keeps it (empty until it exists)."""
        path = self.home / "runs" / name / "artifacts" / "user_logs" / "std_log.txt"
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def downloaded_log(self, name: str, dest: Path) -> str:
        """The job's std_log.txt fetched with `cible job download --all`."""
        self.cible("job", "download", "-n", name, "--all", "-p", dest)
        log = dest / "artifacts" / "user_logs" / "std_log.txt"
        assert log.is_file(), f"no artifacts/user_logs/std_log.txt after download; got {sorted(files_in(dest))}"
        return log.read_text(errors="replace")

    def server_info(self) -> dict[str, Any]:
        return self.json("server", "status")

    def stop(self) -> None:
        if self._sdk is not None:
            self._sdk[1].client.close()
            self._sdk = None
        try:
            self.cible("server", "stop", check=False, timeout=60)
        except subprocess.TimeoutExpired:
            pass
        kill_nodes(self.home)

    def agent_pid(self, node_id: str) -> int:
        return json.loads((self.home / "nodes" / node_id / "agent.json").read_text())["pid"]

    def nodes(self, compute: str) -> list[dict[str, Any]]:
        return self._read(lambda sdk: sdk.compute.list_nodes(compute), "compute", "list-nodes", "-n", compute)

    def wait_nodes(self, compute: str, check, timeout: float = 60.0, message: str = "") -> list[dict[str, Any]]:  # noqa: ANN001
        """Poll list-nodes until check(states) holds, where states is the sorted list of node_state."""
        def done() -> tuple[list[dict[str, Any]]] | None:
            nodes = self.nodes(compute)
            return (nodes,) if check(sorted(n["node_state"] for n in nodes)) else None  # truthy when empty

        return wait_until(done, timeout, interval=0.2, message=message or f"the nodes of {compute}")[0]


def files_in(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def write_yaml(folder: Path, name: str, text: str) -> Path:
    import textwrap

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


