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
import re
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
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
USED_FLUSH = timedelta(minutes=1)  # a token's last use is written to the store at most this often


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
        self._used: dict[str, datetime] = {}  # token id -> its last use, not yet written
        self._used_written = clock.now()

    # -- identity ----------------------------------------------------------------------------------
    def identity_of(self, bearer: str) -> Identity | None:
        """The user a personal token acts as, or None (unknown, revoked, expired, or not one)."""
        if not bearer.startswith(PREFIX):
            return None
        grant = self._map().get(digest(bearer))
        now = self.clock.now()
        if grant is None or (grant.expires_at is not None and grant.expires_at <= now):
            return None
        self._used[grant.identity.token] = now
        if now - self._used_written >= USED_FLUSH:  # one small write a minute, not one per request
            self.flush_usage()
        return grant.identity

    def flush_usage(self) -> None:
        """Write the tokens' last uses noted since the last write (also on shutdown and before a list)."""
        with self._lock:
            used, self._used = self._used, {}
            self._used_written = self.clock.now()
        if used:
            with self.store.session() as session:
                for row in session.scalars(select(UserTokenRow).where(UserTokenRow.id.in_(list(used)))):
                    row.last_used_at = used[row.id]

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

    def role_of(self, name: str) -> str | None:
        """A user's role; None when there is no such user (any longer)."""
        with self.store.session() as session:
            return session.scalar(select(UserRow.role).where(UserRow.name == name))

    def user_for_claims(self, claims: dict[str, Any], default_role: str | None) -> str:
        """The user an OIDC sign-in acts as: the one whose e-mail (or name) is the claims' verified
        e-mail; else, when `default_role` is set, a new user with it (named by the e-mail)."""
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email or claims.get("email_verified") is False:
            raise ForbiddenError("the identity provider gave no verified e-mail address for this sign-in; cible "
                                 "finds users by it (ask for the 'email' scope)", details={"claim": "email"})
        email = email.strip().lower()
        with self.store.session() as session:
            found = session.scalars(select(UserRow.name).where(
                (func.lower(UserRow.email) == email) | (func.lower(UserRow.name) == email)).limit(1)).first()
        if found is not None:
            return found
        if default_role is None:
            raise ForbiddenError(f"no user of this workspace has the e-mail address {email}; an Owner adds one with "
                                 f"`cible user create --name NAME --role ROLE --email {email}`",
                                 details={"email": email})
        return self.create(email, default_role, by=None, email=email)["name"]

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
    def create(self, name: str, role: str, by: str | None, email: str | None = None) -> dict[str, Any]:
        naming.USER.check(name)
        canonical = _role(role)
        with self.store.session() as session:
            if session.get(UserRow, name) is not None:
                raise ConflictError(f"user '{name}' already exists; change their role with `cible user update`",
                                    details={"name": name})
            row = UserRow(name=name, role=canonical, created_at=self.clock.now(), created_by=by,
                          email=self._free_email(session, email, name))
            session.add(row)
            result = _user(row, 0)
        self._invalidate()
        return result

    def update(self, name: str, role: str | None = None, email: str | None = None) -> dict[str, Any]:
        """Change a user's role and/or e-mail address (`email` "": remove it)."""
        canonical = _role(role) if role is not None else None
        with self.store.session() as session:
            row = self._row(session, name)
            if canonical is not None and row.role == OWNER and canonical != OWNER:
                self._keep_an_owner(session, name, "change the role of")
            row.role = canonical or row.role
            if email is not None:
                row.email = self._free_email(session, email, name) if email else None
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
            session.flush()  # the tokens first: deleting the user first would cascade to them, and then these miss
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
        self.flush_usage()
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
    @staticmethod
    def _free_email(session, email: str | None, name: str) -> str | None:  # noqa: ANN001
        """`email` checked and lower-cased, once no other user has it."""
        if email is None:
            return None
        email = email.strip().lower()
        if not EMAIL.fullmatch(email):
            raise InvalidRequestError(f"email: '{email}' is not an e-mail address (name@domain)",
                                      details={"field": "email"})
        holder = session.scalar(select(UserRow.name).where(UserRow.email == email, UserRow.name != name))
        if holder is not None:
            raise ConflictError(f"email: user '{holder}' has {email} already; an e-mail address names one user",
                                details={"field": "email"})
        return email

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
    return {"name": row.name, "role": row.role, "email": row.email, "created_at": row.created_at.isoformat(),
            "created_by": row.created_by, "tokens": tokens}


def _token(row: UserTokenRow, now: datetime) -> dict[str, Any]:
    state = ("revoked" if row.revoked_at is not None else
             "expired" if row.expires_at is not None and row.expires_at <= now else "active")
    return {"id": row.id, "user": row.user, "name": row.name, "state": state,
            "created_at": row.created_at.isoformat(),
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None}
