"""One attached host as the `ssh` node provider holds it: a pinned SSH connection kept open (with
keepalives), the node-side bundle installed in a folder cible owns there, and the way its agents
reach the server (directly, or through a port forwarded back over SSH: by the system's ssh in a
process of its own, tunnel.py, or over that connection when the server's machine has no ssh client)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported where used (see connect.py)
    import asyncssh

from cible.backends.ssh.bundle import Bundle
from cible.backends.ssh.connect import CONNECT_TIMEOUT_S, RemoteHostError, SshTarget, connect
from cible.backends.ssh.tunnel import SshTunnel, openssh_client

log = logging.getLogger(__name__)
COMMAND_TIMEOUT_S = 60.0  # a remote step (unpacking the bundle, starting an agent) that takes longer failed
Tunnel = Literal["auto", "always", "never"]


def tunnel_client() -> str:
    """What carries the tunnel: `openssh` (default; the system's ssh in a process of its own, see
    tunnel.py) or `asyncssh` (over the session's connection, inside the server process: the way
    when the server's machine has no ssh client, or CIBLE_SSH_TUNNEL=asyncssh)."""
    if os.environ.get("CIBLE_SSH_TUNNEL", "openssh") == "asyncssh" or openssh_client() is None:
        return "asyncssh"
    return "openssh"


@dataclass(frozen=True)
class ServerTool:
    """A binary of the server's to send to hosts of the same OS and architecture (uv)."""

    path: str
    sha: str
    system: str
    machine: str

    def read(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()


def server_uv() -> ServerTool | None:
    """The server's own uv (the `uv` package's binary), or None when it has none."""
    import hashlib
    import platform

    try:
        import uv
        path = uv.find_uv_bin()
        with open(path, "rb") as fh:
            sha = hashlib.sha256(fh.read()).hexdigest()[:16]
    except (ImportError, OSError, FileNotFoundError):
        return None
    return ServerTool(path=str(path), sha=sha, system=platform.system(), machine=platform.machine())


@dataclass(frozen=True)
class AttachedHost:
    """An attached machine, as the server's store describes it (the provider imports no server code)."""

    name: str  # the virtualmachine compute's name
    target: SshTarget
    python: str = "python3"
    agent_dir: str = "~/.cible-agent"  # the one folder cible writes on the host
    tunnel: Tunnel = "auto"
    address: str | None = None  # where other nodes reach it (MASTER_ADDR); default: the SSH host
    facts: dict[str, Any] = field(default_factory=dict)

    def remote_root(self, node_id: str) -> str:
        return f"{self.agent_dir}/nodes/{node_id}"


def _read_port(path: Path | None) -> int | None:
    try:
        return int(path.read_text().strip()) if path is not None else None
    except (OSError, ValueError):
        return None


def _loopback(host: str) -> bool:
    """A loopback address or name: a machine attached at one is this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def quote_path(path: str) -> str:
    """A remote path for the shell, `~/` kept outside the quotes so that it still expands."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class HostSession:
    """The provider's connection to one host. Every method raises RemoteHostError with the reason."""

    def __init__(self, host: AttachedHost, port_file: Path | None = None) -> None:
        self.host = host
        self.conn: asyncssh.SSHClientConnection | None = None
        self.listener: asyncssh.SSHListener | None = None  # the tunnel, when asyncssh carries it
        self.tunnel: SshTunnel | None = None  # the tunnel, when the system's ssh carries it
        # The tunnel's port on the host, asked for again after a reconnect or a server restart: the
        # URL a running job was given (MLflow's) then still reaches the server.
        self.port_file = port_file
        self.forwarded_port: int | None = _read_port(port_file)
        self.bundle_sha: str | None = None
        self.url: str | None = None  # the server's URL as this host's agents reach it, on this connection
        self.told: dict[str, str] = {}  # node root -> the URL its server_url file holds (on this connection)
        self.lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return self.host.target.where

    async def connection(self) -> asyncssh.SSHClientConnection:
        """The open connection, made again when it was lost."""
        if self.conn is not None and not self.conn.is_closed():
            return self.conn
        self._drop()
        self.conn = await connect(self.host.target)
        return self.conn

    async def run(self, command: str, *, stdin: bytes | str | None = None, timeout: float = COMMAND_TIMEOUT_S,
                  what: str = "a command") -> asyncssh.SSHCompletedProcess:
        import asyncssh

        conn = await self.connection()
        try:
            return await asyncio.wait_for(conn.run(command, input=stdin, check=False,
                                                   encoding=None if isinstance(stdin, bytes) else "utf-8"),
                                          timeout)
        except asyncio.TimeoutError:
            self._drop()  # a host that stopped answering mid-command: the next call reconnects
            raise RemoteHostError(f"{self.where}: {what} got no answer within {timeout:g} s",
                                  details={"host": self.host.target.host, "reason": "timeout"}) from None
        except (asyncssh.Error, OSError) as exc:
            self._drop()
            raise RemoteHostError(f"{self.where}: the SSH connection broke during {what}: {exc}",
                                  details={"host": self.host.target.host, "reason": "ssh"}) from None

    async def check(self, command: str, *, what: str, stdin: bytes | str | None = None,
                    timeout: float = COMMAND_TIMEOUT_S) -> str:
        """stdout of `command`, or a RemoteHostError with its stderr when it exits non-zero."""
        result = await self.run(command, stdin=stdin, timeout=timeout, what=what)
        out, err = result.stdout or "", result.stderr or ""
        if isinstance(out, bytes):
            out, err = out.decode(errors="replace"), err.decode(errors="replace")
        if result.exit_status != 0:
            raise RemoteHostError(f"{self.where}: {what} failed (exit {result.exit_status}): "
                                  f"{err.strip()[-500:] or out.strip()[-500:]}",
                                  details={"host": self.host.target.host, "reason": "remote_command"})
        return out

    async def ensure_bundle(self, bundle: Bundle) -> str:
        """The folder on the host holding this bundle's `cible` package: unpacked once per content
        hash (into a temporary folder, then renamed, so a half-unpacked bundle is never used)."""
        folder = f"{self.host.agent_dir}/bundles/{bundle.sha}"
        if self.bundle_sha == bundle.sha:
            return folder
        quoted, temporary = quote_path(folder), quote_path(f"{folder}.part-{secrets.token_hex(4)}")
        script = (f"set -e; umask 077; if [ ! -d {quoted}/cible ]; then mkdir -p {temporary}; tar -xzf - -C {temporary}; "
                  f"mv -T {temporary} {quoted} 2>/dev/null || rm -rf {temporary}; fi")
        await self.check(f"sh -c {shlex.quote(script)}", stdin=bundle.tar_bytes(), what="unpacking cible's node code")
        self.bundle_sha = bundle.sha
        return folder

    async def ensure_uv(self, uv: ServerTool | None) -> str | None:
        """A folder on the host holding the server's `uv` (environments are built with it), sent once
        per content hash, when the host's OS and architecture are the server's; None otherwise (a
        `uv` on the host's PATH is then used, if any)."""
        facts = self.host.facts
        if uv is None or (facts.get("system"), facts.get("machine")) != (uv.system, uv.machine):
            return None
        folder = f"{self.host.agent_dir}/tools/uv-{uv.sha}"
        quoted, temporary = quote_path(folder), quote_path(f"{folder}.part-{secrets.token_hex(4)}")
        script = (f"set -e; umask 077; if [ ! -x {quoted}/uv ]; then mkdir -p {temporary}; cat > {temporary}/uv; "
                  f"chmod 755 {temporary}/uv; mv -T {temporary} {quoted} 2>/dev/null || rm -rf {temporary}; fi")
        probe = await self.run(f"test -x {quoted}/uv", what="looking for uv")
        if probe.exit_status != 0:
            await self.check(f"sh -c {shlex.quote(script)}", stdin=uv.read(), what="sending uv",
                             timeout=COMMAND_TIMEOUT_S * 2)
        return folder

    async def agent_url(self, server_url: str) -> str:
        """The server's URL as this host's agents reach it: the server's own when the host can connect
        to it (tunnel auto/never), else a port on the host forwarded back to the server over SSH."""
        tunnel_up = self.tunnel is None or self.tunnel.alive()  # a dead ssh tunnel is made again (same port)
        if self.url is not None and self.conn is not None and not self.conn.is_closed() and tunnel_up:
            return self.url
        self.url = await self._agent_url(server_url)
        return self.url

    async def tell(self, roots: list[str], server_url: str) -> None:
        """Make each node root's `server_url` file say where its agent reaches the server now: after a
        reconnect the tunnel's port (or the server's, after a restart) may have changed, and the
        agents read the file again when a call fails."""
        url = await self.agent_url(server_url)
        stale = [root for root in roots if self.told.get(root) != url]
        if not stale:
            return
        script = "umask 077; " + "; ".join(f"printf '%s\\n' {shlex.quote(url)} > {quote_path(root + '/server_url')}.tmp && "
                           f"mv {quote_path(root + '/server_url')}.tmp {quote_path(root + '/server_url')}"
                           for root in stale)
        await self.check(f"sh -c {shlex.quote(script)}", what="telling its agents where the server is")
        self.told.update(dict.fromkeys(stale, url))

    async def _agent_url(self, server_url: str) -> str:
        parts = urlsplit(server_url)
        server_host, server_port = parts.hostname or "127.0.0.1", parts.port or 80
        if self.host.tunnel == "auto" and await self._reaches(server_host, server_port, parts.scheme):
            return server_url
        if self.host.tunnel == "never":
            if await self._can_connect(server_host, server_port):
                return server_url
            raise RemoteHostError(f"{self.where} cannot connect to the server at {server_url} and its tunnel is "
                                  "off (cible.tunnel: never); allow the connection or set cible.tunnel: auto",
                                  details={"host": self.host.target.host, "reason": "unreachable_server"})
        if tunnel_client() == "openssh":
            await self._openssh_tunnel(server_host, server_port)
        else:
            await self._asyncssh_tunnel(server_host, server_port)
        return f"{parts.scheme}://127.0.0.1:{self.forwarded_port}"

    async def _openssh_tunnel(self, server_host: str, server_port: int) -> None:
        if self.tunnel is None:
            known_hosts = self.port_file.with_suffix(".known_hosts") if self.port_file is not None else None
            self.tunnel = SshTunnel(self.host.target, known_hosts)
        self._keep_port(await self.tunnel.open(self.forwarded_port, server_host, server_port))

    async def _asyncssh_tunnel(self, server_host: str, server_port: int) -> None:
        import asyncssh

        conn = await self.connection()
        if self.listener is None:
            try:
                self.listener = await asyncio.wait_for(conn.forward_remote_port(
                    "127.0.0.1", self.forwarded_port or 0, server_host, server_port), CONNECT_TIMEOUT_S)
            except asyncssh.ChannelListenError:  # the port asked for again is taken: any other one
                self.listener = await asyncio.wait_for(conn.forward_remote_port(
                    "127.0.0.1", 0, server_host, server_port), CONNECT_TIMEOUT_S)
            except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
                self._drop()
                raise RemoteHostError(f"{self.where}: the tunnel to the server could not be made: {exc}",
                                      details={"host": self.host.target.host, "reason": "ssh"}) from None
            self._keep_port(self.listener.get_port())

    def _keep_port(self, port: int) -> None:
        self.forwarded_port = port
        if self.port_file is not None and _read_port(self.port_file) != port:
            self.port_file.parent.mkdir(parents=True, exist_ok=True)
            self.port_file.write_text(f"{port}\n")

    async def _reaches(self, host: str, port: int, scheme: str = "http") -> bool:
        same_machine = _loopback(self.host.target.host)  # attached at a loopback address: this machine
        if _loopback(host) and not same_machine:
            return False  # the server listens on its own loopback: another machine cannot reach it
        if scheme != "https" and not same_machine:
            return False  # never tokens and job files in clear over a network: the SSH tunnel carries them
        return await self._can_connect(host, port)

    async def _can_connect(self, host: str, port: int) -> bool:
        probe = f"import socket; socket.create_connection(({host!r}, {port}), 3).close()"
        result = await self.run(f"{shlex.quote(self.host.python)} -c {shlex.quote(probe)}",
                                what="testing the way to the server", timeout=CONNECT_TIMEOUT_S)
        return result.exit_status == 0

    def close(self) -> None:
        """The session ends (the server stops, the host is detached or re-pinned): its tunnel too."""
        self._drop()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel.remove_files()
            self.tunnel = None

    def _drop(self) -> None:
        """The connection is lost or unusable: the next call reconnects. A tunnel of the system's ssh
        is left running (a file a job is fetching through it goes on); it ends by itself when the
        host is gone (keepalives) and is made again then."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.url = None
        self.told = {}
        self.bundle_sha = None  # checked again on the next connection (the host may have been cleaned)
