"""The tunnel from an attached host back to the server, run by the system's OpenSSH client
(`ssh -N -R 127.0.0.1:PORT:SERVER`) in a process of its own.

Why not asyncssh's forward over the provider's connection: that runs the tunnel's packets and
crypto in Python inside the server process, where they share the GIL with uvicorn serving the same
bytes; staging a 200 MB input then ran at ~0.5x of scp, against ~1.05x without a tunnel (measured by
bench/attached.py, the server process at one full core). OpenSSH's client does it in C, on another core.

What it keeps of connect.py's rules: the pinned host key alone is trusted (a known_hosts file
holding just that line, StrictHostKeyChecking=yes), the compute's key file or the server's
ssh-agent, no ~/.ssh/config, the same ciphers and keepalives. The process dies with the thread
that started it (PR_SET_PDEATHSIG: a server killed -9 leaves no tunnel behind), is killed by
`close()`, and is started again by the host session when it is found dead.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from cible.backends.ssh.connect import CIPHERS, CONNECT_TIMEOUT_S, KEEPALIVE_S, RemoteHostError, SshTarget, _changed_key

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
ALIAS = "cible-pinned"  # the name the pinned key is filed under: no [host]:port forms to get right
_ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward")
_SUCCESS = re.compile(r"remote forward success for: listen [^\s]*:(\d+),")


class PortTaken(Exception):
    """The port asked for on the host is held by something else."""


def openssh_client() -> str | None:
    """The system's `ssh`, or None (the host session then forwards over its asyncssh connection)."""
    return shutil.which("ssh")


def _die_with_parent() -> Callable[[], None]:
    """A preexec_fn making the child get SIGTERM when the thread that forked it ends, the server
    killed -9 included; libc is loaded here, before the fork."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal would come
            os._exit(1)
    return preexec


class _Watch(asyncio.SubprocessProtocol):
    """Reads the ssh process's stderr as it comes (a full pipe would stall it) and settles `ready`
    with the port, PortTaken or the RemoteHostError saying why it ended before forwarding."""

    def __init__(self, tunnel: SshTunnel, port: int) -> None:
        self.tunnel, self.port = tunnel, port
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, even when no one waits now
        self.tail: collections.deque[str] = collections.deque(maxlen=20)  # its last words, for errors
        self.ended = False
        self._partial = b""
        self._transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-4096:]
        for raw in lines:
            self._line(raw.decode(errors="replace").rstrip())

    def _line(self, line: str) -> None:
        if line and not line.startswith("debug"):
            self.tail.append(line)
        if self.ready.done():
            return
        if found := _ALLOCATED.search(line):
            self.ready.set_result(int(found[1]))
        elif self.port and (found := _SUCCESS.search(line)) and int(found[1]) == self.port:
            self.ready.set_result(self.port)
        elif "remote port forwarding failed" in line:
            self.ready.set_exception(PortTaken())

    def connection_lost(self, exc: Exception | None) -> None:
        """The process has exited and its stderr is read to the end."""
        self.ended = True
        code = self._transport.get_returncode() if self._transport is not None else None
        if not self.ready.done():
            asyncio.ensure_future(self._fail(code))
        elif self.tunnel.watch is self:
            log.warning("%s: the tunnel's ssh exited (%s): %s; made again at the next use", self.tunnel.target.where,
                        code, " | ".join(self.tail)[-300:])

    async def _fail(self, code: int | None) -> None:
        said = " | ".join(self.tail)[-500:]
        target = self.tunnel.target
        if "Host key verification failed" in said or "IDENTIFICATION HAS CHANGED" in said:
            error = await _changed_key(target, CONNECT_TIMEOUT_S)
        else:
            reason = ("auth" if "Permission denied" in said else "refused" if "refused" in said
                      else "timeout" if "timed out" in said else "ssh")
            error = RemoteHostError(f"{target.where}: the tunnel to the server could not be made (ssh exit {code}): "
                                    f"{said or 'no word from ssh'}", details=_details(target, reason))
        if not self.ready.done():
            self.ready.set_exception(error)


def _algorithms(host_key: str) -> str:
    """The host key algorithms that verify with the pinned key: an RSA key signs with SHA-2 today."""
    kind = host_key.split()[0]
    return "rsa-sha2-512,rsa-sha2-256,ssh-rsa" if kind == "ssh-rsa" else kind


def _details(target: SshTarget, reason: str) -> dict[str, object]:
    return {"host": target.host, "port": target.port, "reason": reason}


class SshTunnel:
    """One `ssh -N -R` process for one host. `open` (re)starts it and says the port on the host.
    Used from one event loop (the host session's)."""

    def __init__(self, target: SshTarget, known_hosts: Path | None = None) -> None:
        self.target = target
        self._known_hosts = known_hosts
        self._own_dir: str | None = None  # a temporary folder for the known_hosts file, when none was given
        self.transport: asyncio.SubprocessTransport | None = None
        self.watch: _Watch | None = None
        self.port: int | None = None
        self.lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self.transport.get_pid() if self.transport is not None else None

    def alive(self) -> bool:
        return self.watch is not None and not self.watch.ended and self.transport is not None \
            and self.transport.get_returncode() is None

    async def open(self, port: int | None, server_host: str, server_port: int) -> int:
        """The port on the host forwarded to server_host:server_port: `port` again when it is free
        (the URL running jobs were given still works), else any. Started again when it died."""
        async with self.lock:
            if self.alive() and self.port is not None:
                return self.port
            self.close()
            if port:
                try:
                    return await self._start(port, server_host, server_port)
                except PortTaken:
                    log.info("%s: port %d is taken on the host; the tunnel takes another", self.target.where, port)
            return await self._start(0, server_host, server_port)

    def _known_hosts_file(self) -> Path:
        if self._known_hosts is None:
            self._own_dir = self._own_dir or tempfile.mkdtemp(prefix="cible-tunnel-")
            self._known_hosts = Path(self._own_dir) / "known_hosts"
        self._known_hosts.parent.mkdir(parents=True, exist_ok=True)
        self._known_hosts.write_text(f"{ALIAS} {self.target.host_key}\n")  # rewritten at each start: the pin of now
        return self._known_hosts

    def argv(self, port: int, server_host: str, server_port: int) -> list[str]:
        target = self.target
        if not target.host_key:  # never connect unverified
            raise ValueError(f"{target.where}: no pinned host key")
        options = {
            "BatchMode": "yes", "ExitOnForwardFailure": "yes", "StrictHostKeyChecking": "yes",
            "UserKnownHostsFile": str(self._known_hosts_file()), "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": ALIAS, "CheckHostIP": "no", "UpdateHostKeys": "no",
            "HostKeyAlgorithms": _algorithms(target.host_key),  # the pinned key's type alone is negotiated
            "ConnectTimeout": str(max(1, round(CONNECT_TIMEOUT_S))), "ServerAliveInterval": str(round(KEEPALIVE_S)),
            "ServerAliveCountMax": "3", "Ciphers": ",".join(CIPHERS), "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no", "GSSAPIAuthentication": "no", "ControlMaster": "no",
            "ControlPath": "none", "PermitLocalCommand": "no",
            # DEBUG1: the only level at which a forward asked on a fixed port says it succeeded.
            "LogLevel": "DEBUG1",
        }
        if target.key_file is not None:  # the compute's key alone; else the server's ssh-agent (SSH_AUTH_SOCK)
            options.update(IdentitiesOnly="yes", IdentityAgent="none")
        argv = [openssh_client() or "ssh", "-N", "-T", "-F", "/dev/null", "-p", str(target.port),
                "-l", target.username]
        if target.key_file is not None:
            argv += ["-i", target.key_file]  # a path, never the key itself
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return [*argv, "-R", f"127.0.0.1:{port}:{server_host}:{server_port}", "--", target.host]

    async def _start(self, port: int, server_host: str, server_port: int) -> int:
        argv = self.argv(port, server_host, server_port)
        loop = asyncio.get_running_loop()
        self.transport, self.watch = await loop.subprocess_exec(
            lambda: _Watch(self, port), *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent())
        limit = CONNECT_TIMEOUT_S * 2 + 5  # the login, then the forward's answer
        try:
            self.port = await asyncio.wait_for(asyncio.shield(self.watch.ready), limit)
        except asyncio.TimeoutError:
            self.close()
            raise RemoteHostError(f"{self.target.where}: the tunnel to the server was not made within {limit:g} s",
                                  details=_details(self.target, "timeout")) from None
        except (PortTaken, RemoteHostError):
            self.close()
            raise
        log.info("%s: tunnel to the server on its port %d (ssh pid %s)", self.target.where, self.port, self.pid)
        return self.port

    def close(self) -> None:
        """End the process: SIGTERM (ssh ends its session at once), then the transport closed (SIGKILL if
        it still runs, its pipe closed), so that nothing of it is left to a loop that may stop next."""
        transport, self.transport, self.watch, self.port = self.transport, None, None, None
        if transport is None:
            return
        if transport.get_returncode() is None:
            try:
                transport.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        transport.close()

    def remove_files(self) -> None:
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = self._known_hosts = None
