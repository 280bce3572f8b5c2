"""Runs launchers as detached processes on this machine (the `local` compute, and each
cluster node's agent).

Each launcher runs in its own session, so it outlives a server killed with -9;
the restarted server finds it again through the handle file in the run dir.
A launcher fork server is kept started and imported (`python -m cible.launch
--fork-server`), so a job's dispatch costs a pipe write and a fork instead of a
Python start; should it be gone, a launcher is started the plain way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.core.lifecycle.runs import RunObservation
from cible.core.safepaths import under
from cible.launch.state import WAKE_FD_ENV
from cible.launch.tracking import with_run_token
from cible.node import proc as processes
from cible.runfiles import CANCEL_FILE, HANDLE_FILE, PLAN_FILE, read_state, write_json_atomic

log = logging.getLogger("cible.runner")


class LocalProcessRunner:
    name = "local"

    def __init__(self, runs_root: Path, python: str | None = None, fork_server: bool = True,
                 preexec_fn: Callable[[], None] | None = None, on_spawn: Callable[[int], None] | None = None,
                 run_token: Callable[[dict[str, Any]], str] | None = None, wake_fd: int | None = None) -> None:
        self.runs_root = runs_root
        # The write end of a pipe each launcher writes a byte to when its state changes (an agent's
        # watcher waits on the read end: cible.launch.state).
        self.wake_fd = wake_fd
        # The server's runner hands each launcher its job's run token (an agent's plans carry theirs).
        self.run_token = run_token
        self.python = python or sys.executable
        self.use_fork_server = fork_server
        # A node agent holds its launchers to the node's size: preexec_fn joins the node's
        # group before exec, on_spawn(pid) registers the process with the limits' watchdog.
        self.preexec_fn = preexec_fn
        self.on_spawn = on_spawn
        self._server: subprocess.Popen | None = None  # the launcher fork server
        self._joined = threading.Event()  # the fork server is under the limits it should be (see adopt)
        self._joined.set()
        self._children: dict[int, subprocess.Popen] = {}  # reaped in poll(), so no zombies pile up

    def _spawn(self, args: list[str], stdin, stdout) -> subprocess.Popen:  # noqa: ANN001
        wake = {} if self.wake_fd is None else {"pass_fds": (self.wake_fd,),
                                                 "env": {**os.environ, WAKE_FD_ENV: str(self.wake_fd)}}
        proc = subprocess.Popen(
            [self.python, "-m", "cible.launch", *args], stdin=stdin, stdout=stdout,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, preexec_fn=self.preexec_fn, **wake,
        )
        if self.on_spawn is not None:
            self.on_spawn(proc.pid)
        return proc

    def prepare(self) -> None:
        """Have the launcher fork server ready for the next job."""
        if self.use_fork_server and (self._server is None or self._server.poll() is not None):
            self._server = self._spawn(["--fork-server"], subprocess.PIPE, subprocess.PIPE)

    def adopt(self, runs_root: Path, preexec_fn: Callable[[], None], on_spawn: Callable[[int], None]) -> None:
        """Hold a runner made before its node was known (a warm agent's, see cible.agent.warm) to that
        node: its runs go under `runs_root` and its launchers under the node's limits from now on.
        The fork server already started joins them (`on_spawn`), and so do the launchers it forks:
        in the background, as moving a process between cgroups (v1) waits for the kernel (~10 ms),
        and the node's first heartbeat need not wait; the first fork waits for it instead."""
        self.runs_root, self.preexec_fn, self.on_spawn = runs_root, preexec_fn, on_spawn
        server = self._server
        if server is not None and server.poll() is None:
            self._joined.clear()
            threading.Thread(target=self._join, args=(server, on_spawn), name="fork-server-joins", daemon=True).start()

    def _join(self, server: subprocess.Popen, on_spawn: Callable[[int], None]) -> None:
        try:
            on_spawn(server.pid)
        except Exception:  # not under the node's limits: no launcher may come from it
            log.exception("the launchers' fork server could not be put under the node's limits; it is stopped")
            self._server = None
            server.kill()
            server.wait(timeout=10)
            self.prepare()  # a new one, started under them
        finally:
            self._joined.set()

    def close(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.stdin.close()  # EOF: the server exits; the launchers it forked go on
            self._server.wait(timeout=10)
        self._server = None

    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        run_dir = under(self.runs_root, job_name, field="name")
        existing = self._existing_handle(run_dir)
        if existing:  # idempotent: a restarted server never launches a job twice
            return existing
        (run_dir / "artifacts" / "system_logs").mkdir(parents=True, exist_ok=True)
        if self.run_token is not None:
            plan = with_run_token(plan, self.run_token(plan))
        write_json_atomic(run_dir / PLAN_FILE, plan, private=True)  # it carries the job's run token
        pid = self._fork(run_dir)
        if pid is None:
            with open(run_dir / "artifacts" / "system_logs" / "launcher_stdio.txt", "ab") as out:
                proc = self._spawn([str(run_dir)], subprocess.DEVNULL, out)
            self._reap()
            self._children[proc.pid] = proc
            pid = proc.pid
            self.prepare()  # a fork server that died is replaced for the next job
        handle = {"runner": self.name, "run_dir": str(run_dir), "pid": pid, "create_time": processes.create_time(pid)}
        write_json_atomic(run_dir / HANDLE_FILE, handle)
        return handle

    def _fork(self, run_dir: Path) -> int | None:
        """Have the fork server start the launcher of `run_dir`; its pid, or None without a server."""
        self._joined.wait()
        server = self._server
        if server is None or server.poll() is not None:
            return None
        try:
            server.stdin.write(f"{run_dir}\n".encode())
            server.stdin.flush()
            return int(server.stdout.readline())
        except (BrokenPipeError, OSError, ValueError):  # it died: the plain way, and a new server
            self._server = None
            return None

    def _existing_handle(self, run_dir: Path) -> dict[str, Any] | None:
        try:
            return json.loads((run_dir / HANDLE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _reap(self) -> None:
        """Collect every launcher that has exited, finished job or not, so none stays a zombie."""
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def poll(self, handle: dict[str, Any]) -> RunObservation:
        run_dir = Path(handle["run_dir"])
        self._reap()
        # Read the state after checking liveness: a launcher that ended cleanly
        # wrote its last status before exiting, so we never miss it.
        alive = _is_alive(handle)
        state = read_state(run_dir) or {}
        return RunObservation(
            history=[h["status"] for h in state.get("history", [])],
            error=state.get("error"),
            exit_code=state.get("exit_code"),
            alive=alive,
        )

    def cancel(self, handle: dict[str, Any]) -> None:
        run_dir = Path(handle["run_dir"])
        (run_dir / CANCEL_FILE).touch()
        if _is_alive(handle):
            try:
                os.kill(handle["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass

    def log_path(self, handle: dict[str, Any]) -> Path | None:
        return Path(handle["run_dir"]) / "artifacts" / "user_logs" / "std_log.txt"


def _is_alive(handle: dict[str, Any]) -> bool:
    """True when the handle's process still runs (and is not a reused pid)."""
    return processes.alive(handle["pid"], handle.get("create_time") or None)
