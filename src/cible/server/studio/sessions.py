"""Studio sign-in: one-use codes that become browser sessions, and the CSRF token of each session.

`cible studio` asks the API for a code and prints a link carrying it; opening the link trades the
code for a session cookie (HttpOnly, SameSite=Lax) and redirects to a URL without
it. The store keeps only keyed digests (studio_grants: HMAC-SHA-256 under a key derived from the
workspace token): a code stays one-use and a sign-out holds across a restart, a leaked database holds
no usable secret, and a new workspace token signs every browser out. A session acts as a user: the one
whose personal token asked for its code, typed in, or signed in through OIDC (oidc.py); None, the
workspace token's, acts as the first Owner. The cookie opens the studio's pages
and their data routes only: the REST API keeps its bearer token (auth.py never reads the cookie).

Every action (POST) carries the session's CSRF token, an HMAC of the session secret under a key
derived from the workspace token: a page can hold it, the cookie cannot be derived from it, and a new
workspace token voids every session's token at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete

from cible.core.clock import Clock
from cible.server.store.db import Store
from cible.server.store.rows import StudioGrantRow

CODE = "code"
SESSION = "session"
COOKIE = "cible_studio"


@dataclass(frozen=True)
class SignedIn:
    user: str | None  # None: the workspace token's session, the first Owner's


class StudioSessions:
    def __init__(self, store: Store, clock: Clock, workspace_token: str, *, session_ttl_s: float,
                 code_ttl_s: float) -> None:
        self.store = store
        self.clock = clock
        self.session_ttl = timedelta(seconds=session_ttl_s)
        self.code_ttl = timedelta(seconds=code_ttl_s)
        self._csrf_key = hmac.new(workspace_token.encode(), b"cible studio csrf v1", hashlib.sha256).digest()
        self._grant_key = hmac.new(workspace_token.encode(), b"cible studio grants v1", hashlib.sha256).digest()

    def mint_code(self, user: str | None) -> str:
        """A new one-use sign-in code for `user`, good for code_ttl."""
        return self._grant(CODE, self.code_ttl, user)

    def start_session(self, user: str | None) -> str:
        """A new session secret (the cookie's value) acting as `user`, good for session_ttl."""
        return self._grant(SESSION, self.session_ttl, user)

    def redeem(self, code: str) -> str | None:
        """The code traded for a new session's secret; None for an unknown, spent or expired code."""
        now = self.clock.now()
        new = secrets.token_urlsafe(32)

        def trade(session) -> bool:  # noqa: ANN001
            # One DELETE decides who spends the code: of two browsers racing, one deletes the row, the
            # other deletes nothing (a read, then a delete, would let both through on PostgreSQL).
            spent = session.execute(delete(StudioGrantRow).where(
                StudioGrantRow.digest == self.digest(code), StudioGrantRow.kind == CODE,
                StudioGrantRow.expires_at > now).returning(StudioGrantRow.user)).all()  # an expired one: _grant's
            if len(spent) != 1:
                return False
            session.add(StudioGrantRow(digest=self.digest(new), kind=SESSION, created_at=now,
                                       expires_at=now + self.session_ttl, user=spent[0][0]))
            return True

        return new if code and self.store.transact(trade) else None

    def signed_in(self, secret: str | None) -> SignedIn | None:
        """Whom a live session acts as; None for no session, or an unknown or expired one."""
        if not secret:
            return None
        with self.store.session() as session:
            row = session.get(StudioGrantRow, self.digest(secret))
            live = row is not None and row.kind == SESSION and row.expires_at > self.clock.now()
            return SignedIn(row.user) if live else None

    def end(self, secret: str) -> None:
        """Sign out: the session no longer opens anything, whatever the browser keeps."""
        with self.store.session() as session:
            session.execute(delete(StudioGrantRow).where(StudioGrantRow.digest == self.digest(secret)))

    def digest(self, secret: str) -> str:
        """What the store keeps of a code or a session."""
        return hmac.new(self._grant_key, secret.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, secret: str) -> str:
        return hmac.new(self._csrf_key, secret.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, secret: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(secret), given)

    def _grant(self, kind: str, ttl: timedelta, user: str | None) -> str:
        secret = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.store.session() as session:
            # Expired grants go as new ones are made: the table holds what is live, a few rows.
            session.execute(delete(StudioGrantRow).where(StudioGrantRow.expires_at <= now))
            session.add(StudioGrantRow(digest=self.digest(secret), kind=kind, created_at=now, expires_at=now + ttl,
                                       user=user))
        return secret
