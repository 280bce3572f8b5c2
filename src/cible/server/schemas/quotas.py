"""Quotas (vCPU limits and increase requests), usage in Azure's list-usage shape, and cost reports."""

from __future__ import annotations

from pydantic import Field

from cible.server.schemas.common import Envelope, IsoTime, Number, Page


class UsageName(Envelope):
    value: str = Field(description="the scope: a VM family or a total")
    localizedValue: str = Field(description="its label")


class UsageRow(Envelope):
    """One row of `az ml compute list-usage`, in Azure's shape."""

    id: str
    amlWorkspaceLocation: str = Field(description="always local")
    type: str = Field(description="dedicatedCores, vmFamily or lowPriorityCores usages")
    unit: str = Field(description="Count")
    currentValue: int = Field(description="vCPUs in use")
    limit: int = Field(description="the quota in vCPUs; -1: no limit")
    name: UsageName


UsagePage = Page[UsageRow]


class QuotaIncreaseRequest(Envelope):
    """A request for a quota increase."""

    id: int
    scope: str = Field(description="a VM family, total or low_priority")
    current_vcpus: int | None = Field(None, description="the quota when asked; null: none set")
    requested_vcpus: int = Field(description="the quota asked for")
    reason: str | None = None
    requested_by: str | None = Field(None, description="who asked, as the client said")
    status: str = Field(description="Pending, Approved or Denied")
    created_at: IsoTime = Field(description="when it was asked (ISO 8601)")
    decided_at: IsoTime | None = Field(None, description="when it was decided (ISO 8601)")
    decided_by: str | None = Field(None, description="who decided it")


class Quotas(Page[QuotaIncreaseRequest]):
    """The quotas set and a page of the increase requests, oldest first."""

    quotas: dict[str, int] = Field(description="vCPUs by scope; a scope not listed has no limit")
    note: str | None = None


class CostLine(Envelope):
    key: str = Field(description="the compute, job or user")
    cost: Number = Field(description="what its nodes cost")
    node_hours: Number = Field(description="node hours")
    idle: Number = Field(description="the part spent idle")


class CostReport(Page[CostLine]):
    """`cible cost report`: a page of node costs summed by compute, job or user, most expensive first."""

    by: str = Field(description="compute, job or user")
    since: IsoTime | None = Field(None, description="from (ISO 8601); null: since the start")
    until: IsoTime = Field(description="as of (ISO 8601): pass it for the report's later pages")
    currency: str = Field(description="USD")
    total: Number = Field(description="the whole report's cost")
    note: str | None = None
