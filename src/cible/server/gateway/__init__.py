"""The endpoint gateway: one HTTP port in front of every online endpoint's replicas (auth, traffic
weights, the deployment header, mirroring, queueing, timeouts, metrics). See app.py for the status codes
and server.py for the threading."""

from cible.server.gateway.routes import (
    DeploymentRoute,
    EndpointRoute,
    Replica,
    RouteTable,
    UnknownDeployment,
    pick_deployment,
    pick_mirror,
)

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


def __getattr__(name: str):  # the server (uvicorn, httptools) loads only when asked for
    if name == "Gateway":
        from cible.server.gateway.server import Gateway

        return Gateway
    raise AttributeError(name)
