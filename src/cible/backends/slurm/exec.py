"""Where cible's Slurm commands run: this machine (`LocalExec`, the server on a login node) or the
login host over SSH as one user (`SshExec`, through the one SSH connect, host key pinned). Both
run a shell command line with bytes on its stdin and give back (exit status, stdout, stderr), so
what the runner does (unpack the node code, write a run's files, sbatch, squeue, scancel) is
written once. A command that does not end within its timeout raises RemoteHostError with a
reason; a command that ends non-zero is the caller's to read.

`environment` (the compute's `cible.environment`: SLURM_CONF…) is exported before every command,
not through SSH's environment passing, which most sshd configurations refuse.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cible.backends.ssh.bundle import Bundle
from cible.backends.ssh.connect import RemoteHostError, SshTarget
from cible.backends.ssh.hosts import AttachedHost, HostSession, quote_path

log = logging.getLogger("cible.server")
COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Done:
    status: int
    stdout: str
    stderr: str


class SlurmExec(Protocol):
    where: str  # for messages: "the login host u@h:22", "this machine"

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> Done: ...

    def ensure_bundle(self, bundle: Bundle, agent_dir: str) -> str: ...

    def close(self) -> None: ...


def with_env(command: str, environment: Mapping[str, str]) -> str:
    if not environment:
        return command
    return "".join(f"export {k}={shlex.quote(v)}; " for k, v in sorted(environment.items())) + command


def unpack_bundle_command(bundle: Bundle, agent_dir: str) -> tuple[str, str]:
    """(the shell command that unpacks `bundle` under `agent_dir` once per content hash, the folder)."""
    folder = f"{agent_dir}/bundles/{bundle.sha}"
    quoted = quote_path(folder)
    temporary = quote_path(f"{folder}.part-") + '"$$"'  # this shell's pid: two unpacks never share a folder
    script = (f"set -e; umask 022; if [ ! -d {quoted}/cible ]; then mkdir -p {temporary}; tar -xzf - -C {temporary}; "
              f"mv -T {temporary} {quoted} 2>/dev/null || rm -rf {temporary}; fi; cd {quoted} && pwd")
    return f"sh -c {shlex.quote(script)}", folder


class LocalExec:
    """The Slurm commands of the server's own machine, as the server's user."""

    where = "this machine"

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        self.environment = dict(environment or {})
        self._bundles: dict[str, str] = {}

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> Done:
        try:
            done = subprocess.run(["sh", "-c", with_env(command, self.environment)], input=stdin or b"",
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RemoteHostError(f"{self.where}: `{command[:80]}` got no answer within {timeout:g} s",
                                  details={"reason": "timeout"}) from None
        return Done(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))

    def ensure_bundle(self, bundle: Bundle, agent_dir: str) -> str:
        return _ensure_bundle(self, self._bundles, bundle, agent_dir)

    def close(self) -> None:
        pass


class SshExec:
    """The login host's Slurm commands, as `target`'s user, over one kept connection (made again
    when lost). Its own event-loop thread: callers are the server's synchronous threads."""

    def __init__(self, name: str, target: SshTarget, environment: Mapping[str, str] | None = None) -> None:
        self.environment = dict(environment or {})
        self.session = HostSession(AttachedHost(name=name, target=target))
        self.where = f"the login host {target.where}"
        self._bundles: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"slurm-ssh-{name}", daemon=True)
        self._thread.start()

    def _wait(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout + 15)

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> Done:
        async def go() -> Done:
            async with self.session.lock:
                # Through sh: the user's login shell may be csh, where `export`, `$(…)` and `&&` fail.
                result = await self.session.run(f"sh -c {shlex.quote(with_env(command, self.environment))}",
                                                stdin=stdin or b"",
                                                timeout=timeout, what=f"`{command.split(' ', 1)[0]}`")
            out, err = result.stdout or b"", result.stderr or b""
            return Done(result.exit_status if result.exit_status is not None else 255,
                        out.decode(errors="replace"), err.decode(errors="replace"))
        return self._wait(go(), timeout)

    def ensure_bundle(self, bundle: Bundle, agent_dir: str) -> str:
        return _ensure_bundle(self, self._bundles, bundle, agent_dir)

    def close(self) -> None:
        async def shut() -> None:
            self.session.close()
        try:
            self._wait(shut(), 5)
        except Exception as exc:  # noqa: BLE001  (closing: nothing left to tell but the log)
            log.debug("%s: closing the SSH connection: %s", self.where, exc)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _ensure_bundle(runner: SlurmExec, known: dict[str, str], bundle: Bundle, agent_dir: str) -> str:
    """The absolute folder holding `bundle`'s `cible` package, unpacked once per content hash."""
    key = f"{agent_dir}\0{bundle.sha}"
    if key in known:
        return known[key]
    command, _ = unpack_bundle_command(bundle, agent_dir)
    done = runner.run(command, stdin=bundle.tar_bytes(), timeout=COMMAND_TIMEOUT_S * 2)
    folder = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.status != 0 or not folder.startswith("/"):
        raise RemoteHostError(f"{runner.where}: unpacking cible's node code under {agent_dir} failed "
                              f"(exit {done.status}): {done.stderr.strip()[-500:]}", details={"reason": "remote_command"})
    known[key] = folder
    return folder
