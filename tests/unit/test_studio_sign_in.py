"""Studio sign-in: one-use codes, sessions that expire, CSRF on actions, and a cookie that opens
the studio only (the REST API keeps its bearer token)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cible.server.app import create_app
from cible.server.settings import ServerSettings
from cible.server.store.rows import StudioGrantRow
from cible.server.studio.sessions import COOKIE, StudioSessions
from cible.server.studio.web import safe_next
from cible.testing import FrozenClock

TOKEN = "workspace-token-that-must-never-show-in-a-page"
SIGNED_PAGE = "/runs/some-run"  # a page that needs a session (a 404 page here: tracking is off)


@pytest.fixture
def setup(tmp_path: Path):
    clock = FrozenClock()
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path}/db.sqlite",
                                    tracking=False), TOKEN, clock, reconcile=False)
    api = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False)
    browser = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    yield app, api, browser, clock
    app.state.store.close()


def code_of(api: TestClient) -> str:
    answer = api.post("/api/v1/studio:sign-in-code")
    assert answer.status_code == 200
    return answer.json()["code"]


def sign_in(api: TestClient, browser: TestClient, next_path: str = "/jobs"):  # noqa: ANN201
    return browser.get("/sign-in", params={"code": code_of(api), "next": next_path})


def test_a_page_without_a_session_redirects_to_sign_in_never_a_raw_401(setup) -> None:
    _, _, browser, _ = setup
    answer = browser.get("/runs/my-run?x=1")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?next=%2Fruns%2Fmy-run%3Fx%3D1"
    page = browser.get(answer.headers["location"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "cible studio &#39;/runs/my-run?x=1&#39;" in page.text  # how to get a link for that page
    htmx = browser.get("/runs/my-run", headers={"HX-Request": "true"})  # a fragment's poll: the whole page moves
    assert htmx.headers["HX-Redirect"].startswith("/sign-in?next=")


def test_a_printed_link_signs_in_once_and_lands_on_a_url_without_its_code(setup) -> None:
    app, api, browser, _ = setup
    code = code_of(api)
    answer = browser.get("/sign-in", params={"code": code, "next": "/jobs/a"})
    assert answer.status_code == 303 and answer.headers["location"] == "/jobs/a"
    cookie = answer.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert browser.get(SIGNED_PAGE).status_code == 404  # in: the page itself answers
    with app.state.store.session() as session:  # only digests are kept
        kept = {row.digest for row in session.query(StudioGrantRow)}
    assert code not in kept and browser.cookies[COOKIE] not in kept
    assert app.state.studio_sessions.digest(browser.cookies[COOKIE]) in kept
    again = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    reused = again.get("/sign-in", params={"code": code})
    assert reused.status_code == 401 and "used already or has expired" in reused.text
    assert COOKIE not in again.cookies


def test_codes_and_sessions_expire(setup) -> None:
    app, api, browser, clock = setup
    code = code_of(api)
    clock.advance(app.state.settings.studio_code_ttl_s + 1)
    assert browser.get("/sign-in", params={"code": code}).status_code == 401
    assert sign_in(api, browser).status_code == 303
    assert browser.get(SIGNED_PAGE).status_code == 404
    clock.advance(app.state.settings.studio_session_ttl_s + 1)
    assert browser.get(SIGNED_PAGE).status_code == 303


def test_the_workspace_token_typed_in_signs_in_and_a_wrong_one_says_so(setup) -> None:
    _, _, browser, _ = setup
    wrong = browser.post("/sign-in", data={"token": "nope", "next": "/computes"})
    assert wrong.status_code == 401 and "neither this workspace" in wrong.text
    other_site = browser.post("/sign-in", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert other_site.status_code == 403 and COOKIE not in browser.cookies
    right = browser.post("/sign-in", data={"token": TOKEN, "next": "/computes"})
    assert right.status_code == 303 and right.headers["location"] == "/computes"
    assert browser.get(SIGNED_PAGE).status_code == 404


def test_sign_out_needs_the_csrf_token_and_ends_the_session_for_good(setup) -> None:
    app, api, browser, _ = setup
    sign_in(api, browser)
    secret = browser.cookies[COOKIE]
    assert browser.post("/sign-out").status_code == 403  # no CSRF token
    assert browser.post("/sign-out", headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    csrf = app.state.studio_sessions.csrf_token(secret)
    assert browser.post("/sign-out", headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"}).status_code == 403
    assert browser.post("/sign-out", data={"csrf_token": csrf}).status_code == 303
    browser.cookies.set(COOKIE, secret)  # a copy of the cookie kept after sign-out opens nothing
    assert browser.get(SIGNED_PAGE).status_code == 303


def test_the_cookie_opens_the_studio_only_never_the_api(setup) -> None:
    _, api, browser, _ = setup
    sign_in(api, browser)
    assert browser.get("/api/v1/jobs").status_code == 401
    assert browser.post("/api/v1/studio:sign-in-code").status_code == 401


def test_pages_carry_no_token_and_strict_headers(setup) -> None:
    _, api, browser, _ = setup
    signed = sign_in(api, browser, "/jobs")
    page = browser.get(SIGNED_PAGE)
    for answer in (page, browser.get("/sign-in")):
        assert TOKEN not in answer.text and TOKEN not in str(answer.headers)
    assert signed.headers["location"] == "/jobs"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("given,expected", [
    ("/jobs/a?b=1", "/jobs/a?b=1"), ("//evil.example/x", "/jobs"), ("https://evil.example", "/jobs"),
    ("/\\evil.example", "/jobs"), ("", "/jobs"), (None, "/jobs"), ("jobs", "/jobs")])
def test_after_sign_in_only_a_path_of_this_server(given, expected) -> None:
    assert safe_next(given) == expected


def test_a_browser_opening_an_mlflow_run_link_is_led_to_the_studio(setup) -> None:
    _, _, browser, _ = setup
    answer = browser.get("/mlflow/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert answer.status_code == 303 and answer.headers["location"] == "/static/mlflow-run.html"
    assert browser.get("/static/mlflow-run.html").status_code == 200
    assert browser.get("/mlflow/", headers={"Accept": "application/json"}).status_code == 401  # a client: as before
    assert browser.get("/mlflow/ajax-api/2.0/mlflow/runs/get", headers={"Accept": "text/html"}).status_code == 401


def test_a_poll_that_finds_the_session_gone_brings_the_browser_back_to_its_page(setup) -> None:
    _, _, browser, _ = setup
    polled = browser.get("/runs/r", headers={"HX-Request": "true",
                                                     "HX-Current-URL": "http://testserver/jobs/j1?tab=log"})
    assert polled.headers["HX-Redirect"] == "/sign-in?next=%2Fjobs%2Fj1%3Ftab%3Dlog"  # the page, not the fragment
    fetched = browser.get("/runs/r", headers={"HX-Request": "true", "X-Studio-Page": "/jobs/j2"})
    assert fetched.headers["HX-Redirect"] == "/sign-in?next=%2Fjobs%2Fj2"
    elsewhere = browser.get("/runs/r", headers={"HX-Request": "true", "HX-Current-URL": "http://evil.example/x"})
    assert elsewhere.headers["HX-Redirect"] == "/sign-in?next=%2Fjobs"


def test_the_sign_in_page_quotes_the_command_for_a_shell(setup) -> None:
    _, _, browser, _ = setup
    page = browser.get("/sign-in", params={"next": "/jobs?status=Queued&compute=local"})
    assert "cible studio &#39;/jobs?status=Queued&amp;compute=local&#39;" in page.text


def test_a_code_is_spent_once_and_a_session_secret_is_no_code(setup) -> None:
    app, api, _, _ = setup
    code = code_of(api)
    sessions = app.state.studio_sessions
    assert sessions.redeem(code) is not None
    assert sessions.redeem(code) is None
    assert sessions.redeem("") is None and sessions.redeem("not-a-code") is None
    session_secret = sessions.start_session(None)
    assert sessions.redeem(session_secret) is None  # a session's secret is not a code
    assert sessions.signed_in(session_secret) is not None


def test_a_bad_address_in_a_browser_is_a_page_while_the_api_keeps_its_json(setup) -> None:
    _, api, browser, _ = setup
    sign_in(api, browser)
    unknown = browser.get("/no-such-page")
    assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]
    assert "There is no page at this address" in unknown.text
    invalid = browser.get("/jobs/x/log", params={"offset": "-1"})
    assert invalid.status_code == 400 and "text/html" in invalid.headers["content-type"]
    assert "offset" in invalid.text
    assert api.get("/api/v1/no-such-route").headers["content-type"] == "application/json"
    refused = api.get("/api/v1/jobs", params={"top": "-1"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "InvalidRequest"
    assert browser.get("/static/no-such-file.js").status_code == 404


def test_a_new_workspace_token_signs_every_browser_out(setup) -> None:
    app, api, browser, clock = setup
    sign_in(api, browser)
    secret = browser.cookies[COOKIE]
    code = code_of(api)
    assert app.state.studio_sessions.signed_in(secret) is not None
    rotated = StudioSessions(app.state.store, clock, TOKEN + "-rotated", session_ttl_s=3600, code_ttl_s=300)
    assert rotated.signed_in(secret) is None  # the same rows, read under the new token's key
    assert rotated.redeem(code) is None


def test_static_files_carry_the_studio_headers_and_are_revalidated(setup) -> None:
    _, _, browser, _ = setup
    script = browser.get("/static/studio.js")
    assert script.status_code == 200
    assert "script-src 'self'" in script.headers["content-security-policy"]
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["cache-control"] == "no-cache"  # an upgraded server's scripts are fetched again
