"""The studio: the workspace in a browser, served by the workspace server at `/`.

Server-rendered pages (Jinja2) with htmx for the live parts and uPlot for metric charts, both
vendored under static/vendor (no build step, nothing fetched at install or run time). Sessions and
CSRF: sessions.py; the page plumbing: web.py; the pages: pages/.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from cible.server.studio.pages import assets, computes, endpoints, jobs, parents, runs, sign_in
from cible.server.studio.sessions import StudioSessions
from cible.server.studio.web import HERE, CsrfRefused, SignInRequired, message_page, sign_in_redirect


def install_studio(app: FastAPI, sessions: StudioSessions) -> None:
    app.state.studio_sessions = sessions
    app.include_router(sign_in.api)
    for pages in (sign_in, jobs, computes, assets, parents, endpoints, runs):
        app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="studio-static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request, exc.next_path)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        return message_page(request, None, 403, "Refused",
                            "This action did not carry this page's check token (CSRF). Reload the page and try "
                            "again.")
