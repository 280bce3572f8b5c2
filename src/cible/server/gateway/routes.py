"""The route table the endpoint reconciler publishes to the gateway, and the pure routing decisions.

The table is plain frozen dataclasses (no pydantic: the gateway reads it on every request). The
decisions here take a random source so that tests can seed it; the gateway passes its own.

Routing rules (azureml-spec §5.4):
- `azureml-model-deployment: <name>` pins a deployment, whatever its traffic share (0 % included),
  so a new deployment can be tried before traffic shifts to it. An unknown name is a 404.
- Otherwise a deployment is drawn by the `traffic` weights; no weight above zero means no deployment
  takes traffic (the gateway answers 503).
- Mirroring copies a share of the *traffic-routed* requests to a shadow deployment. A pinned request is
  not mirrored: it was aimed at one deployment on purpose, and copying it elsewhere would double a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class RandomSource(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True)
class Replica:
    name: str
    url: str  # "http://127.0.0.1:PORT"


@dataclass(frozen=True)
class DeploymentRoute:
    name: str
    replicas: tuple[Replica, ...] = ()  # ready replicas only
    max_concurrent_requests_per_instance: int = 1
    max_queue_wait_ms: int = 500
    request_timeout_ms: int = 5000
    scale_from_zero: bool = False  # no replica yet but one is wanted on demand: wait for it


@dataclass(frozen=True)
class EndpointRoute:
    name: str
    auth_mode: str  # "key" | "aml_token" | "none" (local endpoints)
    deployments: dict[str, DeploymentRoute] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    mirror_traffic: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteTable:
    endpoints: dict[str, EndpointRoute] = field(default_factory=dict)


class UnknownDeployment(LookupError):
    """The `azureml-model-deployment` header names a deployment the endpoint does not have (a 404)."""


def pick_deployment(route: EndpointRoute, header: str | None, rng: RandomSource) -> str | None:
    """The deployment that serves one request: the pinned one when `header` names it, else one drawn by
    the traffic weights; None when no deployment has traffic. Raises UnknownDeployment for a header
    naming no deployment of the endpoint."""
    if header:
        if header not in route.deployments:
            raise UnknownDeployment(header)
        return header
    total = 0
    for weight in route.traffic.values():
        if weight > 0:
            total += weight
    if total <= 0:
        return None
    point = rng.random() * total
    chosen = None
    for name, weight in route.traffic.items():
        if weight > 0:
            chosen = name
            point -= weight
            if point < 0:
                return name
    return chosen  # float rounding at the very top of the range


def pick_mirror(route: EndpointRoute, pinned: bool, rng: RandomSource) -> str | None:
    """The shadow deployment this request is copied to, or None. Each mirror deployment gets its
    percentage of the traffic-routed requests (Azure allows one, at most 50 %; several are drawn from
    one roll so that their shares add up). Pinned requests and unknown mirror names are never copied."""
    if pinned or not route.mirror_traffic:
        return None
    point = rng.random() * 100.0
    for name, percent in route.mirror_traffic.items():
        if percent <= 0:
            continue
        if point < percent:
            return name if name in route.deployments else None
        point -= percent
    return None
