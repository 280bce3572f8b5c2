"""The endpoint gateway: one HTTP port in front of every online endpoint's replicas (auth, traffic
weights, the deployment header, mirroring, queueing, timeouts, metrics).

routes.py: the RouteTable the reconciler publishes and the pure routing decisions; app.py: what happens
to a request, and the status codes; upstream.py: keep-alive connections to replicas; metrics.py: the
rolling per-deployment window; server.py: the HTTP front, its thread and loop, and `Gateway`."""

from cible.server.gateway.routes import (
    DeploymentRoute,
    EndpointRoute,
    Replica,
    RouteTable,
    UnknownDeployment,
    pick_deployment,
    pick_mirror,
)
from cible.server.gateway.server import Gateway

__all__ = [
    "DeploymentRoute",
    "EndpointRoute",
    "Gateway",
    "Replica",
    "RouteTable",
    "UnknownDeployment",
    "pick_deployment",
    "pick_mirror",
]
