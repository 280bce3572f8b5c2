"""Workspace users, their roles and their personal tokens.

A personal token is `cible-pat.<id>.<secret>`: shown once when made, stored as the SHA-256 of the whole
token only, named, optionally expiring, revocable. The auth middleware asks `identity_of(bearer)` on
every request that carries one: an in-memory map from digest to grant answers it, kept in step by this
service's own writes (the workspace has one server) and read again from the store on start.

The workspace token ($CIBLE_HOME/token) is the first Owner's: on a workspace without users, the server
records whoever started it (`ensure_owner`), so the local default works with no set-up.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from cible.core import naming
from cible.core.clock import Clock
from cible.core.errors import ConflictError, ForbiddenError, InvalidRequestError, NotFoundError
from cible.core.roles import ADMIN_ROLES, OWNER, ROLES, close_roles, role_named
from cible.server.services.paging import MAX_TOP, fetch, page
from cible.server.store.db import Store
from cible.server.store.rows import UserRow, UserTokenRow
from cible.server.tokens import Scope

PREFIX = "cible-pat."
MAX_EXPIRY_DAYS = 3650


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: a user and their role (`token` the id of the personal token it used)."""

    user: str
    role: str
    token: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


@dataclass(frozen=True)
class _Grant:
    identity: Identity
    expires_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] | None = None  # digest -> grant, loaded on first use
        self._owner: str | None = None

    # -- identity ----------------------------------------------------------------------------------
    def identity_of(self, bearer: str) -> Identity | None:
        """The user a personal token acts as, or None (unknown, revoked, expired, or not one)."""
        if not bearer.startswith(PREFIX):
            return None
        grant = self._map().get(digest(bearer))
        if grant is None or (grant.expires_at is not None and grant.expires_at <= self.clock.now()):
            return None
        return grant.identity

    def scope_of(self, bearer: str) -> Scope | None:
        """The auth middleware's view of a personal token: its user and their role."""
        found = self.identity_of(bearer)
        return Scope("user", found.user, role=found.role) if found is not None else None

    def owner_name(self) -> str:
        """The first Owner's name: whom the workspace token acts as (kept: asked on many requests)."""
        with self._lock:
            if self._owner is None:
                with self.store.session() as session:
                    self._owner = session.scalars(select(UserRow.name).where(UserRow.role == OWNER)
                                                  .order_by(UserRow.created_at, UserRow.name).limit(1)).first() or ""
            return self._owner

    def ensure_owner(self, name: str) -> str:
        """A workspace without users gets `name` as its first Owner (whoever started its server: the local
        default needs no set-up); the first Owner's name either way."""
        with self.store.session() as session:
            if session.scalar(select(func.count()).select_from(UserRow)) == 0:
                if naming.USER.problem(name):
                    name = "owner"  # a login cible cannot take as a user name (rare): a plain one
                session.add(UserRow(name=name, role=OWNER, created_at=self.clock.now(), created_by=None))
        self._invalidate()
        return self.owner_name()

    # -- users -------------------------------------------------------------------------------------
    def create(self, name: str, role: str, by: str | None) -> dict[str, Any]:
        naming.USER.check(name)
        canonical = _role(role)
        with self.store.session() as session:
            if session.get(UserRow, name) is not None:
                raise ConflictError(f"user '{name}' already exists; change their role with `cible user update`",
                                    details={"name": name})
            row = UserRow(name=name, role=canonical, created_at=self.clock.now(), created_by=by)
            session.add(row)
            result = _user(row, 0)
        self._invalidate()
        return result

    def update(self, name: str, role: str) -> dict[str, Any]:
        canonical = _role(role)
        with self.store.session() as session:
            row = self._row(session, name)
            if row.role == OWNER and canonical != OWNER:
                self._keep_an_owner(session, name, "change the role of")
            row.role = canonical
            result = _user(row, self._token_count(session, name))
        self._invalidate()
        return result

    def delete(self, name: str) -> dict[str, Any]:
        with self.store.session() as session:
            row = self._row(session, name)
            if row.role == OWNER:
                self._keep_an_owner(session, name, "delete")
            result = _user(row, self._token_count(session, name))
            for token in session.scalars(select(UserTokenRow).where(UserTokenRow.user == name)):
                session.delete(token)  # not left to ON DELETE CASCADE: SQLite enforces it only with its pragma
            session.delete(row)
        self._invalidate()
        return result

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as session:
            return _user(self._row(session, name), self._token_count(session, name))

    def list(self, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        with self.store.session() as session:
            rows, total = fetch(session, select(UserRow).order_by(UserRow.name), skip, top)
            counts = dict(session.execute(select(UserTokenRow.user, func.count()).where(
                UserTokenRow.revoked_at.is_(None), UserTokenRow.user.in_([r.name for r in rows]))
                .group_by(UserTokenRow.user)).all())
            return page([_user(r, counts.get(r.name, 0)) for r in rows], total, skip)

    # -- tokens ------------------------------------------------------------------------------------
    def create_token(self, user: str, name: str, expires_in_days: float | None, by: Identity) -> dict[str, Any]:
        """A new token of `user`: the answer holds its secret, which is stored nowhere."""
        self._may_manage(user, by)
        naming.TOKEN_NAME.check(name, field="name")
        if expires_in_days is not None and not 0 < expires_in_days <= MAX_EXPIRY_DAYS:
            raise InvalidRequestError(f"expires_in_days: {expires_in_days:g} is not between 0 and {MAX_EXPIRY_DAYS}",
                                      details={"field": "expires_in_days"})
        token_id = secrets.token_hex(6)
        secret = f"{PREFIX}{token_id}.{secrets.token_urlsafe(32)}"
        now = self.clock.now()
        expires = now + timedelta(days=expires_in_days) if expires_in_days is not None else None
        with self.store.session() as session:
            self._row(session, user)
            row = UserTokenRow(id=token_id, user=user, name=name, digest=digest(secret), created_at=now,
                               expires_at=expires, revoked_at=None)
            session.add(row)
            shown = _token(row, now)
        self._invalidate()
        return {**shown, "token": secret}

    def list_tokens(self, user: str, by: Identity, *, skip: int = 0, top: int = MAX_TOP) -> dict[str, Any]:
        self._may_manage(user, by)
        now = self.clock.now()
        with self.store.session() as session:
            self._row(session, user)
            query = select(UserTokenRow).where(UserTokenRow.user == user).order_by(UserTokenRow.created_at,
                                                                                   UserTokenRow.id)
            rows, total = fetch(session, query, skip, top)
            return page([_token(r, now) for r in rows], total, skip)

    def revoke_token(self, token_id: str, by: Identity) -> dict[str, Any]:
        with self.store.session() as session:
            row = session.get(UserTokenRow, token_id)
            if row is None:
                raise NotFoundError(f"token '{token_id}' does not exist (`cible token list` names them)",
                                    details={"id": token_id})
            self._may_manage(row.user, by)
            if row.revoked_at is None:
                row.revoked_at = self.clock.now()
            shown = _token(row, self.clock.now())
        self._invalidate()
        return shown

    # -- helpers -----------------------------------------------------------------------------------
    def _map(self) -> dict[str, _Grant]:
        with self._lock:
            if self._grants is None:
                with self.store.session() as session:
                    rows = session.execute(select(UserTokenRow, UserRow.role).join(UserRow, UserRow.name == UserTokenRow.user)
                                           .where(UserTokenRow.revoked_at.is_(None))).all()
                    self._grants = {t.digest: _Grant(Identity(t.user, role, t.id), t.expires_at) for t, role in rows}
            return self._grants

    def _invalidate(self) -> None:
        with self._lock:
            self._grants = self._owner = None  # read again at the next request: a revoked token stops at once

    @staticmethod
    def _may_manage(user: str, by: Identity) -> None:
        if user != by.user and not by.is_admin:
            raise ForbiddenError(f"user '{by.user}' ({by.role}) may manage only their own tokens; an Owner "
                                 f"manages those of '{user}'", details={"permission": "users/write"})

    def _keep_an_owner(self, session, name: str, what: str) -> None:  # noqa: ANN001
        owners = session.scalar(select(func.count()).select_from(UserRow).where(UserRow.role == OWNER))
        if owners <= 1:
            raise ConflictError(f"cannot {what} '{name}': they are the workspace's only Owner; make another "
                                "user an Owner first", details={"name": name})

    @staticmethod
    def _row(session, name: str) -> UserRow:  # noqa: ANN001
        row = session.get(UserRow, name)
        if row is None:
            raise NotFoundError(f"user '{name}' does not exist in this workspace (`cible user list`); create it "
                                "with `cible user create --name NAME --role ROLE`", details={"name": name})
        return row

    @staticmethod
    def _token_count(session, name: str) -> int:  # noqa: ANN001
        return session.scalar(select(func.count()).select_from(UserTokenRow).where(
            UserTokenRow.user == name, UserTokenRow.revoked_at.is_(None))) or 0


def _role(text: str) -> str:
    role = role_named(text) if isinstance(text, str) else None
    if role is None:
        near = close_roles(text) if isinstance(text, str) else []
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise InvalidRequestError(f"role: '{text}' is not a role; {hint}use one of {', '.join(ROLES)}",
                                  details={"field": "role"})
    return role


def _user(row: UserRow, tokens: int) -> dict[str, Any]:
    return {"name": row.name, "role": row.role, "created_at": row.created_at.isoformat(),
            "created_by": row.created_by, "tokens": tokens}


def _token(row: UserTokenRow, now: datetime) -> dict[str, Any]:
    state = ("revoked" if row.revoked_at is not None else
             "expired" if row.expires_at is not None and row.expires_at <= now else "active")
    return {"id": row.id, "user": row.user, "name": row.name, "state": state,
            "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}
