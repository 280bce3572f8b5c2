"""How cible reaches a Slurm compute as one of its users: where its Slurm commands run (this machine,
or the login host over SSH as that user), what a failed login or a controller that does not answer
means (the job waits, saying why), the user's folder on the cluster, and the one round trip that
writes a token and a script there and submits it. Shared by the job runner and the node provider."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from cible.backends.base.contract import EngineUnavailable
from cible.backends.slurm import commands
from cible.backends.slurm.exec import COMMAND_TIMEOUT_S, Done, LocalExec, SlurmExec, SshExec
from cible.backends.ssh.bundle import Bundle
from cible.backends.ssh.connect import RemoteHostError, SshTarget
from cible.backends.ssh.hosts import quote_path
from cible.core.models.computes import CibleSlurmSettings, SlurmCompute

AGENT_DIR = "~/.cible-agent"


@dataclass(frozen=True)
class SlurmAccess:
    """How to reach a Slurm compute as one of its users: its spec, the SSH login (None: this
    machine's commands) and the cible user it is for."""

    compute: SlurmCompute
    target: SshTarget | None
    owner: str = ""


# What Slurm's commands print when its controller cannot be reached (a restart, a failover): not a
# refusal of the job, a wait.
CONTROLLER_DOWN = ("Unable to contact slurm controller", "Socket timed out", "Slurm backup controller in standby mode")


def unreachable(done: Done, where: str) -> None:
    """Raise EngineUnavailable when a failed command says Slurm's controller cannot be reached."""
    if any(text in done.stderr for text in CONTROLLER_DOWN):
        raise EngineUnavailable(f"Slurm's controller does not answer {where}: {done.stderr.strip()[-300:]}")


class Reachable:
    """A SlurmExec whose connection failures (a login host that does not answer, refuses the key or
    offers another host key) are EngineUnavailable: the job waits, saying why, and is tried again."""

    def __init__(self, inner: SlurmExec) -> None:
        self.inner = inner
        self.where = inner.where

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT_S) -> Done:
        try:
            return self.inner.run(command, stdin=stdin, timeout=timeout)
        except RemoteHostError as exc:
            raise _waits_or_fails(exc) from None

    def ensure_bundle(self, bundle: Bundle, agent_dir: str) -> str:
        try:
            return self.inner.ensure_bundle(bundle, agent_dir)
        except RemoteHostError as exc:
            raise _waits_or_fails(exc) from None

    def close(self) -> None:
        self.inner.close()


# Why a login can fail and work again later (a host down, a key or host key being replaced): the
# job waits. Anything else (a command that failed on the host: a full disk, a folder it cannot
# write) is the job's failure, with the reason.
PASSING = frozenset({"timeout", "refused", "dns", "auth", "host_key_changed", "host_key_mismatch", "ssh",
                     "unreachable", "key_file"})


def _waits_or_fails(exc: RemoteHostError) -> Exception:
    reason = (exc.details or {}).get("reason") if isinstance(exc.details, dict) else None
    return EngineUnavailable(f"cannot reach Slurm: {exc.message}") if reason in PASSING else exc


def open_exec(access: SlurmAccess) -> SlurmExec:
    """Where `access`'s Slurm commands run (this machine's, or the login host's as its user), the
    compute's environment exported, a login that fails read as EngineUnavailable."""
    env = access.compute.cible.environment if access.compute.cible else {}
    if access.target is None:
        return Reachable(LocalExec(env))
    return Reachable(SshExec(access.compute.name, access.target, env))


def token_and_submit(folder: str, script_name: str, environment: Mapping[str, str]) -> str:
    """The command that, in one round trip, writes the token (stdin's first line) and the script (the
    rest) to files of `folder` only the user reads, then submits the script: neither is ever on a
    command line."""
    return (f"umask 077 && mkdir -p {quote_path(folder)} && cd {quote_path(folder)} && "
            "IFS= read -r token && printf '%s\\n' \"$token\" > token && unset token && "
            f"cat > {script_name} && " + commands.submit_command(script_name, environment))


def user_folder(runner: SlurmExec, settings: CibleSlurmSettings | None) -> tuple[str, str]:
    """(the user on the cluster, the folder cible keeps its node code and runs in for them): the
    compute's agent_dir under their home (`~/…`), or a folder of their own under an absolute one."""
    user, home = who(runner)
    agent_dir = (settings.agent_dir if settings and settings.agent_dir else AGENT_DIR).rstrip("/")
    return user, f"{home}/{agent_dir[2:]}" if agent_dir.startswith("~/") else f"{agent_dir}/{user}"


def who(runner: SlurmExec) -> tuple[str, str]:
    """(the user, their home) on the login host, read past whatever a login script prints."""
    done = runner.run("printf 'cible-who %s %s\\n' \"$(id -un)\" \"$HOME\"")
    for line in done.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "cible-who" and parts[2].startswith("/"):
            return parts[1], parts[2]
    raise RuntimeError(f"{runner.where}: could not read the user's name and home (exit {done.status}): "
                       f"{(done.stderr or done.stdout).strip()[-300:]}")


def memory_mb(memory_gb: float) -> int:
    return max(1, math.floor(memory_gb * 1024))
