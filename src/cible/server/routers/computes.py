"""/api/v1 computes (clusters, instances), quotas and cost."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cible.server.identity import as_admin as _as_admin
from cible.server.identity import caller, identity
from cible.server.routers.paging import DEFAULT_TOP, Skip, Top
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.computes import (
    Compute,
    ComputePage,
    Credential,
    CredentialPage,
    NodePage,
    PowerRequest,
    Preempted,
    ProviderList,
    Snoozed,
    Terminal,
)
from cible.server.schemas.quotas import CostReport, QuotaIncreaseRequest, Quotas, UsagePage
from cible.server.services.quotas import MAX_REQUEST_ID, MAX_VCPUS

router = APIRouter(prefix="/api/v1", default_response_class=JSON)
def _who(request: Request) -> str:
    """Who acts, as the history names them (the workspace token without a user named: its Owner)."""
    return identity(request).user


Until = Annotated[datetime | None, Query(description="the report as of this time (at most now): a report's later "
                                                     "pages pass its first page's `until`")]


class Snooze(BaseModel):
    minutes: float = Field(..., gt=0, le=24 * 60, description="postpone the idle shutdown this long")


class QuotaSet(BaseModel):
    vcpus: int | None = Field(..., ge=0, le=MAX_VCPUS, description="the quota in vCPUs; null removes it (no limit)")


class QuotaRequest(BaseModel):
    vcpus: int = Field(..., ge=1, le=MAX_VCPUS, description="the quota asked for, in vCPUs")
    reason: str | None = Field(None, max_length=2000)


@router.get("/computes", tags=["computes"], summary="A page of the computes: local first, then by name",
            **answers(ComputePage))
def list_computes(request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.computes.list(skip=skip, top=top)


@router.get("/computes:usage", tags=["quotas"], summary="vCPU use against the quotas (`list-usage`, Azure's shape)",
            **answers(UsagePage))
def list_usage(request: Request) -> dict[str, Any]:
    return request.app.state.quotas.list_usage()


@router.get("/computes:providers", tags=["computes"], summary="The node providers: usable or not, and why",
            **answers(ProviderList))
def list_providers(request: Request) -> dict[str, Any]:
    return request.app.state.computes.node_providers.listing()


@router.get("/computes/{name}", tags=["computes"], summary="A compute, as `az ml compute show`", **answers(Compute))
def get_compute(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.computes.get(name)


@router.put("/computes/{name}", tags=["computes"], summary="Create a compute (Azure ML compute YAML as JSON)",
            **answers(Compute))
def create_compute(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.computes.create(name, body, user=caller(request))


@router.patch("/computes/{name}", tags=["computes"], summary="Change a cluster's scale settings",
              **answers(Compute))
def update_compute(name: str, request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return request.app.state.computes.update(name, body)


@router.delete("/computes/{name}", tags=["computes"], status_code=204,
               summary="Delete a compute; one with nodes drains first (202, provisioning_state Deleting)",
               responses={202: {"model": Compute, "description": "a compute with nodes: it drains first "
                                                                "(provisioning_state Deleting)"}})
def delete_compute(name: str, request: Request) -> Response:
    draining = request.app.state.computes.delete(name, by=_who(request))
    if draining is None:
        return Response(status_code=204)
    return JSONResponse(draining, status_code=202)


class HostKeyReplacement(BaseModel):
    expected_host_key_fingerprint: str | None = Field(
        None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$",
        description="pin the key only if it has this fingerprint (`ssh-keygen -lf` on the host); else trust it "
                    "as offered")


@router.post("/computes/{name}:replace-host-key", tags=["computes"],
             summary="Pin the host key an attached machine offers now (after a reinstall), in place of the pinned one",
             **answers(Compute))
def replace_host_key(name: str, request: Request, body: HostKeyReplacement | None = None) -> dict[str, Any]:
    return request.app.state.computes.replace_host_key(name, body.expected_host_key_fingerprint if body else None)


class CredentialSetting(BaseModel):
    username: str = Field(..., min_length=1, max_length=64, description="your user on the Slurm cluster's login "
                                                                        "host: the Slurm identity your jobs run as")
    ssh_private_key_file: str | None = Field(
        None, max_length=4096, description="a private key on the workspace server's machine (its path is stored, "
                                           "never the key) whose public key is in your authorized_keys there")
    use_ssh_agent: bool = Field(False, description="log in with the server's ssh-agent instead of a key file")


@router.put("/computes/{name}/credentials/me", tags=["computes"],
            summary="Set your own login to a Slurm cluster: your jobs there run as that Slurm user",
            **answers(Credential))
def set_credential(name: str, body: CredentialSetting, request: Request) -> dict[str, Any]:
    return request.app.state.computes.credentials.set(
        name, caller(request), username=body.username, ssh_private_key_file=body.ssh_private_key_file,
        use_ssh_agent=body.use_ssh_agent)


@router.delete("/computes/{name}/credentials/me", tags=["computes"], status_code=204,
               summary="Remove your own login to a Slurm cluster")
def remove_credential(name: str, request: Request) -> Response:
    request.app.state.computes.credentials.delete(name, caller(request))
    return Response(status_code=204)


@router.get("/computes/{name}/credentials", tags=["computes"],
            summary="Who has a login to a Slurm cluster, and as which user (never a key)", **answers(CredentialPage))
def list_credentials(name: str, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.computes.credentials.list(name, skip=skip, top=top)


@router.post("/computes/{name}:start", tags=["computes"], summary="Start a compute instance",
             **answers(PowerRequest))
def start_instance(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.instances.start(name, _who(request), _as_admin(request))


@router.post("/computes/{name}:stop", tags=["computes"], summary="Stop a compute instance (refused while a job runs)",
             **answers(PowerRequest))
def stop_instance(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.instances.stop(name, _who(request), _as_admin(request))


@router.post("/computes/{name}:restart", tags=["computes"], summary="Restart a compute instance's node",
             **answers(PowerRequest))
def restart_instance(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.instances.restart(name, _who(request), _as_admin(request))


@router.post("/computes/{name}:snooze", tags=["computes"], summary="Postpone a compute instance's idle shutdown",
             **answers(Snoozed))
def snooze_instance(name: str, body: Snooze, request: Request) -> dict[str, Any]:
    return request.app.state.instances.snooze(name, body.minutes, caller(request), _as_admin(request))


@router.post("/computes/{name}:terminal", tags=["computes"], summary="Where a shell on the instance's node runs",
             **answers(Terminal))
def instance_terminal(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.instances.terminal(name, caller(request), _as_admin(request))


@router.post("/computes/{name}/nodes/{node_id}:preempt", tags=["computes"],
             summary="Evict a node of a low-priority cluster now (drills and tests)", **answers(Preempted))
def preempt_node(name: str, node_id: str, request: Request) -> dict[str, Any]:
    return request.app.state.computes.preempt(name, node_id)


@router.get("/computes/{name}/nodes", tags=["computes"], summary="A compute's nodes (`list-nodes`)",
            **answers(NodePage))
def list_nodes(name: str, request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.computes.nodes(name, skip=skip, top=top)


@router.get("/quotas", tags=["quotas"], summary="The workspace's vCPU quotas and a page of the increase requests",
            **answers(Quotas))
def show_quotas(request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.quotas.show(skip=skip, top=top)


@router.put("/quotas/{scope}", tags=["quotas"], summary="Set a quota: a VM family, 'total' or 'low_priority'",
            **answers(Quotas))
def set_quota(scope: str, body: QuotaSet, request: Request) -> dict[str, Any]:
    return request.app.state.quotas.set(scope, body.vcpus)


@router.post("/quotas/{scope}/requests", tags=["quotas"], summary="Ask for a quota increase",
             **answers(QuotaIncreaseRequest))
def request_quota(scope: str, body: QuotaRequest, request: Request) -> dict[str, Any]:
    return request.app.state.quotas.request(scope, body.vcpus, body.reason, caller(request))


@router.post("/quota-requests/{request_id}:approve", tags=["quotas"], summary="Approve an increase (admin)",
             **answers(QuotaIncreaseRequest))
def approve_quota(request: Request, request_id: int = Path(..., ge=1, le=MAX_REQUEST_ID)) -> dict[str, Any]:
    return request.app.state.quotas.decide(request_id, True, _who(request))


@router.post("/quota-requests/{request_id}:deny", tags=["quotas"], summary="Deny an increase (admin)",
             **answers(QuotaIncreaseRequest))
def deny_quota(request: Request, request_id: int = Path(..., ge=1, le=MAX_REQUEST_ID)) -> dict[str, Any]:
    return request.app.state.quotas.decide(request_id, False, _who(request))


@router.get("/costs", tags=["cost"], summary="Cost of the nodes by compute, job or user (a page of its lines)",
            **answers(CostReport))
def cost_report(request: Request, by: str = Query("compute"), since: datetime | None = None,
                until: Until = None, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return request.app.state.costs.report(by, since, until, skip=skip, top=top)
