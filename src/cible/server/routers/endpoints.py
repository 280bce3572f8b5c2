"""/api/v1/online-endpoints: thin HTTP over the endpoint and deployment services.

`?local=true` on every route addresses the local endpoints (`--local`), a namespace of their own.
Invoking an endpoint is not here: it is the gateway's (its scoring_uri).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import PlainTextResponse

from cible.server.identity import caller
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.endpoints import (
    EndpointCredentials,
    OnlineDeployment,
    OnlineDeploymentPage,
    OnlineEndpoint,
    OnlineEndpointPage,
    SizeRecommendation,
)

router = APIRouter(prefix="/api/v1/online-endpoints", tags=["online endpoints"], default_response_class=JSON)
Local = Annotated[bool, Query(description="a local endpoint (`--local`): served on the server's machine, no auth")]
Update = Annotated[bool, Query(description="update it when it exists (else 409)")]
MAX_LOG_LINES = 1_000_000


def _endpoints(request: Request):  # noqa: ANN202
    return request.app.state.endpoints


def _deployments(request: Request):  # noqa: ANN202
    return request.app.state.deployments


@router.get("", summary="The online endpoints", **answers(OnlineEndpointPage))
def list_endpoints(request: Request, local: Local = False) -> dict[str, Any]:
    return _endpoints(request).list(local=local)


@router.put("/{name}", summary="Create an online endpoint (`az ml online-endpoint create`)",
            **answers(OnlineEndpoint))
def put_endpoint(name: str, request: Request, body: dict[str, Any] = Body(...), local: Local = False,
                 update: Update = False) -> dict[str, Any]:
    return _endpoints(request).create(name, body, local=local, update=update, user=caller(request))


@router.patch("/{name}", summary="Update an endpoint: its spec, traffic or mirror_traffic",
              **answers(OnlineEndpoint))
def patch_endpoint(name: str, request: Request, body: dict[str, Any] = Body(...), local: Local = False) -> dict[str, Any]:
    return _endpoints(request).update(name, body, local=local)


@router.get("/{name}", summary="An online endpoint, with per-deployment requests/s, latency and errors",
            **answers(OnlineEndpoint))
def get_endpoint(name: str, request: Request, local: Local = False) -> dict[str, Any]:
    return _endpoints(request).get(name, local=local)


@router.delete("/{name}", status_code=202, summary="Delete an endpoint: its replicas stop, then it is gone",
               **answers(OnlineEndpoint))
def delete_endpoint(name: str, request: Request, local: Local = False) -> dict[str, Any]:
    return _endpoints(request).delete(name, local=local)


@router.post("/{name}/credentials", summary="The endpoint's keys (auth_mode key) or a new token (aml_token)",
             **answers(EndpointCredentials))
def get_credentials(name: str, request: Request, local: Local = False) -> dict[str, Any]:
    return _endpoints(request).credentials(name, local=local)


@router.post("/{name}/regenerate-keys", status_code=204, summary="Regenerate the primary or secondary key")
def regenerate_keys(name: str, request: Request, body: dict[str, Any] = Body(...), local: Local = False) -> Response:
    _endpoints(request).regenerate_key(name, str(body.get("key_type", "")), local=local)
    return Response(status_code=204)


@router.get("/{endpoint}/deployments", summary="An endpoint's deployments", **answers(OnlineDeploymentPage))
def list_deployments(endpoint: str, request: Request, local: Local = False) -> dict[str, Any]:
    return _deployments(request).list(endpoint, local=local)


@router.put("/{endpoint}/deployments/{name}", summary="Create a deployment (`az ml online-deployment create`)",
            **answers(OnlineDeployment))
def put_deployment(endpoint: str, name: str, request: Request, body: dict[str, Any] = Body(...), local: Local = False,
                   update: Update = False) -> dict[str, Any]:
    return _deployments(request).create(endpoint, name, body, local=local, update=update,
                                        all_traffic=bool(body.get("all_traffic")), user=caller(request))


@router.patch("/{endpoint}/deployments/{name}", summary="Update a deployment: a new spec, or `set` assignments",
              **answers(OnlineDeployment))
def patch_deployment(endpoint: str, name: str, request: Request, body: dict[str, Any] = Body(...),
                     local: Local = False) -> dict[str, Any]:
    return _deployments(request).update(endpoint, name, body, local=local)


@router.get("/{endpoint}/deployments/{name}", summary="A deployment and its replicas", **answers(OnlineDeployment))
def get_deployment(endpoint: str, name: str, request: Request, local: Local = False) -> dict[str, Any]:
    return _deployments(request).get(endpoint, name, local=local)


@router.delete("/{endpoint}/deployments/{name}", status_code=202, summary="Delete a deployment (no traffic first)",
               **answers(OnlineDeployment))
def delete_deployment(endpoint: str, name: str, request: Request, local: Local = False) -> dict[str, Any]:
    return _deployments(request).delete(endpoint, name, local=local)


@router.get("/{endpoint}/deployments/{name}/logs", response_class=PlainTextResponse,
            summary="The last lines of a replica's output (`get-logs --lines N`)")
def get_logs(endpoint: str, name: str, request: Request, local: Local = False,
             lines: Annotated[int, Query(ge=1, le=MAX_LOG_LINES)] = 5000) -> PlainTextResponse:
    return PlainTextResponse(_deployments(request).logs(endpoint, name, local=local, lines=lines))


@router.post("/{endpoint}/deployments/{name}:recommend-size", **answers(SizeRecommendation),
             summary="Load a ready replica for a few seconds: its peak memory, requests/s, and the smallest size "
                     "with 150 % of that memory (and the replicas for target_rps)")
def recommend_size(endpoint: str, name: str, request: Request, body: dict[str, Any] = Body(...),
                   local: Local = False) -> dict[str, Any]:
    # A blocking call of up to duration_s (120 s at most) and the replica's request timeout: FastAPI runs a
    # plain `def` route in its thread pool, so the server goes on meanwhile.
    return _deployments(request).recommend_size(endpoint, name, body, local=local)
