"""Health, uploads (blobs and snapshots) and the VM size catalog."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, Number


class Health(Envelope):
    """The server's health; degraded (503) also carries the error envelope."""

    status: str = Field(description="ok or degraded")
    pid: int = Field(description="the server's process id")
    workspace: str = Field(description="the workspace folder")
    disk_free_bytes: int | None = Field(None, description="free bytes on its disk; null when unknown")
    reasons: list[str] = Field(description="why it is degraded")
    error: dict[str, Any] | None = Field(None, description="degraded: the error envelope (code StoreUnavailable)")


class MissingBlobs(Envelope):
    missing: list[str] = Field(description="the digests the workspace lacks: upload these")


class BlobStored(Envelope):
    sha256: str = Field(description="the blob's digest")
    created: bool = Field(description="false: the workspace had it already")


class Snapshot(Envelope):
    id: str = Field(description="the snapshot's content id")
    uri: str = Field(description="cible://snapshots/<id>: use it as a job's code or an asset's path")


class VmSize(Envelope):
    """A VM size: Azure's list-sizes fields, then cible's own."""

    name: str
    family: str = Field(description="its quota family")
    vCPUs: int
    gpus: int
    memoryGB: Number
    osVhdSizeMB: Number
    lowPriorityCapable: bool
    supportedComputeTypes: list[str]
    series: str | None = None
    gpu_model: str | None = None
    gpu_memory_gb: Number | None = Field(None, description="memory of each GPU device (of its share, for a fraction)")
    gpu_share: Number | None = Field(None, description="the fraction of a physical GPU each device is (1 = whole)")
    gpu_vendor: str | None = Field(None, description="NVIDIA or AMD")
    gpu_architecture: str | None = None
    compute_capability: str | None = Field(None, description="NVIDIA compute capability, e.g. 9.0")
    gpu_target: str | None = Field(None, description="AMD gfx target, e.g. gfx942")
    min_cuda: str | None = Field(None, description="the oldest CUDA that builds for its GPU (NVIDIA)")
    min_rocm: str | None = Field(None, description="the oldest ROCm that supports its GPU (AMD)")
    interconnect: str | None = Field(None, description="the scale-out network between nodes (InfiniBand), if any")
    category: str | None = None
    isolated: bool | None = None
    retired_on: str | None = Field(None, description="when its series retired (ISO date)")
    price_per_hour: Number | None = Field(None, description="an indicative price, USD")
    confidence: str | None = Field(None, description="how sure the price is")


class SizeList(Envelope):
    value: list[VmSize] = Field(description="the sizes")
    count: int = Field(description="how many")


class StudioSignInCode(Envelope):
    code: str = Field(description="one use: open <server>/sign-in?code=<code>&next=<page> in a browser")
    expires_in_s: int = Field(description="seconds the code works for")
