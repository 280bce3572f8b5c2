"""Batch endpoints and deployments as the API answers them: Azure's fields, then cible's."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, Page


class BatchEndpointDefaults(Envelope):
    deployment_name: str | None = Field(None, description="the deployment `invoke` uses when it names none")


class BatchEndpoint(Envelope):
    name: str = Field(description="the endpoint's name")
    auth_mode: str = Field(description="aad_token (Azure's only mode; cible: the workspace's token)")
    defaults: BatchEndpointDefaults = Field(description="its default deployment")
    provisioning_state: str = Field(description="Succeeded (nothing runs between invocations)")
    scoring_uri: str = Field(description="where to POST an invocation (`:invoke` of this API)")
    deployments: list[str] = Field(description="its deployments' names")


class BatchDeployment(Envelope):
    name: str = Field(description="the deployment's name")
    endpoint_name: str = Field(description="its endpoint")
    type: str = Field(description="model or pipeline")
    provisioning_state: str = Field(description="Succeeded (nothing runs between invocations)")
    is_default: bool = Field(description="its endpoint's default deployment")
    compute: str | None = Field(None, description="the cluster its invocations' jobs run on")
    settings: dict[str, Any] | None = Field(None, description="mini-batch size, workers per node, retries, output")


class Deleted(Envelope):
    name: str = Field(description="what was deleted")
    deleted: bool = Field(description="true")


BatchEndpointPage = Page[BatchEndpoint]
BatchDeploymentPage = Page[BatchDeployment]
