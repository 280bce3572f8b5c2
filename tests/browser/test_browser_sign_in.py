"""Signing in as a new user would: the link `cible studio` prints, the "Web View" link `cible job
create` prints, the workspace token typed in; what a browser without a session sees; the cookie."""

from __future__ import annotations

import re
import shlex
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_support import Studio, expect
from e2e_support import Workspace, write_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


@pytest.fixture(scope="module")
def job(workspace: Workspace) -> tuple[str, str]:
    """A short job on `local`, and the Web View link `cible job create` printed for it."""
    spec = write_yaml(workspace.cwd, "hello.yml", """
        command: echo hello from the studio test
        compute: local
        experiment_name: studio
        """)
    made = workspace.cible("job", "create", "-f", spec, "-n", "hello-studio")
    found = re.search(r"Web View:?\s+(http\S+)", made.stdout + made.stderr)
    assert found, f"`cible job create` printed no Web View link:\n{made.stdout}\n{made.stderr}"
    workspace.wait_status("hello-studio")
    return "hello-studio", found.group(1)


def test_the_printed_link_signs_in_once_with_an_httponly_samesite_cookie(studio: Studio, workspace: Workspace,
                                                                          job: tuple[str, str]) -> None:
    name, _ = job
    context = studio.context()
    try:
        page = studio.page(context)
        link = studio.link(f"/jobs/{name}")
        response = page.goto(link)
        assert urlsplit(page.url).path == f"/jobs/{name}", page.url
        assert "code=" not in page.url, f"the sign-in code stayed in the URL: {page.url}"
        assert response is not None and response.status == 200, (response and response.status, page.url)
        assert page.locator("#job-status").is_visible()
        studio.look(page, "job-after-sign-in")

        cookies = context.cookies()
        assert [c["name"] for c in cookies] == ["cible_studio"], cookies
        cookie = cookies[0]
        assert cookie["httpOnly"] is True and cookie["sameSite"] in ("Lax", "Strict"), cookie
        assert cookie["expires"] > 0, f"a session cookie should expire: {cookie}"
        assert page.evaluate("document.cookie") == "", "scripts can read the session cookie"
        html = page.content()
        token = (workspace.home / "token").read_text().strip()
        assert token not in html and token not in page.url, "the workspace token is in the page"
        assert cookie["value"] not in html, "the session secret is in the page"

        # The cookie opens the studio's pages, not the REST API (it keeps its bearer token).
        api = context.request.get(f"{studio.url}/api/v1/jobs")
        assert api.status == 401, (api.status, api.text()[:200])

        # The same link, opened again: spent.
        again = page.goto(link)
        assert urlsplit(page.url).path == "/sign-in", page.url
        assert again is not None and again.status == 401
        assert "used already" in page.locator("[role=alert]").inner_text()
        studio.look(page, "sign-in-link-used")
    finally:
        context.close()


def test_without_a_session_a_page_shows_the_sign_in_page_not_a_401(studio: Studio, job: tuple[str, str]) -> None:
    name, _ = job
    context = studio.context()
    try:
        page = studio.page(context)
        for path in ("/", "/jobs", f"/jobs/{name}", f"/jobs/{name}/log", "/computes"):
            response = page.goto(studio.base_url() + path)
            assert response is not None and response.status == 200, (path, response and response.status)
            parts = urlsplit(page.url)
            assert parts.path == "/sign-in", (path, page.url)
            assert page.locator("h1").inner_text().startswith("Sign in"), path
        page.goto(studio.base_url() + "/jobs")
        studio.look(page, "sign-in")
        assert context.cookies() == []
    finally:
        context.close()


def test_the_web_view_link_leads_to_the_job_page_after_sign_in(studio: Studio, workspace: Workspace,
                                                               job: tuple[str, str]) -> None:
    name, web_view = job
    assert urlsplit(web_view).path == f"/jobs/{name}" and "code" not in web_view, web_view
    context = studio.context()
    try:
        page = studio.page(context)
        page.goto(web_view)
        parts = urlsplit(page.url)
        assert parts.path == "/sign-in" and parse_qs(parts.query).get("next") == [f"/jobs/{name}"], page.url
        # The page says what to run; run exactly that, and open the link it prints.
        said = page.locator("pre.command").inner_text().strip()
        assert said == f"cible studio /jobs/{name}", said
        args = shlex.split(said)[1:]
        printed = workspace.cible(*args).stdout.strip()
        page.goto(printed)
        studio.wait_path(page, f"/jobs/{name}")
        expect(page.locator("main")).to_contain_text(name)
        expect(page.locator("#job-status")).to_have_text("Completed", timeout=30_000)
        # With a session, the Web View link opens the job's page at once.
        page.goto(web_view)
        assert urlsplit(page.url).path == f"/jobs/{name}", page.url
        studio.ended_job_page_settled(page)
        studio.look(page, "job-completed")
    finally:
        context.close()


def test_signing_in_with_the_workspace_token(studio: Studio, workspace: Workspace) -> None:
    context = studio.context()
    try:
        page = studio.page(context)
        page.goto(studio.base_url() + "/computes")
        assert urlsplit(page.url).path == "/sign-in"
        page.locator("details summary").click()
        page.get_by_label(re.compile("Workspace token")).fill((workspace.home / "token").read_text().strip())
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        problem = page.locator("[role=alert]")
        assert not problem.count(), f"signing in with the token was refused: {problem.inner_text()}"
        studio.wait_path(page, "/computes")
        assert "token" not in page.url
        assert [c["name"] for c in context.cookies()] == ["cible_studio"]
    finally:
        context.close()


def test_signing_out(studio: Studio) -> None:
    context, page = studio.signed_in("/jobs")
    try:
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_load_state()
        ended = page.locator("main").inner_text()[:300]
        assert urlsplit(page.url).path == "/sign-in", f"signing out ended on {page.url}: {ended}"
        assert context.cookies() == []
        page.goto(studio.base_url() + "/jobs")
        assert urlsplit(page.url).path == "/sign-in"
    finally:
        context.close()
