"""Per-user credentials of Slurm clusters: a job on a Slurm compute with a login host runs as its
submitter's own Slurm identity (their Unix user on the login host, logged in with their own key),
never as a shared service account.

A credential is stored as the user name on the login host and the *path* of a private key on the
server's machine (or the server's ssh-agent), read at each login: no key is ever stored. It is
checked when set: the key as ssh(1) checks it, then a login over the compute's pinned host key
that runs `id -un`. `user` is who the client says it acts for (the X-Cible-User header: recorded,
not authenticated, until workspaces have users); a client that sends none is the user "".

A compute without a login host uses the server machine's own Slurm commands: its jobs run as the
server's user, and it takes no credentials.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.backends.ssh.connect import CONNECT_TIMEOUT_S, RemoteHostError, SshTarget, connect, read_client_key
from cible.backends.ssh.probe import run_sync
from cible.core.clock import Clock
from cible.core.errors import InvalidRequestError, NotFoundError
from cible.core.models.computes import SlurmCompute
from cible.server.services.compute_spec import compute_spec
from cible.server.services.paging import MAX_TOP, fetch, page
from cible.server.services.slurm_attach import slurm_target
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, CredentialRow

USERNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")  # a Unix user name (useradd's rule, 32 at most)


@dataclass(frozen=True)
class SlurmCredential:
    """Who a user's jobs run as on a Slurm cluster's login host: `username` with the key at
    `key_file` (a path on the server's machine), or with the server's ssh-agent."""

    username: str
    key_file: str | None
    use_ssh_agent: bool

    def target(self, spec: SlurmCompute) -> SshTarget:
        """The login as this user on `spec`'s login host, over its pinned host key."""
        return slurm_target(spec, username=self.username, key_file=self.key_file, use_ssh_agent=self.use_ssh_agent)


def user_key(user: str | None) -> str:
    """How a user is stored: the X-Cible-User value, "" when the client sent none."""
    return user or ""


def stored_credential(session: Session, compute: str, user: str | None) -> SlurmCredential | None:
    row = session.get(CredentialRow, (compute, user_key(user)))
    if row is None:
        return None
    return SlurmCredential(username=row.username, key_file=row.ssh_private_key_file, use_ssh_agent=row.use_ssh_agent)


def credential_row(compute: str, user: str | None, credential: SlurmCredential,
                   now: datetime) -> CredentialRow:
    return CredentialRow(compute=compute, user=user_key(user), username=credential.username,
                         ssh_private_key_file=None if credential.use_ssh_agent else credential.key_file,
                         use_ssh_agent=credential.use_ssh_agent, created_at=now)


def attaching_credential(spec: SlurmCompute) -> SlurmCredential | None:
    """The credential attach records for the attaching user: the compute's own ssh_settings
    (None for a compute without a login host)."""
    if spec.login is None or spec.ssh_settings is None:
        return None
    agent = spec.cible is not None and spec.cible.use_ssh_agent
    return SlurmCredential(username=spec.ssh_settings.admin_username or "",
                           key_file=None if agent else spec.ssh_settings.ssh_private_key_file, use_ssh_agent=agent)


def no_credential_message(compute: str, user: str | None) -> str:
    who = f"user {user}" if user else "a client that sent no X-Cible-User"
    return (f"compute {compute} runs jobs as each user's own Slurm identity and you ({who}) have none: "
            f"cible compute set-credential {compute} --username … --ssh-private-key-file … (your user on its login "
            "host, and a private key on the workspace server's machine that logs in as it)")


async def _whoami(target: SshTarget) -> str:
    conn = await connect(target)
    async with conn:
        try:
            result = await asyncio.wait_for(conn.run("id -un", check=False), CONNECT_TIMEOUT_S + 10)
        except asyncio.TimeoutError:
            raise RemoteHostError(f"{target.where}: `id -un` got no answer", details={
                "host": target.host, "port": target.port, "reason": "timeout"}) from None
    if result.exit_status != 0:
        raise RemoteHostError(f"{target.where}: `id -un` failed (exit {result.exit_status}): "
                              f"{str(result.stderr or '').strip()[-300:]}",
                              details={"host": target.host, "port": target.port, "reason": "probe"})
    return str(result.stdout or "").strip()


class CredentialService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def _slurm(self, session: Session, compute: str, *, login: bool = True) -> SlurmCompute:
        """The Slurm compute `compute` (NotFound, or a 400 when it is another type or, with `login`,
        has no login host)."""
        row = session.get(ComputeRow, compute)
        if row is None:
            raise NotFoundError(f"compute '{compute}' does not exist in this workspace", details={"name": compute})
        if row.compute_type != "slurm":
            raise InvalidRequestError(f"compute '{compute}' is a {row.compute_type}; only a Slurm compute (type: "
                                      "slurm) takes per-user credentials", details={"field": "type"})
        spec = compute_spec(row)
        assert isinstance(spec, SlurmCompute)
        if login and spec.login is None:
            raise InvalidRequestError(f"compute {compute} uses this machine's Slurm commands: jobs run as the "
                                      "server's user, and it takes no credentials (attach it with --host, its login "
                                      "host, for jobs to run as each user)", details={"field": "login"})
        return spec

    def get(self, compute: str, user: str | None) -> SlurmCredential | None:
        """`user`'s credential on `compute`, or None."""
        with self.store.session() as session:
            return stored_credential(session, compute, user)

    def set(self, compute: str, user: str | None, *, username: str, ssh_private_key_file: str | None,
            use_ssh_agent: bool = False) -> dict[str, Any]:
        """Record (or replace) `user`'s credential on `compute`, once it logs in to the login host."""
        if not isinstance(username, str) or not USERNAME.fullmatch(username):
            raise InvalidRequestError(f"username: {username!r} is not a user name (letters, digits, _ . -; your user "
                                      "on the login host)", details={"field": "username"})
        if use_ssh_agent:
            ssh_private_key_file = None
        elif not ssh_private_key_file:
            raise InvalidRequestError("ssh_private_key_file is required (a private key on the workspace server's "
                                      "machine whose public key is in your authorized_keys on the login host), or "
                                      "use_ssh_agent: true to log in with the server's ssh-agent",
                                      details={"field": "ssh_private_key_file"})
        with self.store.session() as session:
            spec = self._slurm(session, compute)
        credential = SlurmCredential(username=username, key_file=ssh_private_key_file, use_ssh_agent=use_ssh_agent)
        target = credential.target(spec)
        if target.key_file is not None:
            read_client_key(target)  # a missing or open key is said before any connection
        whoami = run_sync(_whoami(target))
        if whoami and whoami != username:
            raise RemoteHostError(f"{target.where}: logged in, but as '{whoami}', not '{username}'",
                                  details={"host": target.host, "port": target.port, "reason": "auth"})
        now = self.clock.now()

        def store(session: Session) -> dict[str, Any]:
            self._slurm(session, compute)  # not deleted meanwhile
            existing = session.get(CredentialRow, (compute, user_key(user)))
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(credential_row(compute, user, credential, now))
            return {"compute": compute, "user": user_key(user), "username": username,
                    "use_ssh_agent": use_ssh_agent, "created_at": now.isoformat()}

        return self.store.transact(store)

    def delete(self, compute: str, user: str | None) -> None:
        def remove(session: Session) -> None:
            self._slurm(session, compute, login=False)
            row = session.get(CredentialRow, (compute, user_key(user)))
            if row is None:
                who = f"user {user}" if user else "the user without a name"
                raise NotFoundError(f"{who} has no credential on compute {compute}", details={"name": compute})
            session.delete(row)

        self.store.transact(remove)

    def list(self, compute: str, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        """Who has a credential on `compute`, and as which user: never a key or its path."""
        with self.store.session() as session:
            self._slurm(session, compute, login=False)
            rows, total = fetch(session, select(CredentialRow).where(CredentialRow.compute == compute)
                                .order_by(CredentialRow.user), skip, top)
            return page([{"user": r.user, "username": r.username} for r in rows], total, skip)
