"""Sign-in from outside, end to end: a real OpenID Connect provider (oidc-provider-mock: Authlib's server
over HTTP, in its own process on loopback; its sign-in form takes any subject, which is all it fakes),
a real cible server set up for it, a browser (httpx, its own cookies), and the CLI's `cible login`.

A user is found by the ID token's e-mail; one no user has is refused, naming the command that adds them;
the studio session acts as the user; `cible login` is approved in that session, then the CLI acts as
them with no CIBLE_URL or CIBLE_TOKEN, until `cible logout` revokes its token."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import Workspace

DEADLINE_S = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def issuer():
    port = _free_port()
    provider = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            if httpx.get(f"{url}/.well-known/openid-configuration").status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline or provider.poll() is not None:
                provider.kill()
                raise
        time.sleep(0.05)
    yield url
    provider.kill()
    provider.wait()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, issuer: str):
    workspace = Workspace(tmp_path_factory.mktemp("sign-in"))
    workspace.env.update(CIBLE_OIDC_ISSUER=issuer, CIBLE_OIDC_CLIENT_ID="cible-e2e",
                         CIBLE_OIDC_CLIENT_SECRET="e2e-client-secret", CIBLE_OIDC_NAME="the test provider")
    workspace.cible("user", "create", "--name", "alice", "--role", "data-scientist", "--email", "Alice@Example.com")
    yield workspace
    workspace.stop()


def server_url(ws: Workspace) -> str:
    return json.loads((ws.home / "server.json").read_text())["url"]


def oidc_sign_in(ws: Workspace, subject: str) -> tuple[httpx.Client, httpx.Response]:
    """A browser through the provider's sign-in as `subject` (an e-mail): the browser, and cible's last answer."""
    browser = httpx.Client(base_url=server_url(ws))
    start = browser.get("/sign-in", params={"next": "/computes"})
    assert "Sign in with the test provider" in start.text
    to_provider = browser.get("/auth/oidc/login", params={"next": "/computes"})
    assert to_provider.status_code == 302, to_provider.text
    assert "code_challenge_method=S256" in to_provider.headers["location"]  # PKCE
    back = httpx.post(to_provider.headers["location"], data={"sub": subject})  # the provider's form
    assert back.status_code == 302 and "/auth/oidc/callback?code=" in back.headers["location"]
    return browser, browser.get(back.headers["location"])


def test_the_provider_signs_a_known_user_in_to_the_studio_and_refuses_a_stranger(ws: Workspace) -> None:
    browser, landed = oidc_sign_in(ws, "alice@example.com")
    assert landed.status_code == 303 and landed.headers["location"] == "/computes"
    page = browser.get("/computes")
    assert page.status_code == 200 and ">alice<" in page.text

    _, refused = oidc_sign_in(ws, "eve@example.com")
    assert refused.status_code == 403
    assert "no user of this workspace has the e-mail address eve@example.com" in refused.text
    assert "cible user create --name NAME --role ROLE --email eve@example.com" in refused.text

    replayed = browser.get("/auth/oidc/callback", params={"code": "forged", "state": "forged"})
    assert replayed.status_code == 401 and "Sign-in failed" in replayed.text


def test_cible_login_is_approved_in_the_studio_and_the_cli_then_acts_as_that_user(ws: Workspace,
                                                                                   tmp_path: Path) -> None:
    browser, _ = oidc_sign_in(ws, "alice@example.com")
    laptop = dict(ws.env, CIBLE_HOME=str(tmp_path / "alices-laptop"))  # another machine's CLI: no workspace
    login = subprocess.Popen([sys.executable, "-m", "cible", "login", "--url", server_url(ws), "-o", "json"],
                             env=laptop, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        told = ""
        while "approve the code" not in told:
            line = login.stderr.readline()
            assert line, f"`cible login` ended before printing its code: {told}"
            told += line
        code = re.search(r"code ([B-Z]{4}-[B-Z]{4})", told).group(1)
        page = browser.get("/device", params={"user_code": code})
        assert page.status_code == 200 and "asks to act as <strong>alice</strong>" in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        approved = browser.post("/device", data={"csrf_token": csrf, "user_code": code, "action": "approve"})
        assert approved.status_code == 200
        out, err = login.communicate(timeout=DEADLINE_S)
    finally:
        login.kill()
    assert login.returncode == 0, err
    signed = json.loads(out)
    assert signed["user"] == "alice" and "token" not in signed
    assert (Path(laptop["CIBLE_HOME"]) / "login.json").stat().st_mode & 0o077 == 0

    me = subprocess.run([sys.executable, "-m", "cible", "user", "show", "-o", "json"], env=laptop,
                        capture_output=True, text=True, timeout=DEADLINE_S)
    assert json.loads(me.stdout)["name"] == "alice", me.stderr
    tokens = {t["id"]: t for t in ws.json("token", "list", "--user", "alice")}
    assert tokens[signed["token_id"]]["last_used_at"] is not None

    out = subprocess.run([sys.executable, "-m", "cible", "logout"], env=laptop, capture_output=True, text=True,
                         timeout=DEADLINE_S)
    assert out.returncode == 0 and "Signed out" in out.stdout, out.stderr
    assert not (Path(laptop["CIBLE_HOME"]) / "login.json").exists()
    tokens = {t["id"]: t for t in ws.json("token", "list", "--user", "alice")}
    assert tokens[signed["token_id"]]["state"] == "revoked"


def test_login_without_a_server_named_says_what_to_give(ws: Workspace) -> None:
    refused = ws.cible("login", check=False)
    assert refused.returncode != 0 and "--url: name the team server" in refused.stderr
