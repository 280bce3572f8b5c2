"""The studio: the workspace in a browser, served by the workspace server at `/`.

Server-rendered pages (Jinja2) with htmx for the live parts and uPlot for metric charts, both
vendored under static/vendor (no build step, nothing fetched at install or run time). Sessions and
CSRF: sessions.py; the page plumbing: web.py; the pages: pages/.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cible.server.errors import validation_problems

from cible.server.studio.pages import assets, computes, device, endpoints, jobs, parents, runs, sign_in
from cible.server.studio.sessions import StudioSessions
from cible.server.studio.web import HERE, SECURITY_HEADERS, CsrfRefused, SignInRequired, message_page, sign_in_redirect


class StudioStatic(StaticFiles):
    """The studio's scripts and styles, with its headers; cached, but revalidated (ETag) on each use."""

    async def get_response(self, path: str, scope) -> Response:  # noqa: ANN001
        response = await super().get_response(path, scope)
        response.headers.update({**SECURITY_HEADERS, "cache-control": "no-cache"})
        return response


def is_page(path: str) -> bool:
    """A studio address: neither the API's, MLflow's nor a static file's."""
    return not path.startswith(("/api/", "/mlflow", "/static/")) and path != "/api"


def install_studio(app: FastAPI, sessions: StudioSessions) -> None:
    app.state.studio_sessions = sessions
    app.include_router(sign_in.api)
    for pages in (sign_in, device, jobs, computes, assets, parents, endpoints, runs):
        app.include_router(pages.router)
    app.mount("/static", StudioStatic(directory=str(HERE / "static")), name="studio-static")

    # A browser's bad URL (an unknown page, `?offset=-1`) gets a page saying so, not the API's JSON.
    api_validation = app.exception_handlers[RequestValidationError]
    api_http = app.exception_handlers[StarletteHTTPException]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if not is_page(request.url.path):
            return await api_validation(request, exc)
        return message_page(request, None, 400, "Not a valid address", f"This address is not valid: "
                                                                          f"{validation_problems(exc)[0]}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_page(request.url.path) or exc.status_code != 404:
            return await api_http(request, exc)
        return message_page(request, None, 404, "Page not found", "There is no page at this address.")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return sign_in_redirect(request, exc.next_path)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, _: CsrfRefused) -> Response:
        return message_page(request, None, 403, "Refused",
                            "This action did not carry this page's check token (CSRF). Reload the page and try "
                            "again.")
