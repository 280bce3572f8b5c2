"""Online endpoints and deployments as the API answers them: Azure's fields, then cible's."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, Number, Page


class DeploymentFigures(Envelope):
    """What the gateway saw of a deployment over the last 5 minutes."""

    requests_per_s: Number = Field(description="requests answered per second")
    p50_ms: Number = Field(description="median latency, ms, as the caller saw it")
    p99_ms: Number = Field(description="99th percentile latency, ms")
    errors: int = Field(description="answers that were not 2xx (the replica's, and the gateway's 408/424/429/502/503)")


class OnlineEndpoint(Envelope):
    name: str = Field(description="the endpoint's name")
    auth_mode: str = Field(description="key, aml_token, or none for a local endpoint")
    provisioning_state: str = Field(description="Succeeded, Deleting ...")
    scoring_uri: str | None = Field(None, description="where to POST requests (null until it can be reached)")
    openapi_uri: str | None = Field(None, description="the swagger.json of its deployments' scoring scripts")
    traffic: dict[str, int] = Field(description="deployment -> percent of the requests")
    mirror_traffic: dict[str, int] = Field(description="deployment -> percent of requests copied to it (shadow)")
    local: bool = Field(description="a local endpoint (`--local`)")
    deployments: list[str] = Field(description="its deployments' names")
    metrics: dict[str, DeploymentFigures] | None = Field(None, description="per deployment, last 5 minutes")


class Replica(Envelope):
    name: str = Field(description="its job's name (`cible job show` it)")
    state: str = Field(description="Starting, Ready, Unready, Failed, Stopping")
    ready: bool = Field(description="in traffic")
    url: str | None = Field(None, description="where its scoring server listens")
    generation: int = Field(description="the deployment spec generation it serves")


class OnlineDeployment(Envelope):
    name: str = Field(description="the deployment's name")
    endpoint_name: str = Field(description="its endpoint")
    provisioning_state: str = Field(description="Creating, Updating, Succeeded, Failed, Deleting")
    instance_count: int = Field(description="replicas asked for (scale_settings default)")
    reason: str | None = Field(None, description="why it is as it is: replicas ready, failing, waiting")
    replicas: list[Replica] = Field(description="its replicas that run or are starting")
    spec: dict[str, Any] = Field(description="the deployment as stored")


class EndpointCredentials(Envelope):
    """`get-credentials`: the two keys (auth_mode key), or a token and its expiry (aml_token)."""

    primaryKey: str | None = Field(None, description="auth_mode key")  # noqa: N815 (Azure's name)
    secondaryKey: str | None = Field(None, description="auth_mode key")  # noqa: N815
    accessToken: str | None = Field(None, description="auth_mode aml_token")  # noqa: N815
    expiryTimeUtc: str | None = Field(None, description="when the token stops working")  # noqa: N815


class SizeRecommendation(Envelope):
    """`recommend-size`: one replica measured under load, and the size and replica count that follow."""

    endpoint_name: str = Field(description="the endpoint")
    deployment_name: str = Field(description="the deployment measured")
    replica: str = Field(description="the replica that was loaded (its job's name)")
    duration_s: Number = Field(description="how long it was loaded, seconds")
    concurrency: int = Field(description="requests in flight at once")
    requests: int = Field(description="requests sent")
    errors: int = Field(description="requests that failed (non-2xx or no answer)")
    rps: Number = Field(description="successful requests per second, this one replica")
    p50_ms: Number | None = Field(None, description="median latency of the successful requests, ms")
    p99_ms: Number | None = Field(None, description="99th percentile latency, ms")
    start_memory_mb: Number = Field(description="the replica's process tree RSS before the load, MiB")
    peak_memory_mb: Number = Field(description="the highest RSS sampled (every 0.1 s) during the load, MiB")
    peak_memory_bytes: int = Field(description="the same peak, in bytes")
    needed_memory_mb: Number = Field(description="150 % of the peak: the least memory a size may have, MiB")
    recommended_instance_type: str = Field(description="the smallest current catalog size with that much memory")
    memory_gb: Number = Field(description="its memory, GiB")
    vcpus: int = Field(description="its vCPUs")
    price_per_hour: Number = Field(description="its indicative price, USD per hour")
    current_instance_type: str | None = Field(None, description="the deployment's instance_type now")
    target_rps: Number | None = Field(None, description="the requests/s asked for (when given)")
    instance_count: int | None = Field(None, description="replicas for target_rps: ceil(target_rps / rps)")
    explanation: str = Field(description="the numbers that led to the recommendation, in words")


OnlineEndpointPage = Page[OnlineEndpoint]
OnlineDeploymentPage = Page[OnlineDeployment]
