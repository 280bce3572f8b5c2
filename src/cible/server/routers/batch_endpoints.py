"""/api/v1/batch-endpoints: thin HTTP over the batch endpoint service (endpoints, deployments, invoke)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from cible.server.identity import caller
from cible.server.routers.paging import DEFAULT_TOP, Skip, Top
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.batch_endpoints import (
    BatchDeployment,
    BatchDeploymentPage,
    BatchEndpoint,
    BatchEndpointPage,
    Deleted,
)
from cible.server.schemas.jobs import Job, JobPage

router = APIRouter(prefix="/api/v1/batch-endpoints", tags=["batch endpoints"], default_response_class=JSON)
Update = Annotated[bool, Query(description="update it when it exists (else 409)")]


def _service(request: Request):  # noqa: ANN202
    return request.app.state.batch_endpoints


@router.get("", summary="The batch endpoints", **answers(BatchEndpointPage))
def list_endpoints(request: Request) -> dict[str, Any]:
    return _service(request).list_endpoints()


@router.put("/{name}", summary="Create a batch endpoint (`az ml batch-endpoint create`)", **answers(BatchEndpoint))
def put_endpoint(name: str, request: Request, body: dict[str, Any] = Body(...), update: Update = False) -> dict[str, Any]:
    return _service(request).create_endpoint(name, body, update=update, user=caller(request))


@router.patch("/{name}", summary="Update a batch endpoint: a new spec, or `set` assignments "
                                 "(defaults.deployment_name=D)", **answers(BatchEndpoint))
def patch_endpoint(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request).update_endpoint(name, body)


@router.get("/{name}", summary="A batch endpoint", **answers(BatchEndpoint))
def get_endpoint(name: str, request: Request) -> dict[str, Any]:
    return _service(request).get_endpoint(name)


@router.delete("/{name}", summary="Delete a batch endpoint and its deployments (their jobs stay)",
               **answers(Deleted))
def delete_endpoint(name: str, request: Request) -> dict[str, Any]:
    return _service(request).delete_endpoint(name)


@router.post("/{name}:invoke", summary="Score data with a deployment (the default, or `deployment_name`): "
                                       "the job it makes", **answers(Job))
def invoke(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request).invoke(name, body, user=caller(request))


@router.get("/{name}/jobs", summary="The jobs the endpoint's invocations made, newest first", **answers(JobPage))
def list_endpoint_jobs(name: str, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return _service(request).list_jobs(name, skip=skip, top=top)


@router.get("/{endpoint}/deployments", summary="A batch endpoint's deployments", **answers(BatchDeploymentPage))
def list_deployments(endpoint: str, request: Request) -> dict[str, Any]:
    return _service(request).list_deployments(endpoint)


@router.put("/{endpoint}/deployments/{name}", summary="Create a batch deployment (`az ml batch-deployment create`)",
            **answers(BatchDeployment))
def put_deployment(endpoint: str, name: str, request: Request, body: dict[str, Any] = Body(...),
                   update: Update = False) -> dict[str, Any]:
    return _service(request).create_deployment(endpoint, name, body, update=update, user=caller(request))


@router.patch("/{endpoint}/deployments/{name}", summary="Update a batch deployment: a new spec, or `set` assignments",
              **answers(BatchDeployment))
def patch_deployment(endpoint: str, name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return _service(request).update_deployment(endpoint, name, body)


@router.get("/{endpoint}/deployments/{name}", summary="A batch deployment", **answers(BatchDeployment))
def get_deployment(endpoint: str, name: str, request: Request) -> dict[str, Any]:
    return _service(request).get_deployment(endpoint, name)


@router.delete("/{endpoint}/deployments/{name}", summary="Delete a batch deployment (not the endpoint's default)",
               **answers(Deleted))
def delete_deployment(endpoint: str, name: str, request: Request) -> dict[str, Any]:
    return _service(request).delete_deployment(endpoint, name)


@router.get("/{endpoint}/deployments/{name}/jobs", summary="The jobs a deployment's invocations made, newest first",
            **answers(JobPage))
def list_deployment_jobs(endpoint: str, name: str, request: Request, skip: Skip = 0,
                         top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return _service(request).list_jobs(endpoint, name, skip=skip, top=top)
