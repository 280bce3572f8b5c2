"""The workspace's /mlflow: every method forwarded, path and query unchanged, to MLflow's child.

Bodies stream both ways. A child that is starting is waited for (up to `wait_s`); after that, or
when it cannot be reached, the answer is a 503 in the cible error envelope. The workspace's token
check guards /mlflow like /api/; a job's run token is further kept to its own runs
(tracking_policy), which needs its JSON body read before it is forwarded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cible.server import tracking_policy
from cible.server.tracking import API, DEFAULT_WAIT_S, SECRET_HEADER, PREFIX, TrackingServer, TrackingUnavailableError

if TYPE_CHECKING:
    import httpx

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade"}
# The workspace token stays at the workspace; Host is the child's own (MLflow checks it against
# DNS rebinding); Origin is dropped because the token, not the browser's origin, authorises here;
# the child's secret is the proxy's to send.
_DROP_REQUEST = _HOP | {"host", "authorization", "origin", SECRET_HEADER}
_DROP_RESPONSE = _HOP
OWNER_CACHE = 4096  # runs and logged models whose job is remembered (an owner never changes)


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"error": {"code": TrackingUnavailableError.code, "message": message, "details": None}},
        headers={"Retry-After": "2"},
    )


def _forbidden(message: str) -> JSONResponse:
    return JSONResponse(status_code=403, content={"error": {"code": "Forbidden", "message": message, "details": None}})


class _Owners:
    """Which job a run or a logged model belongs to, asked of the child once each."""

    def __init__(self, tracking: TrackingServer) -> None:
        self.tracking = tracking
        self._known: OrderedDict[str, str | None] = OrderedDict()

    async def run(self, run_id: str) -> str | None:
        return await self._ask(f"run:{run_id}", "/runs/get", {"run_id": run_id}, self._run_job)

    async def model(self, model_id: str) -> str | None:
        async def job_of_model(body: dict) -> str | None:
            run_id = (body.get("model") or {}).get("info", {}).get("source_run_id")
            return await self.run(run_id) if run_id else None

        return await self._ask(f"model:{model_id}", f"/logged-models/{model_id}", None, job_of_model)

    @staticmethod
    async def _run_job(body: dict) -> str | None:
        tags = (body.get("run") or {}).get("data", {}).get("tags") or []
        return next((t.get("value") for t in tags if t.get("key") == tracking_policy.JOB_TAG), None)

    async def _ask(self, key: str, endpoint: str, params: dict | None, read) -> str | None:  # noqa: ANN001
        if key in self._known:
            return self._known[key]
        response = await self.tracking.client().get(f"{self.tracking.url}{API}{endpoint}", params=params, timeout=10)
        owner = await read(response.json()) if response.status_code == 200 else None
        if owner is not None:  # unknown ones are asked again: the run may be created a moment later
            self._known[key] = owner
            while len(self._known) > OWNER_CACHE:
                self._known.popitem(last=False)
        return owner


def tracking_router(tracking: TrackingServer, *, wait_s: float = DEFAULT_WAIT_S) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    owners = _Owners(tracking)

    async def proxy(request: Request) -> Response:
        import httpx

        if not await tracking.wait_ready(wait_s):
            return _unavailable(tracking.unavailable_message())
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        query = request.scope.get("query_string", b"")
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        content = _body(request) if has_body else None
        granted = request.scope.get("state", {}).get("token_scope")
        if granted is not None and granted.kind == "job":
            path = request.scope["path"][len(PREFIX):]
            body = None
            if has_body and tracking_policy.needs_body(request.method, path):
                body = await request.body()  # a REST call's JSON: small, and capped by the body limit
            try:
                decision = await tracking_policy.decide(granted.name, request.method, path, body,
                                                        owners.run, owners.model)
            except httpx.HTTPError as exc:
                return _unavailable(f"the workspace's MLflow tracking server did not answer: {exc}")
            if decision.refusal:
                return _forbidden(decision.refusal)
            if body is not None:
                content = decision.body if decision.body is not None else body
        target = tracking.url + raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        drop = _DROP_REQUEST | ({"content-length"} if isinstance(content, bytes) else set())  # httpx sets it
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in drop]
        client = tracking.client()
        upstream_request = client.build_request(request.method, target, headers=headers, content=content)
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.ConnectError:
            tracking.ensure_running()  # a dead child is respawned for the client's retry
            return _unavailable(tracking.unavailable_message())
        except httpx.HTTPError as exc:
            return _unavailable(f"the workspace's MLflow tracking server did not answer: {type(exc).__name__}: {exc}")
        response = StreamingResponse(_relay(upstream), status_code=upstream.status_code)
        response.raw_headers = [
            (k, v) for k, v in upstream.headers.raw if k.decode("latin-1").lower() not in _DROP_RESPONSE
        ]
        return response

    router.add_api_route(PREFIX, proxy, methods=methods)
    router.add_api_route(PREFIX + "/{path:path}", proxy, methods=methods)
    return router


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():  # as sent: no decompression on the way
            yield chunk
    finally:
        await upstream.aclose()
