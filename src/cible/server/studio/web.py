"""What every studio page shares: the session check, CSRF on actions, rendering and its filters.

A page route takes `viewer: Viewer` (a session is required: without one the browser is sent to the
sign-in page, an htmx request through HX-Redirect) and, for an action, `_: Checked` as well (its
CSRF token, from the X-CSRF-Token header htmx sends or a form's `csrf_token` field). Pages render
with `render(request, viewer, "area/page.html", **context)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cible.core.errors import ForbiddenError
from cible.core.roles import ADMIN_ROLES, OWNER, allows, permission_for, roles_with
from cible.server.studio.sessions import COOKIE, StudioSessions
from cible.server.tokens import Scope

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescaped

# Every studio answer: scripts and styles from this server only (no inline script: the CSRF token
# is in an attribute, never in a script), never framed, never cached, a Referer only to this server (a
# sign-in link's code never leaves in one; Chromium sends `Origin: null` on forms under no-referrer).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'; object-src 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

STATUS_CLASSES = {  # the badge colour of each job status: running, done, failed, waiting, stopped
    "Running": "run", "Finalizing": "run", "Starting": "run", "Preparing": "run", "Provisioning": "run",
    "Completed": "ok", "Succeeded": "ok", "Failed": "bad", "NotResponding": "bad",
    "Queued": "wait", "NotStarted": "wait", "CancelRequested": "stop", "Canceled": "stop",
}


@dataclass(frozen=True)
class Viewer:
    """A signed-in browser: its session secret (never rendered), its CSRF token (rendered), and the user
    it acts as with their role."""

    secret: str
    csrf: str
    user: str = ""
    role: str = OWNER

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES

    def require(self, method: str, api_path: str) -> None:
        """Refuse (403, as the API would) an action whose REST route the viewer's role may not use."""
        permission = permission_for(method, api_path)
        if not allows(self.role, permission):
            raise ForbiddenError(f"user '{self.user}' ({self.role}) may not do this: it needs the permission "
                                 f"{permission}, which {', '.join(roles_with(permission)) or 'no role'} has",
                                 details={"permission": permission})


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class CsrfRefused(Exception):
    pass


def sessions_of(request: Request) -> StudioSessions:
    return request.app.state.studio_sessions


def viewer(request: Request) -> Viewer:
    """The signed-in browser, acting as its session's user (identity.py reads it from the request's
    state, as for a personal token); a user removed since is signed out."""
    secret = request.cookies.get(COOKIE)
    sessions = sessions_of(request)
    signed = sessions.signed_in(secret)
    users = request.app.state.users
    role = None
    if signed is not None:
        role = OWNER if signed.user is None else users.role_of(signed.user)
        if role is None:  # the user was removed: their sessions end with them
            sessions.end(secret)
    if signed is None or role is None:
        raise SignInRequired(page_of(request))
    user = signed.user or users.owner_name()
    request.state.token_scope = Scope("user", user, role=role)
    return Viewer(secret, sessions.csrf_token(secret), user, role)


def page_of(request: Request) -> str:
    """The page to come back to after sign-in: the one a poll or an action came from (htmx's
    HX-Current-URL, studio.js's X-Studio-Page), else the URL asked for; never a fragment."""
    if request.headers.get("hx-request"):
        came_from = urlsplit(request.headers.get("hx-current-url") or request.headers.get("x-studio-page") or "/")
        if came_from.netloc and came_from.netloc != request.url.netloc:
            return "/jobs"
        return came_from.path + (f"?{came_from.query}" if came_from.query else "")
    if request.method != "GET":
        return "/jobs"
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def checked(request: Request, who: Annotated[Viewer, Depends(viewer)]) -> Viewer:
    """The viewer of an action, once its CSRF token and origin are right."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfRefused()
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        given = form_field(await request.body(), "csrf_token")
    if not sessions_of(request).csrf_ok(who.secret, given):
        raise CsrfRefused()
    return who


Signed = Annotated[Viewer, Depends(viewer)]  # a page or data route
Checked = Annotated[Viewer, Depends(checked)]  # an action


def form_field(body: bytes, name: str) -> str | None:
    values = parse_qs(body.decode("utf-8", "replace")).get(name)
    return values[0] if values else None


def sign_in_redirect(request: Request, next_path: str) -> Response:
    target = f"/sign-in?next={quote(safe_next(next_path), safe='')}"
    if request.headers.get("hx-request"):  # htmx would swap the sign-in page into a fragment
        return Response(status_code=204, headers={"HX-Redirect": target, **SECURITY_HEADERS})
    return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)


def safe_next(path: str | None) -> str:
    """Where to go after sign-in: a path of this server only (never `//host` or a scheme)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or "\n" in path:
        return "/jobs"
    return path


def render(request: Request, who: Viewer | None, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context = {"csrf": who.csrf if who else "", "signed_in": who is not None, "path": request.url.path,
               "viewer_user": who.user if who else "", "viewer_role": who.role if who else "", **context}
    return templates.TemplateResponse(request, template, context, status_code=status_code, headers=SECURITY_HEADERS)


def message_page(request: Request, who: Viewer | None, status_code: int, title: str, message: str) -> HTMLResponse:
    return render(request, who, "message.html", status_code=status_code, title=title, message=message)


# -- filters ---------------------------------------------------------------------------------------
def as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def when(value: Any) -> str:
    """A time as people read it, in UTC: 2026-12-05 14:03:07."""
    at = as_datetime(value)
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "—"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or math.isnan(seconds):
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours < 48 else f"{hours // 24}d {hours % 24}h"


def between(start: Any, end: Any = None) -> str:
    """How long from `start` to `end` (or to now)."""
    begun = as_datetime(start)
    if begun is None:
        return "—"
    ended = as_datetime(end) or datetime.now(timezone.utc)
    return duration((ended - begun).total_seconds())


def money(value: Any) -> str:
    if value is None:
        return "—"
    amount = float(value)
    return f"${amount:,.4f}" if 0 < abs(amount) < 0.01 else f"${amount:,.2f}"


def size(value: Any) -> str:
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def status_class(status: Any) -> str:
    return STATUS_CLASSES.get(str(status), "other")


templates.env.filters.update(when=when, duration=duration, between=between, money=money, size=size,
                             status_class=status_class, urlpart=lambda v: quote(str(v), safe=""))
