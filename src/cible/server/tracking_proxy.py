"""The workspace's /mlflow: every method forwarded, path and query unchanged, to MLflow's child.

Bodies stream both ways. A child that is starting is waited for (up to `wait_s`); after that, or
when it cannot be reached, the answer is a 503 in the cible error envelope. The workspace's token
check guards /mlflow like /api/; a job's run token is further kept to its own runs
(tracking_policy), which needs its JSON body read (at most tracking_policy.BODY_LIMIT) before it
is forwarded.

The path is judged as ASGI decoded it but forwarded as the client sent it, so a path whose meaning
could change between the two is refused for every token (400): dot segments and empty segments
(httpx resolves ``..`` when it forwards: ``runs/get/../../experiments/delete`` would reach another
route than the one judged), encoded ``/``, ``\\`` and ``.``, and backslashes. MLflow's clients never
send any of them.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cible.core.errors import NotFoundError
from cible.core.roles import ADMIN_ROLES
from cible.server import tracking_policy
from cible.server.errors import envelope, human_bytes
from cible.server.tracking import API, DEFAULT_WAIT_S, PREFIX, SECRET_HEADER, TrackingServer, TrackingUnavailableError
from cible.server.tracking_policy import JOB_TAG, PROTECTED_TAGS, USER_TAG

if TYPE_CHECKING:
    import httpx

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade"}
# The workspace token stays at the workspace; Host is the child's own (MLflow checks it against
# DNS rebinding); Origin is dropped because the token, not the browser's origin, authorises here;
# the child's secret is the proxy's to send. A client's forwarding headers would make the child
# (uvicorn trusts them from 127.0.0.1, where the proxy connects from) see another client address:
# MLflow's "localhost only" routes (the assistant) decide on it.
_FORWARDING = {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "forwarded"}
_DROP_REQUEST = _HOP | _FORWARDING | {"host", "authorization", "origin", SECRET_HEADER}
_DROP_RESPONSE = _HOP
OWNER_CACHE = 4096  # runs and logged models whose job is remembered (a job cannot change its tag)
TOKEN_CHECK_TTL_S = 5.0
_ENCODED = re.compile(r"%(?:2f|5c|2e)", re.IGNORECASE)
_MODEL_ID = re.compile(r"[A-Za-z0-9_-]+")  # MLflow's are m-<hex>; anything else could change the URL asked
ERROR_CODES = {400: "InvalidRequest", 403: "Forbidden", 413: "PayloadTooLarge"}


def _unavailable(message: str) -> Response:
    return envelope(503, TrackingUnavailableError.code, message, headers={"Retry-After": "2"})


def _error(status: int, message: str) -> Response:
    return envelope(status, ERROR_CODES[status], message)


def path_problem(path: str) -> str | None:
    """Why a /mlflow path (raw or decoded) is refused, or None."""
    if "\\" in path or _ENCODED.search(path):
        return "an encoded '/', '\\' or '.', or a backslash"
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return "a control character"
    segments = path.split("/")[1:]
    if segments[-1:] == [""]:
        segments.pop()  # a single trailing slash
    if any(segment in ("", ".", "..") for segment in segments):
        return "a '.', '..' or empty segment"
    return None


class _Owners:
    """Which job (or user) a run or a logged model belongs to, asked of the child once each."""

    def __init__(self, tracking: TrackingServer) -> None:
        self.tracking = tracking
        self._known: OrderedDict[str, tuple[str | None, str | None] | None] = OrderedDict()

    async def run(self, run_id: str) -> str | None:
        return (await self.run_tags(run_id) or (None, None))[0]

    async def model(self, model_id: str) -> str | None:
        return (await self.model_tags(model_id) or (None, None))[0]

    async def run_tags(self, run_id: str) -> tuple[str | None, str | None] | None:
        """The run's cible.job and cible.user tags; None when MLflow has no such run."""
        async def tags_of_run(body: Any) -> tuple[str | None, str | None] | None:
            tags = _field(body, "run", "data", "tags")
            tags = tags if isinstance(tags, list) else []
            found = {t.get("key"): t.get("value") for t in tags
                     if isinstance(t, dict) and t.get("key") in PROTECTED_TAGS}
            job, user = found.get(JOB_TAG), found.get(USER_TAG)
            owner = (job if isinstance(job, str) else None, user if isinstance(user, str) else None)
            return owner if owner != (None, None) else None

        return await self._ask(f"run:{run_id}", "/runs/get", {"run_id": run_id}, tags_of_run)

    async def model_tags(self, model_id: str) -> tuple[str | None, str | None] | None:
        async def tags_of_model(body: Any) -> tuple[str | None, str | None] | None:
            run_id = _field(body, "model", "info", "source_run_id")
            return await self.run_tags(run_id) if isinstance(run_id, str) and run_id else None

        if not _MODEL_ID.fullmatch(model_id):
            return None
        return await self._ask(f"model:{model_id}", f"/logged-models/{model_id}", None, tags_of_model)

    async def _ask(self, key: str, endpoint: str, params: dict | None, read: Callable[[Any], Awaitable[Any]]) -> Any:
        if key in self._known:
            return self._known[key]
        response = await self.tracking.client().get(f"{self.tracking.url}{API}{endpoint}", params=params, timeout=10)
        if response.status_code >= 500:
            raise tracking_policy.OwnerLookupError(f"MLflow answered {response.status_code} to {endpoint}")
        try:
            body = response.json() if response.status_code == 200 else None
        except (ValueError, RecursionError):
            raise tracking_policy.OwnerLookupError(f"MLflow's answer to {endpoint} is not JSON") from None
        owner = await read(body) if body is not None else None
        if owner is not None:  # unknown ones are asked again: the run may be created a moment later
            self._known[key] = owner
            while len(self._known) > OWNER_CACHE:
                self._known.popitem(last=False)
        return owner


def _field(value: Any, *keys: str) -> Any:
    """value[k1][k2]..., or None where MLflow's answer does not have that shape."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request's body, or None when it is over `limit` (no more of it is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class _FreshTokens:
    """Whether a job's run token still counts (its job, that submission, not long ended), asked of
    the store at most every TOKEN_CHECK_TTL_S per token: a job logs many metrics a second."""

    def __init__(self, refusal: Callable[[str, str], str | None]) -> None:
        self.refusal = refusal
        self._known: OrderedDict[tuple[str, str], tuple[str | None, float]] = OrderedDict()

    async def check(self, name: str, salt: str) -> str | None:
        key, now = (name, salt), time.monotonic()
        known = self._known.get(key)
        if known is None or known[1] < now:
            known = (await run_in_threadpool(self.refusal, name, salt), now + TOKEN_CHECK_TTL_S)
            self._known[key] = known
            while len(self._known) > OWNER_CACHE:
                self._known.popitem(last=False)
        return known[0]


class _Creators:
    """Who submitted a job (the store, asked once per job: it never changes)."""

    def __init__(self, creator: Callable[[str], str | None]) -> None:
        self.creator = creator
        self._known: OrderedDict[str, str | None] = OrderedDict()

    async def of(self, job: str) -> str | None:
        if job not in self._known:
            try:
                self._known[job] = await run_in_threadpool(self.creator, job)
            except NotFoundError:
                return None
            while len(self._known) > OWNER_CACHE:
                self._known.popitem(last=False)
        return self._known[job]


def user_actor(user: str, owners: _Owners, creators: _Creators) -> tracking_policy.Actor:
    """A user held to their own runs: those their token created, and those of the jobs they submitted."""
    async def owns(tags: tuple[str | None, str | None] | None) -> bool:
        job, tagged_user = tags or (None, None)
        return tagged_user == user or (job is not None and await creators.of(job) == user)

    async def owns_run(run: str) -> bool:
        return await owns(await owners.run_tags(run))

    async def owns_model(model: str) -> bool:
        return await owns(await owners.model_tags(model))

    return tracking_policy.Actor(USER_TAG, user, f"user '{user}'", "a user writes into the MLflow runs of their own "
                                 "jobs and into the runs they created only (an Owner into any)", owns_run, owns_model)


def tracking_router(tracking: TrackingServer, *, wait_s: float = DEFAULT_WAIT_S,
                    run_token_refusal: Callable[[str, str], str | None] | None = None,
                    job_creator: Callable[[str], str | None] | None = None) -> APIRouter:
    """`run_token_refusal(job, salt)` says why a job's run token no longer counts (None: it does);
    `job_creator(job)` who submitted a job (a user's writes are kept to their own jobs' runs)."""
    router = APIRouter(include_in_schema=False)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    owners = _Owners(tracking)
    creators = _Creators(job_creator or (lambda job: None))
    fresh = _FreshTokens(run_token_refusal) if run_token_refusal is not None else None

    async def proxy(request: Request) -> Response:
        import httpx

        raw_path = (request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1")
        problem = path_problem(raw_path) or path_problem(request.scope["path"])
        if problem:
            return _error(400, f"the path /mlflow{raw_path[len(PREFIX):]} has {problem}: no MLflow route does")
        if not await tracking.wait_ready(wait_s):
            return _unavailable(tracking.unavailable_message())
        query = request.scope.get("query_string", b"").decode("latin-1")
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        content = _body(request) if has_body else None
        granted = request.scope.get("state", {}).get("token_scope")
        held = granted is not None and (granted.kind == "job" or
                                        (granted.kind == "user" and granted.role not in ADMIN_ROLES))
        if held:
            if granted.kind == "job":
                stale = await fresh.check(granted.name, granted.salt) if fresh is not None else None
                if stale:
                    return _error(403, f"this run token no longer counts: {stale}")
                actor = tracking_policy.job_actor(granted.name, owners.run, owners.model)
            else:
                actor = user_actor(granted.name, owners, creators)
            path = request.scope["path"][len(PREFIX):]
            body = None
            if has_body and tracking_policy.needs_body(request.method, path):
                body = await _read_capped(request, tracking_policy.BODY_LIMIT)
                if body is None:
                    return _error(413, f"the body of an MLflow REST call is larger than "
                                       f"{human_bytes(tracking_policy.BODY_LIMIT)}, the most the workspace reads "
                                       "to check it")
            try:
                decision = await tracking_policy.decide_for(actor, request.method, path, body, query)
            except (httpx.HTTPError, tracking_policy.OwnerLookupError) as exc:  # asking whose a run is
                return _unavailable(f"the workspace's MLflow tracking server failed to answer: {exc}")
            if decision.refusal:
                return _error(decision.status, decision.refusal)
            if body is not None:
                content = decision.body if decision.body is not None else body
        target = tracking.url + raw_path + ("?" + query if query else "")
        drop = _DROP_REQUEST | ({"content-length"} if isinstance(content, bytes) else set())  # httpx sets it
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in drop]
        client = tracking.client()
        upstream_request = client.build_request(request.method, target, headers=headers, content=content)
        if upstream_request.url.path != request.scope["path"]:  # what MLflow routes is what was judged
            return _error(400, f"the path /mlflow{raw_path[len(PREFIX):]} would not reach MLflow as sent")
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
