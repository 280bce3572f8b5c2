"""Low-level HTTP client of the workspace API: error envelopes back to exceptions."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

if "httpx" not in sys.modules:
    # httpx's package import loads its own command-line tool (click, rich, pygments:
    # about 0.3 s on our CI machines) only to expose `httpx.main`, which cible never
    # calls. An empty stand-in makes httpx take its documented fallback instead.
    sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))

import httpx  # noqa: E402

from cible.core.errors import CibleError, ServerUnavailableError, error_from_dict
from cible.workspace import current_user

API = "/api/v1"


def tls_verify(url: str) -> bool:
    """httpx's `verify` for a client that talks to `url`: httpx builds its TLS context, loading certifi's
    bundle (about 0.1 s of CPU), whenever a client is made, even one that only ever speaks plain HTTP.
    An http:// URL (the local workspace, its MLflow, a replica on loopback) has nothing to verify, so
    none is loaded; an https:// URL is verified as always."""
    return not url.startswith("http://")


class WorkspaceClient:
    page_size = 200  # items asked per page of a list route (the server caps a page at 1000)

    def __init__(self, url: str, token: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._http = httpx.Client(
            base_url=self.url + API, timeout=timeout, verify=tls_verify(self.url),
            # Who this client acts for: recorded on what it creates (cost by user, an instance's owner).
            headers={"Authorization": f"Bearer {token}", "X-Cible-User": current_user()},
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"cannot reach the cible server at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def pages(self, path: str, params: dict[str, Any] | None = None, *, limit: int | None = None,
              pin: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        """Each page of a list route, following `next_skip` to the last (or until `limit` items).
        `pin` names fields of the first page that every later page is asked with, so that all are
        cut from one answer (the cost report's `until`)."""
        params, skip, seen = dict(params or {}), 0, 0
        while skip is not None and (limit is None or seen < limit):
            top = self.page_size if limit is None else min(self.page_size, limit - seen)
            page = self.json("GET", path, params={**params, "skip": skip, "top": top})
            if skip == 0:
                params.update({key: page[key] for key in pin if page.get(key) is not None})
            seen += len(page["value"])
            yield page
            skip = page.get("next_skip")

    def items(self, path: str, params: dict[str, Any] | None = None, *, limit: int | None = None) -> list[Any]:
        """Every item of a list route, page by page (at most `limit`)."""
        return [item for page in self.pages(path, params, limit=limit) for item in page["value"]]

    def stream_to(self, path: str, target, **kwargs: Any) -> None:  # noqa: ANN001
        """Write a (possibly large) response body to an open binary file."""
        try:
            with self._http.stream("GET", path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                for chunk in response.iter_bytes():
                    target.write(chunk)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"cannot reach the cible server at {self.url}: {exc}") from None


def _error(response: httpx.Response) -> CibleError:
    try:
        body = response.json()["error"]
    except Exception:  # not our envelope (a proxy, a crash page)
        return CibleError(f"HTTP {response.status_code} from the server: {response.text[:500]}")
    return error_from_dict(body)
