"""Bearer-token check for every /api request (pure ASGI: no per-request overhead beyond a compare)."""

from __future__ import annotations

import json
import secrets


class TokenAuthMiddleware:
    def __init__(self, app, token: str) -> None:  # noqa: ANN001
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http" and scope["path"].startswith(("/api/", "/mlflow")):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                await _deny(send)
                return
        await self.app(scope, receive, send)


async def _deny(send) -> None:  # noqa: ANN001
    body = json.dumps({"error": {
        "code": "Unauthorized",
        "message": "missing or wrong token: send 'Authorization: Bearer <token>' (the local "
        "workspace keeps it in $CIBLE_HOME/token)",
        "details": None,
    }}).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
    await send({"type": "http.response.body", "body": body})
