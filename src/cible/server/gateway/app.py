"""What the gateway does with a request: one port for every endpoint, `/endpoints/<endpoint>/score`.

Per request, in order (each step answers on its own when it fails):
  404  the path is not /endpoints/<endpoint>/(score|swagger.json|) or the endpoint is unknown
  200  GET /endpoints/<endpoint>/  (the endpoint exists; no credential needed, nothing forwarded)
  401  auth_mode key/aml_token and no `Authorization: Bearer <x>`, or check_credential says no
  413  the body is over `max_body_bytes` (Content-Length checked before reading, else while reading)
  404  `azureml-model-deployment` names no deployment of the endpoint
  503  no deployment takes traffic, or the chosen one has no ready replica and cannot scale from zero,
       or a scale-from-zero wait ran out, or the deployment went away while the request waited
  429  all slots (max_concurrent_requests_per_instance × replicas) stayed busy for max_queue_wait_ms
  408  no whole answer from the replica within request_timeout_ms (queue time not included)
  424  the replica is unreachable or closed the connection before answering
       (`ms-azureml-model-error-reason: replica_unreachable`)
  502  the replica answered something that is not HTTP
  ...  the replica's own answer, status and headers passed through; a non-2xx one also carries
       `ms-azureml-model-error-statuscode: <status>` and `ms-azureml-model-error-reason: model_error`
Every answer that went to a deployment says which in `azureml-model-deployment`.

Bodies are passed through untouched (never parsed). The `Authorization` header is not forwarded: the
key is the endpoint's secret and the scoring script is user code. The body limit defaults to 1.5 MiB,
the request payload limit Azure documents for managed online endpoints, so a request that works here
works there; the server can raise it (`Gateway(max_body_bytes=...)`).

The HTTP side (parsing, keep-alive, writing) is server.py's `_ClientConnection`; it fills a `Request`
and calls `admit` once the headers are in (so 404/401/413 need no body) and `dispatch` once the body
is. Everything runs on the gateway's own event loop thread; `Gateway` hops onto it for `publish`,
`stats` and `in_flight`. No logging, no pydantic, one task per forwarded request: this hop must stay
within tens of microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

from cible.server.gateway.metrics import DeploymentMetrics
from cible.server.gateway.routes import (
    DeploymentRoute,
    EndpointRoute,
    RouteTable,
    UnknownDeployment,
    pick_deployment,
    pick_mirror,
)
from cible.server.gateway.upstream import UpstreamError, UpstreamPool, UpstreamProtocolError, UpstreamTimeout

logger = logging.getLogger(__name__)  # never on the request path: on_demand failures only

DEFAULT_MAX_BODY_BYTES = 1536 * 1024  # Azure managed online endpoints: 1.5 MB request payload
DEFAULT_SCALE_FROM_ZERO_WAIT_S = 300.0  # a cold replica: environment, imports, init()
MAX_MIRROR_IN_FLIGHT = 1000  # copies beyond this are dropped, so a stuck shadow cannot eat memory
DEMAND_INTERVAL_S = 1.0  # on_demand at most this often per deployment while requests wait

# Upstream response headers the gateway does not pass on: hop-by-hop ones (RFC 9110 §7.6.1) and those
# it writes itself.
_RESPONSE_SKIP = frozenset({
    b"content-length", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
    b"trailer", b"upgrade", b"azureml-model-deployment",
})
_JSON = b"content-type: application/json\r\n"

_GRANTED, _EXPIRED, _GONE = 1, 2, 3


def message_body(text: str) -> bytes:
    return b'{"message": "' + text.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8") + b'"}'


def _expire_wait(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


class Request:
    """One client request as the HTTP side parsed it. `header_lines` are the headers to forward,
    already as `name: value\\r\\n` fragments (hop-by-hop ones, Host, Content-Length and Authorization
    left out)."""

    __slots__ = ("auth", "body", "content_length", "endpoint", "expect_continue", "header_lines", "is_head",
                 "keep_alive", "method", "pin", "reject", "size", "target", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.header_lines: list[bytes] = []
        self.auth: bytes | None = None
        self.pin: bytes | None = None
        self.content_length = -1
        self.expect_continue = False
        self.keep_alive = True
        self.is_head = False
        self.endpoint: _Endpoint | None = None
        self.target = b""
        self.reject: tuple[int, str, list[bytes] | None] | None = None
        self.body: list[bytes] = []
        self.size = 0


class Responder(Protocol):
    """The connection a request came on. `head` is header fragments (`name`, `: `, `value`, `\\r\\n`)
    without Content-Length; the connection adds the status line, Content-Length and the framing."""

    def respond(self, request: Request, status: int, head: list[bytes], body: bytes) -> None: ...


class _Replica:
    __slots__ = ("in_flight", "name", "pool", "url")

    def __init__(self, name: str, url: str, pool: UpstreamPool) -> None:
        self.name = name
        self.url = url
        self.pool = pool
        self.in_flight = 0


class _Deployment:
    """The live state of one deployment, kept across publishes: slots, waiters, replicas, metrics."""

    __slots__ = ("capacity", "endpoint", "header", "in_flight", "last_demand", "metrics", "name", "queue_wait_s",
                 "replicas", "route", "rr", "timeout_s", "waiters")

    def __init__(self, endpoint: str, name: str, now: float) -> None:
        self.endpoint = endpoint
        self.name = name
        self.header = [b"azureml-model-deployment: ", name.encode("latin-1"), b"\r\n"]
        self.route: DeploymentRoute | None = None
        self.replicas: list[_Replica] = []
        self.capacity = 0
        self.in_flight = 0
        self.waiters: deque[asyncio.Future] = deque()
        self.metrics = DeploymentMetrics(now)
        self.timeout_s = 5.0
        self.queue_wait_s = 0.5
        self.last_demand = float("-inf")
        self.rr = 0

    def update(self, route: DeploymentRoute, replicas: list[_Replica]) -> None:
        self.route = route
        self.replicas = replicas
        self.capacity = max(1, route.max_concurrent_requests_per_instance) * len(replicas)
        self.timeout_s = max(0.001, route.request_timeout_ms / 1000.0)
        self.queue_wait_s = max(0.0, route.max_queue_wait_ms / 1000.0)

    def grant(self) -> None:
        """Hand free slots to waiters, oldest first."""
        waiters = self.waiters
        while waiters and self.in_flight < self.capacity:
            waiter = waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(_GRANTED)

    def fail_waiters(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(_GONE)

    def choose(self) -> _Replica | None:
        """The replica with the fewest requests in flight; ties taken in turn."""
        replicas = self.replicas
        n = len(replicas)
        if n <= 1:
            return replicas[0] if n else None
        self.rr = start = (self.rr + 1) % n
        best = replicas[start]
        for k in range(1, n):
            candidate = replicas[(start + k) % n]
            if candidate.in_flight < best.in_flight:
                best = candidate
        return best


class _Endpoint:
    __slots__ = ("auth_mode", "deployments", "has_mirror", "name", "route", "sole")

    def __init__(self, route: EndpointRoute, deployments: dict[str, _Deployment]) -> None:
        self.route = route
        self.name = route.name
        self.auth_mode = route.auth_mode
        self.deployments = deployments
        self.has_mirror = any(p > 0 for p in route.mirror_traffic.values())
        weighted = [name for name, weight in route.traffic.items() if weight > 0]
        # the common case, one deployment takes all traffic: no draw needed
        self.sole = deployments.get(weighted[0]) if len(weighted) == 1 else None


class GatewayApp:
    """The routing state and the request handling."""

    def __init__(self, check_credential: Callable[[str, str, str], bool], on_demand: Callable[[str, str], None],
                 clock: Callable[[], float], max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 scale_from_zero_wait_s: float = DEFAULT_SCALE_FROM_ZERO_WAIT_S,
                 rng: random.Random | None = None) -> None:
        self._check = check_credential
        self._on_demand = on_demand
        self._clock = clock
        self.max_body_bytes = int(max_body_bytes)
        self._cold_wait_s = float(scale_from_zero_wait_s)
        self._rng = rng or random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._pools: dict[str, UpstreamPool] = {}
        self._tasks: set[asyncio.Task] = set()
        self._mirrors = 0
        self._pending_table: RouteTable | None = None
        self._table: RouteTable | None = None

    # ---- state changes (on the loop thread) ------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._pending_table is not None:
            table, self._pending_table = self._pending_table, None
            self.apply(table)

    def apply(self, table: RouteTable) -> None:
        """Make `table` the live routes. Requests in flight keep their replica and connection; waiters
        of a deployment that is gone get 503; waiters of one that gained slots are let through."""
        if self._loop is None:  # not started yet: the pools need the loop
            self._pending_table = table
            return
        self._table = table
        now = self._clock()
        old_endpoints = self._endpoints
        live_urls: set[str] = set()
        endpoints: dict[str, _Endpoint] = {}
        for ep_name, ep_route in table.endpoints.items():
            old = old_endpoints.get(ep_name)
            deployments: dict[str, _Deployment] = {}
            for dep_name, dep_route in ep_route.deployments.items():
                dep = old.deployments.get(dep_name) if old is not None else None
                if dep is None:
                    dep = _Deployment(ep_name, dep_name, now)
                by_url = {r.url: r for r in dep.replicas}
                replicas = []
                for replica in dep_route.replicas:
                    state = by_url.get(replica.url)
                    if state is None:
                        state = _Replica(replica.name, replica.url, self._pool(replica.url))
                    replicas.append(state)
                    live_urls.add(replica.url)
                dep.update(dep_route, replicas)
                deployments[dep_name] = dep
            endpoints[ep_name] = _Endpoint(ep_route, deployments)
        self._endpoints = endpoints
        for ep_name, old in old_endpoints.items():
            kept = endpoints.get(ep_name)
            for dep_name, dep in old.deployments.items():
                if kept is None or kept.deployments.get(dep_name) is not dep:
                    dep.fail_waiters()
        for url in [u for u in self._pools if u not in live_urls]:
            self._pools.pop(url).close()
        for ep in endpoints.values():
            for dep in ep.deployments.values():
                dep.grant()

    def _pool(self, url: str) -> UpstreamPool:
        pool = self._pools.get(url)
        if pool is None:
            pool = self._pools[url] = UpstreamPool(url, self._loop)
        return pool

    def stats(self, endpoint: str) -> dict[str, dict[str, float | int]]:
        ep = self._endpoints.get(endpoint)
        if ep is None:
            return {}
        now = self._clock()
        return {name: dep.metrics.snapshot(now) for name, dep in ep.deployments.items()}

    def mean_in_flight(self, endpoint: str, deployment: str, window_s: float) -> float:
        ep = self._endpoints.get(endpoint)
        dep = ep.deployments.get(deployment) if ep is not None else None
        if dep is None:
            return 0.0
        return dep.metrics.mean_in_flight(self._clock(), window_s)

    def shutting_down(self) -> None:
        """Waiting requests get 503 now (the server is stopping)."""
        for ep in self._endpoints.values():
            for dep in ep.deployments.values():
                dep.fail_waiters()

    async def aclose(self) -> None:
        """Fail every waiter, cancel what is still forwarding, close the idle upstream connections."""
        self.shutting_down()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for pool in self._pools.values():
            pool.close()
        # Unbound from the loop that is ending: a later start() applies the last table afresh.
        self._pools = {}
        self._endpoints = {}
        self._pending_table, self._table = self._table, None
        self._loop = None

    # ---- the request path ------------------------------------------------------------------------

    def admit(self, req: Request) -> None:
        """With the headers in: find the endpoint and the replica path, check the credential and the
        declared length. Sets `req.endpoint` and `req.target`, or `req.reject`."""
        url = req.url
        query = b""
        mark = url.find(b"?")
        if mark >= 0:
            url, query = url[:mark], url[mark:]
        if not url.startswith(b"/endpoints/"):
            req.reject = (404, "Not found: the scoring URL is /endpoints/<endpoint>/score", None)
            return
        rest = url[11:]
        slash = rest.find(b"/")
        ep_raw, sub = (rest, b"") if slash < 0 else (rest[:slash], rest[slash + 1:])
        ep_name = ep_raw.decode("latin-1")
        ep = self._endpoints.get(ep_name)
        if ep is None:
            req.reject = (404, f"Endpoint {ep_name} not found", None)
            return
        if sub == b"score":
            req.target = b"/score" + query
        elif sub == b"swagger.json":
            req.target = b"/swagger.json" + query
        elif sub == b"":
            if req.method in (b"GET", b"HEAD"):
                req.reject = (200, "Healthy", None)
            else:
                req.reject = (405, "Method not allowed", None)
            return
        else:
            req.reject = (404, f"Not found: {url.decode('latin-1')}", None)
            return
        if ep.auth_mode != "none":
            auth = req.auth
            token = auth[7:].strip() if auth is not None and auth[:7].lower() == b"bearer " else b""
            if not token or not self._check(ep_name, ep.auth_mode, token.decode("latin-1")):
                req.reject = (401, "Unauthorized: send Authorization: Bearer <key or token>",
                              [b"www-authenticate: Bearer\r\n"])
                return
        if req.content_length > self.max_body_bytes:
            req.reject = (413, f"Payload too large: the limit is {self.max_body_bytes} bytes", None)
            return
        req.endpoint = ep

    def reply_error(self, conn: Responder, req: Request, status: int, text: str, extra: list[bytes] | None) -> None:
        head = [_JSON]
        if extra:
            head.extend(extra)
        conn.respond(req, status, head, message_body(text))

    def dispatch(self, req: Request, conn: Responder) -> None:
        """With the whole body in: pick the deployment, copy to the mirror, forward. Answers through
        `conn.respond`, now or once the replica has answered."""
        ep = req.endpoint
        pin = req.pin
        if pin is None and ep.sole is not None:
            dep = ep.sole
        else:
            pinned = pin.decode("latin-1").strip() if pin else None
            try:
                dep_name = pick_deployment(ep.route, pinned, self._rng)
            except UnknownDeployment:
                return self.reply_error(conn, req, 404, f"Deployment {pinned} not found in endpoint {ep.name}", None)
            if dep_name is None:
                return self.reply_error(conn, req, 503, f"No deployment of endpoint {ep.name} takes traffic", None)
            dep = ep.deployments.get(dep_name)
            if dep is None:  # traffic names a deployment the table does not carry
                return self.reply_error(conn, req, 503, f"Deployment {dep_name} of {ep.name} is not serving", None)
        chunks = req.body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        header_lines = b"".join(req.header_lines)
        if ep.has_mirror:
            shadow = pick_mirror(ep.route, bool(pin and pin.strip()), self._rng)
            if shadow is not None and shadow != dep.name:
                self._mirror(ep.deployments[shadow], req.method, req.target, header_lines, body)
        task = self._loop.create_task(self._proxy(conn, req, dep, header_lines, body, self._clock()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _proxy(self, conn: Responder, req: Request, dep: _Deployment, header_lines: bytes, body: bytes,
                     t0: float) -> None:
        status, headers, rbody = await self._forward(dep, req.method, req.target, header_lines, body, t0)
        if headers is None:  # the gateway's own answer
            head = [_JSON, *dep.header]
            if status == 424:
                head.append(b"ms-azureml-model-error-reason: replica_unreachable\r\n")
            elif status == 502:
                head.append(b"ms-azureml-model-error-reason: bad_replica_response\r\n")
            return conn.respond(req, status, head, message_body(rbody))
        head = []
        for name, value in headers:
            if name.lower() not in _RESPONSE_SKIP:
                head += (name, b": ", value, b"\r\n")
        head += dep.header
        if not 200 <= status < 300:
            head.append(b"ms-azureml-model-error-statuscode: %d\r\nms-azureml-model-error-reason: model_error\r\n"
                        % status)
        conn.respond(req, status, head, rbody)

    # ---- slots -----------------------------------------------------------------------------------

    def _demand(self, dep: _Deployment) -> None:
        now = self._clock()
        if now - dep.last_demand < DEMAND_INTERVAL_S:
            return
        dep.last_demand = now
        # In a worker thread: the reconciler's callback may touch its store; the loop must not wait on it.
        self._loop.run_in_executor(None, self._call_on_demand, dep.endpoint, dep.name)

    def _call_on_demand(self, endpoint: str, deployment: str) -> None:
        try:
            self._on_demand(endpoint, deployment)
        except Exception:  # the reconciler's problem; the request waits on regardless
            logger.exception("on_demand(%s, %s) failed", endpoint, deployment)

    async def _acquire(self, dep: _Deployment) -> int:
        """0 once the request holds a slot of `dep`, else the status to answer (429 or 503)."""
        if dep.in_flight < dep.capacity and not dep.waiters:
            dep.in_flight += 1
            return 0
        if not dep.replicas:
            if dep.route is None or not dep.route.scale_from_zero:
                return 503
            self._demand(dep)
            wait_s, fail = self._cold_wait_s, 503
        else:
            wait_s, fail = dep.queue_wait_s, 429
        loop = self._loop
        waiter = loop.create_future()
        dep.waiters.append(waiter)
        dep.metrics.queued += 1
        timer = loop.call_later(wait_s, _expire_wait, waiter)
        try:
            outcome = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result() == _GRANTED:
                self._release(dep, None)
            raise
        finally:
            timer.cancel()
            dep.metrics.queued -= 1
        if outcome == _GRANTED:
            return 0
        try:
            dep.waiters.remove(waiter)
        except ValueError:
            pass
        return fail if outcome == _EXPIRED else 503

    def _release(self, dep: _Deployment, replica: _Replica | None) -> None:
        if replica is not None:
            replica.in_flight -= 1
        dep.in_flight -= 1
        if dep.waiters:
            dep.grant()

    # ---- forwarding ------------------------------------------------------------------------------

    async def _forward(self, dep: _Deployment, method: bytes, target: bytes, header_lines: bytes, body: bytes,
                       t0: float) -> tuple[int, list[tuple[bytes, bytes]] | None, bytes | str]:
        """(status, replica headers or None, replica body or the gateway's error message)."""
        metrics = dep.metrics
        code = await self._acquire(dep)
        if code:
            now = self._clock()
            metrics.record(now, now - t0, True)
            if code == 429:
                return 429, None, "Too many requests: every replica slot stayed busy for max_queue_wait_ms"
            return 503, None, f"Deployment {dep.name} has no ready replica"
        replica = dep.choose()
        if replica is None:  # the replicas went away between the grant and now
            self._release(dep, None)
            now = self._clock()
            metrics.record(now, now - t0, True)
            return 503, None, f"Deployment {dep.name} has no ready replica"
        replica.in_flight += 1
        metrics.started(self._clock())
        status = 0  # stays 0 when cancelled (shutdown): counted as an error
        try:
            status, headers, rbody = await replica.pool.request(method, target, header_lines, body, dep.timeout_s)
        except UpstreamTimeout:
            status, headers, rbody = 408, None, f"Request timed out after {dep.route.request_timeout_ms} ms"
        except UpstreamError as exc:
            status, headers, rbody = 424, None, f"Replica {replica.name} is unreachable: {exc.reason}"
        except UpstreamProtocolError as exc:
            status, headers, rbody = 502, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - a fault of ours must still answer, never leave the caller waiting
            logger.exception("forwarding to replica %s failed", replica.name)
            status, headers, rbody = 502, None, f"The gateway could not forward the request: {type(exc).__name__}"
        finally:
            handed_on = bool(dep.waiters)
            self._release(dep, replica)
            now = self._clock()
            metrics.finished(now, now - t0, not 200 <= status < 300)
        if handed_on:
            # The slot went to a queued request: let it reach the replica before this answer is written
            # back, so a replica held to max_concurrent_requests_per_instance idles as little as possible.
            await asyncio.sleep(0)
        return status, headers, rbody

    def _mirror(self, dep: _Deployment, method: bytes, target: bytes, header_lines: bytes, body: bytes) -> None:
        """A copy to the shadow deployment, in the background: its answer is dropped and nobody waits for
        it. Copies queue and time out like any request, so a slow shadow sheds them (429) rather than
        piling them up."""
        if self._mirrors >= MAX_MIRROR_IN_FLIGHT:
            return
        self._mirrors += 1
        task = self._loop.create_task(self._forward(dep, method, target, header_lines, body, self._clock()))
        self._tasks.add(task)
        task.add_done_callback(self._mirror_done)

    def _mirror_done(self, task: asyncio.Task) -> None:
        self._mirrors -= 1
        self._tasks.discard(task)
