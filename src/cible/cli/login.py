"""`cible login` and `cible logout`: a CLI signed in to a team server through a browser (client/login.py)."""

from __future__ import annotations

import os
import socket
from typing import Annotated, Optional

import typer

from cible.cli.output import console, emit, err_console


def login(
    url: Annotated[Optional[str], typer.Option("--url", help="the team server (default: $CIBLE_URL)")] = None,
    open_: Annotated[bool, typer.Option("--open", help="open the approval page in this machine's browser")] = False,
) -> None:
    """Sign this CLI in to a team server: approve the code it prints in the server's studio (OIDC or
    another sign-in there); it then acts as you, with a personal token it keeps until `cible logout`."""
    import webbrowser

    from cible.client.login import device_login, save_login
    from cible.core.errors import InvalidRequestError
    from cible.workspace import default_home

    url = url or os.environ.get("CIBLE_URL")
    if not url:
        raise InvalidRequestError("--url: name the team server to sign in to (e.g. --url https://cible.example.org); "
                                  "the local workspace needs no sign-in")

    def show(codes: dict) -> None:
        err_console.print(f"Open {codes['verification_uri_complete']}\nand approve the code {codes['user_code']} "
                          f"(within {codes['expires_in'] // 60} minutes).", highlight=False, soft_wrap=True)
        if open_ and not webbrowser.open(codes["verification_uri_complete"]):
            err_console.print("No browser could be opened here: open the link above in yours.", highlight=False)

    made = device_login(url, socket.gethostname(), show)
    login_ = {"url": url.rstrip("/"), "token": made["access_token"], "user": made["user"],
              "token_id": made["token_id"], "expires_at": made.get("expires_at")}
    path = save_login(default_home(), login_)
    shown = {k: v for k, v in login_.items() if k != "token"} | {"kept_in": str(path)}
    emit(shown, lambda answer: console.print(
        f"Signed in to {answer['url']} as {answer['user']} (token {answer['token_id']}, until "
        f"{answer['expires_at'] or 'revoked'}); `cible logout` signs out.", highlight=False))


def logout() -> None:
    """Sign this CLI out of the server `cible login` signed it in to: its token is revoked and forgotten."""
    from cible.client.http import WorkspaceClient
    from cible.client.login import forget_login, saved_login
    from cible.core.errors import CibleError
    from cible.workspace import default_home

    home = default_home()
    saved = saved_login(home)
    if saved is None:
        emit({"signed_out": False}, lambda _: console.print("Not signed in (`cible login` signs in).", highlight=False))
        return
    revoked = True
    try:
        WorkspaceClient(saved["url"], saved["token"]).json("POST", f"/tokens/{saved['token_id']}:revoke")
    except CibleError as exc:  # expired or revoked already, or the server is away: forgotten here all the same
        revoked = False
        err_console.print(f"the token could not be revoked ({exc}); it is forgotten here", highlight=False)
    forget_login(home)
    emit({"signed_out": True, "url": saved["url"], "revoked": revoked}, lambda answer: console.print(
        f"Signed out of {answer['url']}.", highlight=False))
