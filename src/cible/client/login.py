"""`cible login`: a CLI signed in to a team server through a browser (RFC 8628's device flow), and the
login it keeps.

The server hands out a user code; its user approves it in the studio (signed in there through OIDC, a
link or a token); the CLI, polling, gets a personal token of theirs. The login is kept in
`$CIBLE_HOME/login.json` (0600: the CLI's token file; the token's secret is nowhere else on this machine),
and MLClient uses it while no CIBLE_URL or CIBLE_TOKEN says otherwise: `cible logout` revokes the token
and forgets it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.core.errors import ServerUnavailableError, UnauthorizedError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
LOGIN_FILE = "login.json"
SLOW_DOWN_S = 5  # RFC 8628 §3.5: a slow_down adds this to the interval


def saved_login(home: Path) -> dict[str, Any] | None:
    """The login `cible login` kept in `home`: url, token, user, token_id, expires_at; None without one."""
    try:
        saved = json.loads((home / LOGIN_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("url") and saved.get("token") else None


def save_login(home: Path, login: dict[str, Any]) -> Path:
    """Keep `login` (written whole, readable by this user alone)."""
    home.mkdir(parents=True, exist_ok=True)
    path, partial = home / LOGIN_FILE, home / f".{LOGIN_FILE}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(login, file)
    os.replace(partial, path)
    return path


def forget_login(home: Path) -> None:
    (home / LOGIN_FILE).unlink(missing_ok=True)


def device_login(url: str, client: str, show_code: Callable[[dict[str, Any]], None], *,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Sign in at `url`: `show_code` gets the server's codes and page to tell the user; the answer, once
    approved in a browser, holds the new token (`access_token`), its `token_id`, `user` and `expires_at`."""
    import httpx

    from cible.client.http import tls_verify

    base = url.rstrip("/")
    with httpx.Client(base_url=base, timeout=30, verify=tls_verify(base)) as http:
        try:
            started = http.post("/auth/device", data={"client": client})
            if started.status_code == 404:
                raise UnauthorizedError(f"{base} offers no `cible login` (a cible older than this CLI?): use a "
                                        "personal token (CIBLE_URL and CIBLE_TOKEN)")
            started.raise_for_status()
            codes = started.json()
            show_code(codes)
            interval, deadline = float(codes["interval"]), time.monotonic() + float(codes["expires_in"])
            while time.monotonic() < deadline:
                sleep(interval)
                answer = http.post("/auth/device/token", data={"grant_type": DEVICE_GRANT,
                                                               "device_code": codes["device_code"]})
                if answer.status_code == 200:
                    return answer.json()
                error = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
                if error.get("error") == "slow_down":
                    interval += SLOW_DOWN_S
                elif error.get("error") != "authorization_pending":
                    raise UnauthorizedError(f"not signed in: {error.get('error_description') or answer.text[:200]}")
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"cannot reach the cible server at {base}: {exc}") from None
        except httpx.HTTPStatusError as exc:
            raise ServerUnavailableError(f"{base} answered {exc.response.status_code} to a sign-in: is it a cible "
                                         "server?") from None
    raise UnauthorizedError("not signed in: the code expired before it was approved; run `cible login` again")
