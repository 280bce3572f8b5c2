"""Studio sign-in through an OpenID Connect provider (Authlib), when the server is given one.

CIBLE_OIDC_ISSUER names the provider (its discovery document is `<issuer>/.well-known/openid-configuration`),
CIBLE_OIDC_CLIENT_ID and CIBLE_OIDC_CLIENT_SECRET cible's client there, which must allow
`<this server>/auth/oidc/callback` as a redirect URI. The flow is the authorization code flow with PKCE
and a nonce; Authlib checks the ID token (signature against the provider's keys, issuer, audience,
expiry, nonce). The user is the one whose e-mail the ID token gives (UserService.user_for_claims); the studio
session then acts as them, and `cible login` (device.py) signs a CLI in through that session.

The flow's state lives in a signed cookie (Starlette's SessionMiddleware, keyed from the workspace
token) of this sub-application alone: scoped to /auth/oidc, read and set by no other route.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cible.core.errors import CibleError
from cible.server.settings import ServerSettings
from cible.server.studio.pages.sign_in import to_session
from cible.server.studio.sessions import StudioSessions
from cible.server.studio.web import message_page, safe_next

PATH = "/auth/oidc"
STATE_COOKIE = "cible_oidc"
STATE_TTL_S = 600  # a sign-in left at the provider's page longer than this starts again


def oidc_app(settings: ServerSettings, sessions: StudioSessions, users, workspace_token: str) -> Starlette:  # noqa: ANN001
    """The sign-in routes (`/login`, `/callback`), to mount at PATH."""
    oauth = OAuth()
    provider = oauth.register(
        "idp", server_metadata_url=f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
        client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret,
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"})

    async def login(request: Request) -> Response:
        request.session.clear()
        request.session["next"] = safe_next(request.query_params.get("next"))
        callback = f"{request.url.scheme}://{request.url.netloc}{PATH}/callback"
        try:
            return await provider.authorize_redirect(request, callback)
        except (httpx.HTTPError, OAuthError, ValueError, KeyError) as exc:  # no discovery document, or a bad one
            return message_page(request, None, 502, "Sign-in unavailable",
                                f"The identity provider at {settings.oidc_issuer} did not answer as an OpenID Connect "
                                f"provider ({type(exc).__name__}: {exc}). Sign in with a token meanwhile.")

    async def callback(request: Request) -> Response:
        target = safe_next(request.session.get("next"))
        try:
            token = await provider.authorize_access_token(request)
        except OAuthError as exc:
            return _refused(request, 401, f"the identity provider refused the sign-in: {exc.error}"
                                          f"{': ' + exc.description if exc.description else ''}")
        except (httpx.HTTPError, ValueError) as exc:  # its token endpoint, or an ID token that fails its checks
            return _refused(request, 401, f"the sign-in could not be checked ({type(exc).__name__}: {exc})")
        finally:
            request.session.clear()
        try:
            claims = dict(token.get("userinfo") or {})
            user = await run_in_threadpool(users.user_for_claims, claims, settings.oidc_default_role)
        except CibleError as exc:
            return _refused(request, 403, exc.message)
        return to_session(request, await run_in_threadpool(sessions.start_session, user), target)

    key = hmac.new(workspace_token.encode(), b"cible oidc state v1", hashlib.sha256).hexdigest()
    app = Starlette(routes=[Route("/login", login), Route("/callback", callback)], middleware=[
        Middleware(SessionMiddleware, secret_key=key, session_cookie=STATE_COOKIE, max_age=STATE_TTL_S,
                   path=PATH, same_site="lax", https_only=False)])
    app.state.studio_sessions = sessions  # what the studio's helpers read from `request.app` (this app here)
    return app


def _refused(request: Request, status_code: int, why: str) -> Response:
    return message_page(request, None, status_code, "Not signed in",
                        f"Sign-in failed: {why}. Try again from the sign-in page.")
