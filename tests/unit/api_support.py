"""The REST API in-process for the API tests: an app without reconcilers behind a TestClient."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cible.server.app import create_app
from cible.server.settings import ServerSettings
from cible.testing import FrozenClock

TOKEN = "t"


@contextmanager
def api_client(db_url: str, tmp_path: Path, clock: Any = None, **settings: Any) -> Iterator[TestClient]:
    """Yield a client of a fresh app (its store closed after); `settings` go to ServerSettings."""
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=db_url, **settings), TOKEN,
                     clock or FrozenClock(), reconcile=False)
    try:
        yield TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False)
    finally:
        app.state.store.close()


def error_of(response) -> dict:  # noqa: ANN001
    """The error envelope of a refused request, checked for its shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "details"} <= set(body["error"])
    return body["error"]


def upload(api: TestClient, files: dict[str, bytes]) -> str:
    """Upload `files` as a snapshot, as the SDK does; returns its cible://snapshots/ URI."""
    entries = {}
    for rel, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        api.put(f"/api/v1/blobs/{digest}", content=data)
        entries[rel] = {"sha256": digest, "size": len(data)}
    return api.post("/api/v1/snapshots", json={"files": entries}).json()["uri"]


def assert_envelope(response, status: int | None = None, code: str | None = None) -> dict:  # noqa: ANN001
    """The refusal's error envelope, checked for its status, code and a message."""
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error
