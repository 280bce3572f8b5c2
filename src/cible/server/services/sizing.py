"""`recommend-size`: load one ready replica of a deployment, watch its memory, and size it.

The measurement runs inside the API request (a short blocking call, in FastAPI's thread pool):
the request body given is POSTed to the replica's `/score` directly (not through the gateway:
no auth, no traffic split, the replica alone is measured) by `concurrency` threads, each on its
own keep-alive connection, for `duration_s`; meanwhile the RSS of the replica's process tree (the
process listening on its port and its children, found with psutil) is sampled every 0.1 s. The
peak and the requests/s then go to the pure choice (core/planning/sizing.py).

Only a replica on this machine can be measured (a 127.0.0.x address: the local provider's
nodes and local endpoints): the server reads the process's memory itself. Elsewhere, 400.

The requests/s is what one Python client process could drive: for a very fast model it is a
lower bound of the replica's rate, so the replica count errs on the side of more replicas.
"""

from __future__ import annotations

import ipaddress
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil

from cible.client.http import httpx, tls_verify
from cible.core import catalog
from cible.core.errors import ConflictError, InvalidRequestError, InvalidSpecError
from cible.core.planning.sizing import MIB, recommend

if TYPE_CHECKING:
    from cible.server.services.deployments import DeploymentService

DEFAULT_DURATION_S = 10
MAX_DURATION_S = 120
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64
SAMPLE_INTERVAL_S = 0.1
DEFAULT_REQUEST_TIMEOUT_MS = 5000  # Azure's request_settings.request_timeout_ms default
TIMEOUT_MARGIN_S = 5.0  # past the replica's own timeout (it answers 500 then), a request is stuck
LOOPBACK = ipaddress.ip_network("127.0.0.0/24")
COMPUTE_TYPE = "amlcompute"  # replicas run on serverless nodes of catalog sizes


@dataclass(frozen=True)
class SizingRequest:
    body: bytes
    duration_s: float
    concurrency: int
    target_rps: float | None


@dataclass
class LoadResult:
    """What the load saw: answers, failures and the latencies of the successful ones."""

    succeeded: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str | None = None
    unreachable: str | None = None  # the replica stopped answering at all (connection refused, reset)

    @property
    def requests(self) -> int:
        return self.succeeded + self.errors


def parse_request(body: Any) -> SizingRequest:
    """The route's body `{"request", "duration_s", "concurrency", "target_rps"}`, checked."""
    if not isinstance(body, dict):
        raise InvalidRequestError('the request body is {"request": <the scoring request>, "duration_s": 10, '
                                  '"concurrency": 4, "target_rps": null}', details={"field": "request"})
    unknown = sorted(set(body) - {"request", "duration_s", "concurrency", "target_rps"})
    if unknown:
        raise InvalidRequestError(f"{unknown[0]}: not a field of recommend-size (request, duration_s, concurrency, "
                                  "target_rps)", details={"field": unknown[0]})
    request = body.get("request")
    if isinstance(request, str):
        payload = request.encode("utf-8")
    elif isinstance(request, (dict, list)):
        payload = json.dumps(request, separators=(",", ":")).encode("utf-8")
    else:
        raise InvalidRequestError("request: give the body to send to the scoring script, as a JSON object or a "
                                  "string (a request file's content)", details={"field": "request"})
    duration = _number(body, "duration_s", DEFAULT_DURATION_S, 1, MAX_DURATION_S)
    concurrency = _number(body, "concurrency", DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY)
    if concurrency != int(concurrency):
        raise InvalidRequestError(f"concurrency: a whole number of requests in flight, not {concurrency!r}",
                                  details={"field": "concurrency"})
    target = body.get("target_rps")
    if target is not None:
        target = _number(body, "target_rps", None, 0, math.inf)
        if not target > 0:
            raise InvalidRequestError("target_rps: a number of requests per second above 0",
                                      details={"field": "target_rps"})
    return SizingRequest(body=payload, duration_s=float(duration), concurrency=int(concurrency), target_rps=target)


def _number(body: dict[str, Any], key: str, default: float | None, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        bounds = f"from {low:g} to {high:g}" if math.isfinite(high) else f"from {low:g}"
        raise InvalidRequestError(f"{key}: a number {bounds}, not {value!r}", details={"field": key})
    return value


def loopback_port(url: str | None, replica: str) -> int:
    """The port of a replica served on this machine (http://127.0.0.x:PORT); 400 for any other."""
    parts = urlsplit(url or "")
    try:
        host_ok = parts.hostname is not None and ipaddress.ip_address(parts.hostname) in LOOPBACK
    except ValueError:  # a host name, not an address
        host_ok = False
    if not host_ok or parts.port is None:
        raise InvalidRequestError(
            f"replica '{replica}' listens at {url}, not on this machine (127.0.0.x): the server measures the memory "
            "of replicas it can see, those of local endpoints and of the local provider's nodes. Measure the "
            "deployment on a local endpoint (`cible online-deployment create --local ...`) instead",
            details={"field": "replica", "url": url})
    return parts.port


def listening_pids(port: int) -> list[int]:
    """The processes listening on TCP `port` on this machine (several when workers share the socket)."""
    def listens(conn: Any) -> bool:
        return conn.status == psutil.CONN_LISTEN and bool(conn.laddr) and conn.laddr.port == port

    try:
        return sorted({c.pid for c in psutil.net_connections(kind="tcp") if c.pid and listens(c)})
    except psutil.AccessDenied:  # some systems answer only process by process
        pids = set()
        for proc in psutil.process_iter():
            try:
                connections = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
                if any(listens(c) for c in connections(kind="tcp")):
                    pids.add(proc.pid)
            except psutil.Error:
                continue
        return sorted(pids)


class TreeMemory:
    """Samples the RSS of process trees (roots and every descendant, a child seen once stays watched)
    on its own thread, keeping the peak. `lost` says when every process of the trees was gone."""

    def __init__(self, pids: list[int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._known: dict[int, psutil.Process] = {}
        for pid in pids:
            try:
                self._known[pid] = psutil.Process(pid)
            except psutil.Error:
                continue
        self.interval_s = interval_s
        self.peak = 0
        self.first = 0
        self.samples = 0
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cible-sizing-memory", daemon=True)

    def sample(self) -> int:
        for proc in list(self._known.values()):
            try:
                for child in proc.children(recursive=True):
                    self._known.setdefault(child.pid, child)
            except psutil.Error:
                continue
        rss, alive = 0, 0
        for proc in self._known.values():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                rss += proc.memory_info().rss
                alive += 1
            except psutil.Error:
                continue
        if alive == 0:
            self.lost = True
        if self.samples == 0:
            self.first = rss
        self.samples += 1
        self.peak = max(self.peak, rss)
        return rss

    def __enter__(self) -> TreeMemory:
        self.sample()  # the replica idle: the peak is at least that
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


def run_load(url: str, body: bytes, *, concurrency: int, duration_s: float, timeout_s: float) -> LoadResult:
    """POST `body` to `url` from `concurrency` threads, each request after the previous, for `duration_s`."""
    start = time.perf_counter()
    deadline = start + duration_s

    def worker() -> LoadResult:
        seen = LoadResult()
        with httpx.Client(timeout=timeout_s, trust_env=False, verify=tls_verify(url),
                          headers={"Content-Type": "application/json"}) as client:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    response = client.post(url, content=body)
                except httpx.TimeoutException as exc:  # slow, not gone: the next request tries again
                    seen.errors += 1
                    seen.first_error = seen.first_error or f"no answer within {timeout_s:g} s ({type(exc).__name__})"
                    continue
                except httpx.HTTPError as exc:  # refused, reset: the replica is gone, stop loading it
                    seen.errors += 1
                    seen.unreachable = f"{type(exc).__name__}: {exc}"
                    seen.first_error = seen.first_error or seen.unreachable
                    break
                if 200 <= response.status_code < 300:
                    seen.succeeded += 1
                    seen.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
                else:
                    seen.errors += 1
                    seen.first_error = seen.first_error or \
                        f"status {response.status_code}: {response.text.strip()[:300] or '(empty body)'}"
        return seen

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cible-sizing-load") as pool:
        parts = [f.result() for f in [pool.submit(worker) for _ in range(concurrency)]]
    total = LoadResult(elapsed_s=time.perf_counter() - start)
    for part in parts:
        total.succeeded += part.succeeded
        total.errors += part.errors
        total.latencies_ms += part.latencies_ms
        total.first_error = total.first_error or part.first_error
        total.unreachable = total.unreachable or part.unreachable
    return total


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def recommend_size(deployments: DeploymentService, endpoint: str, name: str, body: Any, *,
                   local: bool = False) -> dict[str, Any]:
    """Measure a ready replica of the deployment under load, and the size and replicas it needs."""
    asked = parse_request(body)
    deployment = deployments.get(endpoint, name, local=local)
    where = " --local" if local else ""
    ready = sorted((r for r in deployment.get("replicas") or [] if r.get("state") == "Ready" and r.get("url")),
                   key=lambda r: r.get("generation") or 0, reverse=True)
    if not ready:
        raise ConflictError(
            f"deployment '{name}' of endpoint '{endpoint}' has no Ready replica to measure yet; wait until it has "
            f"one (`cible online-deployment show -n {name} -e {endpoint}{where}`) and try again",
            details={"field": "replicas", "provisioning_state": deployment.get("provisioning_state")})
    replica = ready[0]
    port = loopback_port(replica["url"], replica["name"])
    pids = listening_pids(port)
    if not pids:
        raise ConflictError(f"no process on this machine listens on port {port} (replica '{replica['name']}'); it "
                            "may have just stopped. Try again once the deployment has a Ready replica",
                            details={"field": "replicas", "url": replica["url"]})
    spec = deployment.get("spec") or {}
    timeout_ms = (spec.get("request_settings") or {}).get("request_timeout_ms") or DEFAULT_REQUEST_TIMEOUT_MS
    with TreeMemory(pids) as memory:
        load = run_load(f"{replica['url']}/score", asked.body, concurrency=asked.concurrency,
                        duration_s=asked.duration_s, timeout_s=timeout_ms / 1000.0 + TIMEOUT_MARGIN_S)
    _check_load(load, memory, name, endpoint, replica["name"], spec.get("instance_type"), where)
    rps = round(load.succeeded / load.elapsed_s, 2) if load.elapsed_s > 0 else 0.0
    current = spec.get("instance_type")
    choice = recommend(memory.peak, rps, asked.target_rps,
                       [s for s in catalog.all_sizes() if COMPUTE_TYPE in s.compute_types],
                       deployments.clock.now().date(), min_gpus=_gpus(current), current=current)
    measured = (f"Replica {replica['name']} under {asked.concurrency} concurrent request"
                f"{'s' if asked.concurrency != 1 else ''} for {asked.duration_s:g} s: {load.requests} requests, "
                f"{load.errors} failed, {rps:g} requests/s; its memory went from {memory.first / MIB:.1f} MB "
                f"(at the start) to a peak of {memory.peak / MIB:.1f} MB.")
    if load.errors:
        measured += f" The first failure: {load.first_error}."
    answer: dict[str, Any] = {
        "endpoint_name": endpoint, "deployment_name": name, "replica": replica["name"],
        "duration_s": asked.duration_s, "concurrency": asked.concurrency,
        "requests": load.requests, "errors": load.errors, "rps": rps,
        "p50_ms": _ms(percentile(load.latencies_ms, 50)), "p99_ms": _ms(percentile(load.latencies_ms, 99)),
        "start_memory_mb": round(memory.first / MIB, 1), "peak_memory_mb": round(memory.peak / MIB, 1),
        "peak_memory_bytes": memory.peak, "needed_memory_mb": round(choice.needed_memory_bytes / MIB, 1),
        "recommended_instance_type": choice.size.name, "memory_gb": choice.size.memory_gb,
        "vcpus": choice.size.vcpus, "price_per_hour": choice.size.price_per_hour,
        "current_instance_type": current,
    }
    if asked.target_rps is not None:
        answer["target_rps"] = asked.target_rps
        answer["instance_count"] = choice.instance_count
    answer["explanation"] = f"{measured} {choice.explanation}"
    return answer


def _check_load(load: LoadResult, memory: TreeMemory, name: str, endpoint: str, replica: str,
                instance_type: str | None, where: str) -> None:
    """A measurement that says nothing about the deployment is an error that says why."""
    logs = f"`cible online-deployment get-logs -n {name} -e {endpoint}{where}`"
    if memory.lost or (load.unreachable and load.succeeded == 0):
        limit = f" (the memory of {instance_type}, its instance_type, perhaps: a node kills what exceeds it)" \
            if instance_type else ""
        raise ConflictError(
            f"replica '{replica}' stopped answering during the measurement after {load.succeeded} requests "
            f"({load.unreachable or 'its process exited'}); its peak memory until then was "
            f"{memory.peak / MIB:.1f} MB{limit}. Its output: {logs}",
            details={"field": "replicas", "peak_memory_bytes": memory.peak})
    if load.succeeded == 0:
        raise InvalidRequestError(
            f"request: every one of the {load.requests} requests failed (the first: {load.first_error}); a size "
            f"measured on failing requests says nothing. Check the request with `cible online-endpoint invoke "
            f"-n {endpoint} --deployment-name {name} --request-file ...`{where} and the output with {logs}",
            details={"field": "request", "errors": load.errors})


def _gpus(instance_type: str | None) -> int:
    if not instance_type:
        return 0
    try:
        return catalog.get_size(instance_type).gpus
    except InvalidSpecError:  # not a catalog size (a Kubernetes instance type): size it as a CPU one
        return 0


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
