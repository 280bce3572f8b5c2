"""Workspace users, their roles, and their personal tokens."""

from __future__ import annotations

from pydantic import Field

from cible.server.schemas.common import Envelope, IsoTime, Page


class User(Envelope):
    name: str = Field(description="the user's name (a login or an e-mail address)")
    role: str = Field(description="Owner, Contributor, Reader, AzureML Data Scientist or AzureML Compute Operator")
    email: str | None = Field(None, description="the e-mail address an OIDC sign-in finds them by")
    created_at: IsoTime | None = Field(None, description="when it was added (ISO 8601)")
    created_by: str | None = Field(None, description="who added it (none for the workspace's first Owner)")
    tokens: int | None = Field(None, description="its personal tokens not revoked")


class Me(Envelope):
    name: str = Field(description="who the request acts as")
    role: str = Field(description="their role")
    permissions: list[str] = Field(description="what that role may do (cible.core.roles)")


class Token(Envelope):
    id: str = Field(description="what list and revoke name it by (not a secret)")
    user: str = Field(description="whose it is")
    name: str = Field(description="what its owner called it")
    state: str = Field(description="active, expired or revoked")
    created_at: IsoTime | None = None
    expires_at: IsoTime | None = Field(None, description="when it stops working; none: never")
    revoked_at: IsoTime | None = None
    last_used_at: IsoTime | None = Field(None, description="when a request last carried it (to the minute)")
    token: str | None = Field(None, description="the secret: in the answer that makes it, and nowhere else")


UserPage = Page[User]
TokenPage = Page[Token]
