"""Sign-in (a printed link's code, a token typed in, or OIDC: oidc.py), sign-out, and the API route that
makes a sign-in code for `cible studio`. The session acts as the user the code, the token or the
identity provider names."""

from __future__ import annotations

import shlex

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cible.core.roles import allows
from cible.server.routers.responses import answers
from cible.server.schemas.misc import StudioSignInCode
from cible.server.studio.sessions import COOKIE
from cible.server.tokens import WORKSPACE
from cible.server.studio.web import (SECURITY_HEADERS, Checked, form_field, render, safe_next, sessions_of,
                                     sign_in_redirect)

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["studio"])


@api.post("/studio:sign-in-code", summary="A one-use code that signs a browser in to the studio "
                                           "(`cible studio` prints the link that carries it)",
          **answers(StudioSignInCode))
def sign_in_code(request: Request) -> dict[str, Any]:
    sessions = sessions_of(request)
    scope = request.state.token_scope  # a personal token's user; the workspace token's session: the first Owner's
    user = scope.name if scope.kind == "user" else None
    return {"code": sessions.mint_code(user), "expires_in_s": int(sessions.code_ttl.total_seconds())}


@router.get("/")
def home() -> Response:
    return RedirectResponse("/jobs", status_code=303, headers=SECURITY_HEADERS)


@router.get("/sign-in")
def sign_in_page(request: Request, next: str = "/jobs", code: str | None = None) -> Response:  # noqa: A002
    target = safe_next(next)
    if code is not None:
        secret = sessions_of(request).redeem(code)
        if secret is None:
            return _sign_in_page(request, 401, target,
                                 "That sign-in link was used already or has expired. Run `cible studio` "
                                  "for a new one.")
        return to_session(request, secret, target)  # to a URL without the code
    if sessions_of(request).signed_in(request.cookies.get(COOKIE)):  # signed in already
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    return _sign_in_page(request, 200, target)


@router.post("/sign-in")
async def sign_in_with_token(request: Request) -> Response:
    body = await request.body()
    target = safe_next(form_field(body, "next"))
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return _sign_in_page(request, 403, target,
                             "This form can only be sent from this workspace's own page.")
    token = (form_field(body, "token") or "").strip()
    if request.app.state.tokens.scope_of(token.encode()) == WORKSPACE:
        return to_session(request, sessions_of(request).start_session(None), target)
    person = request.app.state.users.identity_of(token)
    if person is None:
        return _sign_in_page(request, 401, target,
                             "That is neither this workspace's token ($CIBLE_HOME/token on the server) nor a "
                             "personal token that is still valid (`cible token list` says whether yours expired or "
                             "was revoked).")
    if not allows(person.role, "studio/use"):
        return _sign_in_page(request, 403, target, f"user '{person.user}' ({person.role}) may not use the studio.")
    return to_session(request, sessions_of(request).start_session(person.user), target)


@router.post("/sign-out")
def sign_out(request: Request, who: Checked) -> Response:
    sessions_of(request).end(who.secret)
    response = RedirectResponse("/sign-in", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response


def _sign_in_page(request: Request, status_code: int, target: str, problem: str | None = None) -> Response:
    # The command that makes a link for this page, quoted for a shell (`?` and `&` are in filters' URLs).
    command = "cible studio" if target == "/jobs" else f"cible studio {shlex.quote(target)}"
    settings = request.app.state.settings
    return render(request, None, "sign_in.html", status_code=status_code, next=target, command=command,
                  problem=problem, oidc=settings.oidc_name if settings.oidc_issuer else None)


def to_session(request: Request, secret: str, target: str) -> Response:
    """To `target`, with the new session's cookie."""
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(COOKIE, secret, max_age=int(sessions_of(request).session_ttl.total_seconds()), path="/",
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


__all__ = ["router", "api", "sign_in_redirect"]
