"""Users (`cible user …`) and personal tokens (`cible token …`).

What a caller may do is decided by their role before a route runs (auth.py, cible.core.roles); the
routes here add what a path cannot say: whose tokens a request names."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from cible.core.roles import GRANTS, PERMISSIONS
from cible.server.identity import identity
from cible.server.routers.paging import DEFAULT_TOP, Skip, Top
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.users import Me, Token, TokenPage, User, UserPage
from cible.server.services.users import MAX_EXPIRY_DAYS, UserService

router = APIRouter(prefix="/api/v1", default_response_class=JSON)


class NewUser(BaseModel):
    name: str = Field(..., description="a login or an e-mail address")
    role: str = Field(..., description="Owner, Contributor, Reader, AzureML Data Scientist or AzureML Compute Operator "
                                       "(or owner, contributor, reader, data-scientist, compute-operator)")
    email: str | None = Field(None, description="the e-mail address an OIDC sign-in finds them by")


class UserChange(BaseModel):
    role: str | None = None
    email: str | None = Field(None, description="a new e-mail address; \"\" removes it")


class NewToken(BaseModel):
    user: str | None = Field(None, description="whose token (default: the caller's own)")
    name: str = Field("token", description="what it is for (e.g. laptop, ci)")
    expires_in_days: float | None = Field(None, gt=0, le=MAX_EXPIRY_DAYS, description="none: it never expires")


def _users(request: Request) -> UserService:
    return request.app.state.users


@router.get("/users", tags=["users"], summary="A page of the workspace's users, by name", **answers(UserPage))
def list_users(request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return _users(request).list(skip=skip, top=top)


@router.post("/users", tags=["users"], summary="Add a user with a role (Owner only)", **answers(User))
def create_user(request: Request, body: NewUser) -> dict[str, Any]:
    return _users(request).create(body.name, body.role, by=identity(request).user, email=body.email)


@router.get("/users/me", tags=["users"], summary="Who this request acts as, and what they may do", **answers(Me))
def me(request: Request) -> dict[str, Any]:
    who = identity(request)
    return {"name": who.user, "role": who.role, "permissions": [p for p in PERMISSIONS if p in GRANTS[who.role]]}


@router.get("/users/{name}", tags=["users"], summary="One user", **answers(User))
def get_user(request: Request, name: str) -> dict[str, Any]:
    return _users(request).get(name)


@router.patch("/users/{name}", tags=["users"], summary="Change a user's role or e-mail address (Owner only)",
              **answers(User))
def update_user(request: Request, name: str, body: UserChange) -> dict[str, Any]:
    return _users(request).update(name, body.role, body.email)


@router.delete("/users/{name}", tags=["users"], summary="Remove a user and their tokens (Owner only)",
               **answers(User))
def delete_user(request: Request, name: str) -> dict[str, Any]:
    return _users(request).delete(name)


@router.get("/tokens", tags=["users"], summary="A page of a user's personal tokens (never their secrets)",
            **answers(TokenPage))
def list_tokens(request: Request, user: str | None = Query(None, description="default: the caller"),
                skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    who = identity(request)
    return _users(request).list_tokens(user or who.user, by=who, skip=skip, top=top)


@router.post("/tokens", tags=["users"], summary="A new personal token: its secret is in this answer only",
             **answers(Token))
def create_token(request: Request, body: NewToken) -> dict[str, Any]:
    who = identity(request)
    return _users(request).create_token(body.user or who.user, body.name, body.expires_in_days, by=who)


@router.post("/tokens/{token_id}:revoke", tags=["users"], summary="Revoke a personal token (at once)",
             **answers(Token))
def revoke_token(request: Request, token_id: str) -> dict[str, Any]:
    return _users(request).revoke_token(token_id, by=identity(request))
