"""Probing replicas: `GET /` on each, as Azure's liveness and readiness probes do.

A probe is an observation of a pass, made outside any transaction; its result feeds the pure
decision (core/planning/deployments.py). A replica whose `init()` raised answers 503 with the
header `x-cible-init-failed`: it will never get ready, so it is failed at once with the error
(its log has the traceback) rather than after `failure_threshold` probes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from cible.client.http import httpx, tls_verify
from cible.core.planning.deployments import ProbeOutcome

INIT_FAILED_HEADER = "x-cible-init-failed"
MAX_PARALLEL = 16


def probe(url: str, timeout_s: float) -> ProbeOutcome:
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False, verify=tls_verify(url)) as client:
            response = client.get(f"{url}/")
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the replica did not answer
        return ProbeOutcome(ok=False, detail=f"GET / did not answer: {type(exc).__name__}")
    if response.status_code == 200:
        return ProbeOutcome(ok=True)
    if response.headers.get(INIT_FAILED_HEADER):
        return ProbeOutcome(ok=False, init_failed=response.text[:2000] or "init() raised",
                           detail="its scoring script's init() raised")
    return ProbeOutcome(ok=False, detail=f"GET / answered {response.status_code}")


def probe_all(targets: dict[str, tuple[str, float]]) -> dict[str, ProbeOutcome]:
    """Probe several replicas at once: replica -> (url, timeout) gives replica -> result."""
    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        futures = {name: pool.submit(probe, url, timeout) for name, (url, timeout) in targets.items()}
        return {name: future.result() for name, future in futures.items()}
