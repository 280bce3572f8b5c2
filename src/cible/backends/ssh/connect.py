"""The one way cible opens an SSH connection: with the key file the compute names (or the server's
ssh-agent), the host key pinned at attach, a timeout on every step, and every failure turned into
one sentence that names the host and says what to do.

Nothing here reads ~/.ssh/config or ~/.ssh/known_hosts: what a compute connects with is exactly
what its record says, on whichever machine the server runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cible.core.errors import InvalidRequestError

# asyncssh is imported where it is used: it costs ~15 MB and 0.2 s, which a workspace without SSH
# computes (and every workspace server's start) need not pay.
if TYPE_CHECKING:
    import asyncssh

CONNECT_TIMEOUT_S = float(os.environ.get("CIBLE_SSH_CONNECT_TIMEOUT", 10))
KEEPALIVE_S = 5.0
# AES-GCM first: CPUs do AES in hardware, so a tunnel carries files at ~1.6x the rate of asyncssh's
# default ChaCha20 (measured by bench/attached.py); the rest keep every host reachable.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr",
           "aes256-ctr")
WINDOW_BYTES = 8 << 20  # per channel: a file streamed through the tunnel is not held up by window updates


class RemoteHostError(InvalidRequestError):
    """An attached host that cannot be used as asked: unreachable, refusing the key, offering
    another host key than the pinned one, or lacking what cible needs. `details.reason` is one of
    REASONS, for whoever acts on it."""

    code = "RemoteHost"


REASONS = ("key_file", "dns", "refused", "timeout", "auth", "host_key_changed", "host_key_mismatch",
           "ssh", "no_python", "probe")


def _error(target: SshTarget, reason: str, message: str) -> RemoteHostError:
    return RemoteHostError(message, details={"host": target.host, "port": target.port, "reason": reason})


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to log in. `host_key` is the pinned public key (an OpenSSH line); None
    only while attaching, when the key offered is trusted on first use and then pinned."""

    host: str
    port: int
    username: str
    key_file: str | None = None  # a path on the server's machine; None: the server's ssh-agent
    host_key: str | None = None

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def fingerprint(key: asyncssh.SSHKey | str) -> str:
    """`SHA256:…`, as `ssh-keygen -lf` prints it."""
    import asyncssh
    if isinstance(key, str):
        key = asyncssh.import_public_key(key)
    return key.get_fingerprint("sha256")


def public_line(key: asyncssh.SSHKey) -> str:
    """The key as one OpenSSH line (`ssh-ed25519 AAAA…`), without a comment."""
    algorithm, data = key.export_public_key("openssh").decode().split()[:2]
    return f"{algorithm} {data}"


def read_client_key(target: SshTarget) -> asyncssh.SSHKey:
    """The private key the compute names, checked as ssh(1) checks it (read at each connect, never
    copied or stored): an absolute path on the
    server's machine, a regular file, not readable by group or others, no passphrase."""
    import asyncssh
    path = target.key_file or ""
    fix = (f"(the file lives on the workspace server's machine; `ssh -i <it> {target.username}@{target.host}` "
           "must work there)")
    if not os.path.isabs(path):
        raise _error(target, "key_file", f"ssh_private_key_file: '{path}' is not an absolute path {fix}")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _error(target, "key_file", f"ssh_private_key_file: cannot read {path}: {exc.strerror} {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(target, "key_file", f"ssh_private_key_file: {path} is not a file {fix}")
    if info.st_mode & 0o077:
        raise _error(target, "key_file", f"ssh_private_key_file: {path} can be read by other users (mode "
                                         f"{stat.S_IMODE(info.st_mode):o}); make it private: chmod 600 {path}")
    try:
        return asyncssh.read_private_key(path)
    except asyncssh.KeyImportError as exc:
        if "passphrase" in str(exc).lower():
            raise _error(target, "key_file", f"ssh_private_key_file: {path} is protected by a passphrase, which "
                                             "cible does not store; load the key into an ssh-agent of the server "
                                             "instead") from None
        raise _error(target, "key_file", f"ssh_private_key_file: {path} is not a private key ({exc})") from None
    except OSError as exc:
        raise _error(target, "key_file", f"ssh_private_key_file: cannot read {path}: {exc.strerror} {fix}") from None


def _options(target: SshTarget, timeout: float) -> dict:
    import asyncssh
    if target.key_file is not None:
        keys: dict = {"client_keys": [read_client_key(target)], "agent_path": None}
    else:
        keys = {"client_keys": None, "agent_path": os.environ.get("SSH_AUTH_SOCK")}
    if target.host_key is None:  # never connect unverified: first_host_key pins a key before any login
        raise ValueError(f"{target.where}: no pinned host key")
    trusted = ([asyncssh.import_public_key(target.host_key)], [], [])
    return {"port": target.port, "username": target.username, "known_hosts": trusted, "config": [],
            "connect_timeout": timeout, "login_timeout": timeout, "keepalive_interval": KEEPALIVE_S,
            "encryption_algs": list(CIPHERS), "window": WINDOW_BYTES, "max_pktsize": 256 << 10,
            "password": None, "kbdint_auth": False, "gss_auth": False, **keys}


async def connect(target: SshTarget, *, timeout: float | None = None) -> asyncssh.SSHClientConnection:
    """A logged-in connection to `target`, or a RemoteHostError saying why not."""
    import asyncssh
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    options = _options(target, timeout)
    try:
        return await asyncio.wait_for(asyncssh.connect(target.host, **options), timeout + 1)
    except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed):
        # KeyExchangeFailed: the host no longer has a key of the pinned key's type at all.
        raise await _changed_key(target, timeout) from None
    except asyncssh.PermissionDenied:
        raise _error(target, "auth", f"{target.where} refused the login: user '{target.username}' with "
                                     f"{target.key_file or 'the keys of the server’s ssh-agent'}; is its public key "
                                     f"in ~{target.username}/.ssh/authorized_keys on {target.host}?") from None
    except asyncssh.DisconnectError as exc:
        raise _error(target, "ssh", f"{target.where} closed the SSH connection: {exc.reason}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise _unreachable(target, target.where, exc, timeout) from None


def _unreachable(target: SshTarget, where: str, exc: BaseException, timeout: float) -> RemoteHostError:
    """Why `where` could not be reached, from the socket's (or the timeout's) error."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return _error(target, "timeout", f"{where}: no SSH answer within {timeout:g} s (the host is down, frozen, "
                                         "or a firewall drops the packets)")
    if isinstance(exc, ConnectionRefusedError):
        return _error(target, "refused", f"{where}: connection refused (no SSH server listens on port "
                                         f"{target.port}; check ssh_settings.ssh_port)")
    if isinstance(exc, socket.gaierror):
        return _error(target, "dns", f"{target.host}: not a host name this server can resolve ({exc.strerror})")
    return _error(target, "refused", f"{where}: cannot connect: {getattr(exc, 'strerror', None) or exc}")


async def _changed_key(target: SshTarget, timeout: float) -> RemoteHostError:
    """The error for a host offering another key than the pinned one: both fingerprints, and the
    one way to accept a new key on purpose."""
    import asyncssh
    pinned = fingerprint(target.host_key or "")
    try:
        offered_key = await asyncio.wait_for(asyncssh.get_server_host_key(target.host, target.port, config=[]),
                                             timeout + 1)
        offered = fingerprint(offered_key) if offered_key is not None else "none"
    except (OSError, asyncssh.Error, asyncio.TimeoutError):
        offered = "unknown (the host closed the connection)"
    return _error(target, "host_key_changed",
                  f"the host key of {target.host}:{target.port} has changed: pinned {pinned}, offered {offered}. "
                  "Someone may be impersonating the host; if the host was reinstalled and you expect the new "
                  "key, pin it with `cible compute attach --name <compute> --replace-host-key`")


async def first_host_key(target: SshTarget, *, expected: str | None, timeout: float | None = None) -> str:
    """The host key `target` offers, as an OpenSSH line, to pin: trusted on first use, or checked
    against `expected` (a `SHA256:…` fingerprint the user got from the host by other means)."""
    import asyncssh
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(target.host, target.port, config=[]), timeout)
    except (TimeoutError, asyncio.TimeoutError, ConnectionRefusedError, socket.gaierror) as exc:
        raise _unreachable(target, f"{target.host}:{target.port}", exc, timeout) from None
    except (OSError, asyncssh.Error) as exc:
        raise _error(target, "ssh", f"{target.host}:{target.port}: cannot read its SSH host key: {exc}") from None
    if key is None:
        raise _error(target, "ssh", f"{target.host}:{target.port} offered no host key to pin")
    if expected is not None and fingerprint(key) != expected.strip():
        raise _error(target, "host_key_mismatch",
                     f"{target.host}:{target.port} offers host key {fingerprint(key)}, not the expected {expected}; "
                     "nothing was attached")
    return public_line(key)


def expand_key_path(path: str) -> str:
    """A key path as the server stores it: `~` expanded and made absolute (for the CLI, which runs
    where the user typed the path)."""
    return str(Path(path).expanduser().absolute())
