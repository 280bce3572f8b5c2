"""The batch runner's calls to the workspace server (stdlib only): one keep-alive connection per process,
JSON in and out, the job's run token. A server that restarts or a dropped connection is retried until
a deadline; a refusal (4xx) is not: it says what is wrong."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any

RETRY_FOR_S = 300  # a server restart, a busy database: retried this long before the runner gives up


class ApiError(Exception):
    """The server refused a call, or could not be reached before the deadline."""


class BatchApi:
    def __init__(self, url: str, token: str, job: str, timeout_s: float = 60) -> None:
        if not url:
            raise ApiError("CIBLE_API_URL is not set: this batch runner does not know its workspace server "
                           "(it is started by a batch job's launcher)")
        parsed = urllib.parse.urlsplit(url)
        self.secure = parsed.scheme == "https"
        self.host = parsed.netloc
        self.base = parsed.path.rstrip("/") + f"/api/v1/jobs/{urllib.parse.quote(job, safe='')}/batch"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json",
                        "Authorization": f"Bearer {token}"}
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(":start", body)

    def claim(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(":claim", body)

    def lost(self, worker: str, error: str, idx: int | None) -> dict[str, Any]:
        """`idx`: the mini-batch the worker was running when it died (a failed try), None if none; any
        other it held goes back to pending without a try."""
        return self.call(":lost", {"worker": worker, "error": error, "idx": idx})

    def fail(self, reason: str) -> dict[str, Any]:
        return self.call(":fail", {"reason": reason})

    def call(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        deadline = time.monotonic() + RETRY_FOR_S
        delay = 0.1
        while True:
            try:
                status, payload = self._post(self.base + verb, data)
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                if time.monotonic() >= deadline:
                    raise ApiError(f"the workspace server did not answer {verb[1:]}: {exc}") from None
            else:
                if status < 300:
                    return json.loads(payload or b"{}")
                if status not in (409, 429, 502, 503, 504) or time.monotonic() >= deadline:
                    raise ApiError(f"the workspace server refused {verb[1:]} ({status}): {_message(payload)}")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _post(self, path: str, data: bytes) -> tuple[int, bytes]:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
            self._conn = kind(self.host, timeout=self.timeout_s)
        self._conn.request("POST", path, body=data, headers=self.headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _message(payload: bytes) -> str:
    try:
        return json.loads(payload)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return payload[:500].decode("utf-8", "replace")
