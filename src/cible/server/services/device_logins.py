"""`cible login`: a CLI signed in through a browser, as RFC 8628's device authorization grant says.

The CLI asks for a device code and a user code (`start`); its user opens the studio's /device page,
signs in there (OIDC, a link, a token) and approves the user code (`decide`); the CLI, polling with the
device code (`poll`), then gets a new personal token of that user, made and shown once, and the pending
login goes. The store keeps the device code's SHA-256 only; a device code yields one token at most.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from cible.core.clock import Clock
from cible.core.errors import CibleError
from cible.server.services.users import Identity, UserService
from cible.server.store.db import Store
from cible.server.store.rows import DeviceLoginRow

USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels (no words), case-free, 20^8 codes


class DeviceLoginError(Exception):
    """An RFC 8628 token error: authorization_pending, slow_down, access_denied, expired_token, invalid_grant."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Pending:
    user_code: str  # as shown: XXXX-XXXX
    client: str
    expires_in_s: int


def shown(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def typed(code: str) -> str:
    """A user code as typed (any case, with or without the dash or spaces) as stored."""
    return re.sub(r"[\s-]", "", code or "").upper()


class DeviceLogins:
    def __init__(self, store: Store, clock: Clock, users: UserService, *, token_days: float,
                 ttl_s: float = 600, interval_s: int = 2) -> None:
        self.store = store
        self.clock = clock
        self.users = users
        self.token_days = token_days
        self.ttl = timedelta(seconds=ttl_s)
        self.interval_s = interval_s

    def start(self, client: str) -> dict[str, Any]:
        """A new pending login: the device code (the CLI's to keep) and the user code (its user's to type)."""
        device_code = secrets.token_urlsafe(32)
        user_code = "".join(secrets.choice(USER_CODE_LETTERS) for _ in range(8))
        now = self.clock.now()
        with self.store.session() as session:
            session.execute(delete(DeviceLoginRow).where(DeviceLoginRow.expires_at <= now))
            session.add(DeviceLoginRow(digest=_digest(device_code), user_code=user_code, client=client[:100] or "a CLI",
                                       created_at=now, expires_at=now + self.ttl))
        return {"device_code": device_code, "user_code": shown(user_code),
                "expires_in": int(self.ttl.total_seconds()), "interval": self.interval_s}

    def pending(self, user_code: str) -> Pending | None:
        """The login waiting for `user_code`, or None (unknown, decided, or expired)."""
        now = self.clock.now()
        with self.store.session() as session:
            row = session.scalar(select(DeviceLoginRow).where(DeviceLoginRow.user_code == typed(user_code)))
            if row is None or row.expires_at <= now or row.approved_by is not None or row.denied:
                return None
            return Pending(shown(row.user_code), row.client, int((row.expires_at - now).total_seconds()))

    def decide(self, user_code: str, user: str, approve: bool) -> bool:
        """`user` approves (the CLI becomes them) or denies the pending login; False when none waits."""
        if self.pending(user_code) is None:
            return False
        with self.store.session() as session:
            row = session.scalar(select(DeviceLoginRow).where(DeviceLoginRow.user_code == typed(user_code)))
            if row is None or row.approved_by is not None or row.denied:
                return False
            row.approved_by, row.denied = (user, False) if approve else (None, True)
        return True

    def poll(self, device_code: str) -> dict[str, Any]:
        """The CLI's poll: the new token once approved (its secret in this answer only), else DeviceLoginError."""
        now = self.clock.now()

        def take(session) -> tuple[str, str, str] | None:  # noqa: ANN001
            """(what ended it or "pending", who approved it, its client); None for an unknown device code."""
            row = session.get(DeviceLoginRow, _digest(device_code))
            if row is None:
                return None
            ended = ("expired" if row.expires_at <= now else "denied" if row.denied else
                     "approved" if row.approved_by is not None else None)
            if ended:  # one answer ends it: deleted in this transaction, so two polls cannot both take the token
                session.delete(row)
                return ended, row.approved_by or "", row.client
            too_soon = row.polled_at is not None and now - row.polled_at < timedelta(seconds=self.interval_s)
            row.polled_at = now
            return ("slow" if too_soon else "pending"), "", row.client

        taken = self.store.transact(take)
        if taken is None:
            raise DeviceLoginError("invalid_grant", "no login waits for this device code; start again")
        state, user, client = taken
        if state != "approved":
            raise DeviceLoginError(*{
                "expired": ("expired_token", "the code expired before it was approved; start again"),
                "denied": ("access_denied", "the sign-in was denied in the browser"),
                "slow": ("slow_down", f"poll every {self.interval_s} s at most"),
                "pending": ("authorization_pending", "waiting for approval in the browser")}[state])
        role = self.users.role_of(user)
        if role is None:
            raise DeviceLoginError("access_denied", f"user '{user}' was removed before the CLI took its token")
        try:
            return self.users.create_token(user, _token_name(client), self.token_days, by=Identity(user, role))
        except CibleError as exc:
            raise DeviceLoginError("access_denied", exc.message) from None


def _digest(device_code: str) -> str:
    return hashlib.sha256(device_code.encode()).hexdigest()


def _token_name(client: str) -> str:
    """`login-<host>`, as a token name may be written."""
    return ("login-" + re.sub(r"[^A-Za-z0-9_-]+", "-", client).strip("-"))[:64].rstrip("-")
