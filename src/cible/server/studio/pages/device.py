"""`cible login` (RFC 8628's device flow): the CLI's two public routes, and the studio page where a
signed-in user approves the code the CLI printed (services/device_logins.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cible.client.login import DEVICE_GRANT
from cible.server.services.device_logins import DeviceLoginError, DeviceLogins
from cible.server.studio.web import Checked, Signed, form_field, message_page, render

router = APIRouter(include_in_schema=False)
NO_STORE = {"cache-control": "no-store"}  # RFC 6749 §5.1: answers with secrets are not cached


def _logins(request: Request) -> DeviceLogins:
    return request.app.state.device_logins


@router.post("/auth/device")
async def start(request: Request) -> Response:
    """RFC 8628 §3.1-3.2 (form-encoded; `client` names the machine, shown to whoever approves)."""
    client = form_field(await request.body(), "client") or "a CLI"
    started = _logins(request).start(client)
    base = f"{request.url.scheme}://{request.url.netloc}/device"
    return JSONResponse({**started, "verification_uri": base,
                         "verification_uri_complete": f"{base}?user_code={started['user_code']}"}, headers=NO_STORE)


@router.post("/auth/device/token")
async def token(request: Request) -> Response:
    """RFC 8628 §3.4-3.5: the token once approved; until then 400 with `authorization_pending` (or why not)."""
    body = await request.body()
    if form_field(body, "grant_type") != DEVICE_GRANT:
        return _error("unsupported_grant_type", f"grant_type must be {DEVICE_GRANT}")
    try:
        made = _logins(request).poll(form_field(body, "device_code") or "")
    except DeviceLoginError as exc:
        return _error(exc.error, exc.description)
    return JSONResponse({"access_token": made["token"], "token_type": "Bearer", "token_id": made["id"],
                         "user": made["user"], "expires_at": made["expires_at"]}, headers=NO_STORE)


@router.get("/device")
def device_page(request: Request, who: Signed, user_code: str | None = None) -> Response:
    pending = _logins(request).pending(user_code) if user_code else None
    problem = None if pending or not user_code else (
        f"No sign-in waits for the code {user_code}: it was used, denied or has expired. Run `cible login` again.")
    return render(request, who, "device.html", status_code=404 if problem else 200, pending=pending, problem=problem,
                  user=who.user, role=who.role, days=f"{request.app.state.settings.login_token_days:g}")


@router.post("/device")
async def decide(request: Request, who: Checked) -> Response:
    body = await request.body()
    approve = form_field(body, "action") == "approve"
    if not _logins(request).decide(form_field(body, "user_code") or "", who.user, approve):
        return message_page(request, who, 404, "Nothing to approve", "That code was used, denied or has expired. Run "
                                                                     "`cible login` again.")
    return message_page(request, who, 200, "CLI signed in" if approve else "Sign-in denied",
                        f"The CLI now acts as {who.user}; you may close this page." if approve else
                        "The CLI was not signed in.")


def _error(error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=400, headers=NO_STORE)
