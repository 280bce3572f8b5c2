"""`cible login`'s device flow (RFC 8628) over the server's routes, and studio sessions that act as their
user: a code asked with a user's token signs the browser in as that user, held to their role and to what
is theirs; the user approves a CLI's code in the studio and the CLI's next poll gets one token of theirs."""

from __future__ import annotations

import re

import test_studio_sign_in
from fastapi.testclient import TestClient

from cible.client.login import DEVICE_GRANT
from cible.server.store.rows import DeviceLoginRow, UserTokenRow

setup = test_studio_sign_in.setup  # the fixture: (app, API client, browser, clock)


def user_token(api: TestClient, name: str, role: str) -> str:
    assert api.post("/api/v1/users", json={"name": name, "role": role}).status_code == 200
    return api.post("/api/v1/tokens", json={"user": name, "name": "t"}).json()["token"]


def browser_of(app, api: TestClient, token: str) -> TestClient:  # noqa: ANN001
    """A browser signed in to the studio with a link asked for with `token` (as `cible studio` does)."""
    code = api.post("/api/v1/studio:sign-in-code", headers={"Authorization": f"Bearer {token}"}).json()["code"]
    browser = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    assert browser.get("/sign-in", params={"code": code}).status_code == 303
    return browser


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def poll(browser: TestClient, device_code: str):  # noqa: ANN201
    return browser.post("/auth/device/token", data={"grant_type": DEVICE_GRANT, "device_code": device_code})


def test_a_cli_is_signed_in_once_approved_and_gets_one_token(setup) -> None:
    app, api, _, clock = setup
    alice = browser_of(app, api, user_token(api, "alice", "data-scientist"))
    cli = TestClient(app, raise_server_exceptions=False)
    started = cli.post("/auth/device", data={"client": "alices-laptop"}).json()
    assert re.fullmatch(r"[B-Z]{4}-[B-Z]{4}", started["user_code"]) and started["interval"] >= 1
    assert started["verification_uri_complete"].endswith(f"/device?user_code={started['user_code']}")

    assert poll(cli, started["device_code"]).json()["error"] == "authorization_pending"
    assert poll(cli, started["device_code"]).json()["error"] == "slow_down"  # faster than the interval
    clock.advance(started["interval"])

    page = alice.get("/device", params={"user_code": started["user_code"].lower().replace("-", "")})  # as typed
    assert page.status_code == 200 and "alices-laptop" in page.text and "alice" in page.text
    refused = alice.post("/device", data={"user_code": started["user_code"], "action": "approve"})  # no CSRF token
    assert refused.status_code == 403
    approved = alice.post("/device", data={"csrf_token": csrf_of(page.text), "user_code": started["user_code"],
                                           "action": "approve"})
    assert approved.status_code == 200 and "now acts as alice" in approved.text

    made = poll(cli, started["device_code"])
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    body = made.json()
    assert body["user"] == "alice" and body["access_token"].startswith("cible-pat.")
    me = api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["name"] == "alice" and me["role"] == "AzureML Data Scientist"
    assert poll(cli, started["device_code"]).json()["error"] == "invalid_grant"  # one token per device code
    with app.state.store.session() as session:
        assert session.query(DeviceLoginRow).count() == 0
        names = [t.name for t in session.query(UserTokenRow).filter_by(user="alice")]
    assert sorted(names) == ["login-alices-laptop", "t"]


def test_a_denied_or_expired_code_gives_no_token_and_a_clear_error(setup) -> None:
    app, api, _, clock = setup
    bob = browser_of(app, api, user_token(api, "bob", "reader"))
    cli = TestClient(app, raise_server_exceptions=False)
    denied = cli.post("/auth/device", data={"client": "x"}).json()
    page = bob.get("/device", params={"user_code": denied["user_code"]})
    bob.post("/device", data={"csrf_token": csrf_of(page.text), "user_code": denied["user_code"], "action": "deny"})
    assert poll(cli, denied["device_code"]).json()["error"] == "access_denied"

    late = cli.post("/auth/device", data={"client": "x"}).json()
    clock.advance(late["expires_in"] + 1)
    assert bob.get("/device", params={"user_code": late["user_code"]}).status_code == 404
    assert poll(cli, late["device_code"]).json()["error"] == "expired_token"
    assert poll(cli, "not-a-device-code").json()["error"] == "invalid_grant"
    wrong = cli.post("/auth/device/token", data={"grant_type": "password", "device_code": late["device_code"]})
    assert wrong.status_code == 400 and wrong.json()["error"] == "unsupported_grant_type"


def test_a_studio_session_acts_as_its_user_held_to_their_role_and_what_is_theirs(setup) -> None:
    app, api, _, _ = setup
    kim = user_token(api, "kim", "data-scientist")
    rita = browser_of(app, api, user_token(api, "rita", "reader"))
    lee = browser_of(app, api, user_token(api, "lee", "data-scientist"))
    api.put("/api/v1/jobs/kims-job", json={"command": "sleep 60"}, headers={"Authorization": f"Bearer {kim}"})

    page = lee.get("/jobs/kims-job")
    assert page.status_code == 200
    refused = lee.post("/jobs/kims-job/cancel", headers={"X-CSRF-Token": csrf_of(page.text)})
    assert refused.status_code == 409 and "submitted by &#39;kim&#39;" in refused.text
    page = rita.get("/jobs/kims-job")
    refused = rita.post("/jobs/kims-job/cancel", headers={"X-CSRF-Token": csrf_of(page.text)})
    assert refused.status_code == 409 and "jobs/cancel" in refused.text
    assert api.get("/api/v1/jobs/kims-job").json()["status"] != "CancelRequested"


def test_a_removed_user_is_signed_out_of_the_studio(setup) -> None:
    app, api, _, _ = setup
    sam = browser_of(app, api, user_token(api, "sam", "reader"))
    assert sam.get("/jobs").status_code == 200
    api.delete("/api/v1/users/sam")
    assert sam.get("/jobs").status_code == 303


def test_a_personal_token_typed_in_signs_in_as_its_user(setup) -> None:
    app, api, _, _ = setup
    token = user_token(api, "tess", "reader")
    browser = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    signed = browser.post("/sign-in", data={"token": token, "next": "/jobs"})
    assert signed.status_code == 303
    assert "tess" in browser.get("/jobs").text
