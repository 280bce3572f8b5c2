"""Who a request acts as, from what the auth middleware found (auth.py).

A personal token acts as its user, with their role; the client's X-Cible-User header is then ignored.
The workspace token is the first Owner's: it acts for the user the X-Cible-User header names (the local
CLI sends its login), recorded as theirs, with an Owner's rights; without the header, as that Owner.
"""

from __future__ import annotations

from fastapi import Request

from cible.core.roles import OWNER
from cible.server.services.users import Identity

USER_HEADER = "x-cible-user"  # who a workspace-token client says it acts for


def identity(request: Request) -> Identity:
    scope = getattr(request.state, "token_scope", None)
    if scope is not None and scope.kind == "user":
        return Identity(scope.name, scope.role)
    return Identity(request.headers.get(USER_HEADER) or request.app.state.users.owner_name(), OWNER)


def caller(request: Request) -> str | None:
    """The user recorded on what a request creates: a personal token's user, else the X-Cible-User the
    workspace token's client declared (None without one)."""
    scope = getattr(request.state, "token_scope", None)
    if scope is not None and scope.kind == "user":
        return scope.name
    return request.headers.get(USER_HEADER) or None


def as_admin(request: Request) -> bool:
    """Whether the request may act on what is another user's (an Owner's, or the workspace token's)."""
    return identity(request).is_admin
