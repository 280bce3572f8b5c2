"""The studio: the workspace in a browser, served by the workspace server at `/`.

Server-rendered pages (Jinja2) with htmx for the live parts and uPlot for metric charts, both
vendored under static/vendor (no build step, nothing fetched at install or run time). Sessions and
CSRF: sessions.py; the page plumbing: web.py; the pages: pages/.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from cible.server.studio.pages import sign_in
from cible.server.studio.sessions import StudioSessions
from cible.server.studio.web import HERE, CsrfRefused, SignInRequired, message_page, sign_in_redirect

PAGE_MODULES = ("jobs", "computes", "assets", "parents", "endpoints", "runs")  # pages/<name>.py, each a `router`


def install_studio(app: FastAPI, sessions: StudioSessions) -> None:
    import importlib

    app.state.studio_sessions = sessions
    app.include_router(sign_in.api)
    app.include_router(sign_in.router)
    for name in PAGE_MODULES:
        try:
            module = importlib.import_module(f"cible.server.studio.pages.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cible.server.studio.pages.{name}":
                raise
            continue
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="studio-static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request, exc.next_path)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        return message_page(request, None, 403, "Refused",
                            "This action did not carry this page's check token (CSRF). Reload the page and try "
                            "again.")
