"""An attached Kubernetes cluster (`type: kubernetes`) and its instance types (Azure reference §2.3).

An *instance type* is what Azure's cluster extension installs as a CRD
(`amlarc.azureml.com/v1alpha1`, kind `InstanceType`): a name for CPU, memory and GPU requests and
limits, and a node selector. Jobs pick one with `resources.instance_type`, deployments with
`instance_type`; `defaultinstancetype` exists without being defined (requests 100m / 2Gi, limits
2 CPUs / 2Gi, as Azure's docs table it). cible reads the cluster's InstanceType objects at attach
and also takes them from the compute's YAML (`cible.instance_types`, the CRD's `spec` shape), for
clusters without Azure's extension.

Quantities are Kubernetes' own (`700m`, `2`, `1500Mi`, `2Gi`, `1G`): `cpu_cores` and `memory_bytes`
read them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from .common import SpecModel

DEFAULT_INSTANCE_TYPE = "defaultinstancetype"
DEFAULT_IMAGE = "python:3.12-slim"
GPU_RESOURCE = "nvidia.com/gpu"
INSTANCE_TYPE_GROUP, INSTANCE_TYPE_VERSION, INSTANCE_TYPE_PLURAL = "amlarc.azureml.com", "v1alpha1", "instancetypes"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")  # a Kubernetes object name (DNS subdomain, ≤63 here)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?([a-zA-Z]{0,2})$")


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a number ("1.5Gi" -> 1610612736.0, "700m" -> 0.7); ValueError naming
    the forms it takes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")  # noqa: TRY004  (pydantic reports a ValueError at its field)
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    match = _QUANTITY.fullmatch(text)
    suffix = match.group(3) if match else ""
    if not match or (suffix and suffix not in _BINARY and suffix not in _DECIMAL):
        raise ValueError(f"{value!r} is not a Kubernetes quantity: write e.g. 500m or 2 (CPUs), 512Mi, 2Gi or 1G "
                         "(memory)")
    number = float(match.group(1)) * (10 ** int(match.group(2)) if match.group(2) else 1)
    return number * (_BINARY.get(suffix) or _DECIMAL.get(suffix) or 1)


class ResourceList(SpecModel):
    """Requests or limits: cpu, memory and nvidia.com/gpu, as Kubernetes quantities."""

    cpu: str | int | float | None = None
    memory: str | int | float | None = None
    gpu: str | int | None = Field(None, validation_alias=AliasChoices(GPU_RESOURCE, "gpu"), serialization_alias=GPU_RESOURCE)

    @field_validator("cpu", "memory", "gpu")
    @classmethod
    def _a_quantity(cls, value: Any) -> Any:
        if value is not None and quantity(value) < 0:
            raise ValueError(f"{value!r} is negative")
        return value

    def as_kubernetes(self) -> dict[str, str]:
        """The list as a pod's container gets it (quantities as strings)."""
        out = {"cpu": self.cpu, "memory": self.memory, GPU_RESOURCE: self.gpu}
        return {key: str(value) for key, value in out.items() if value is not None}


class InstanceTypeResources(SpecModel):
    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)


class InstanceType(SpecModel):
    """An InstanceType's `spec` (Azure's CRD): requests and limits, and a node selector."""

    node_selector: dict[str, str] = Field(default_factory=dict,
                                          validation_alias=AliasChoices("nodeSelector", "node_selector"),
                                          serialization_alias="nodeSelector")
    resources: InstanceTypeResources

    @model_validator(mode="after")
    def _as_azure_requires(self) -> InstanceType:
        limits, requests = self.resources.limits, self.resources.requests
        if limits.cpu is None or limits.memory is None:
            raise ValueError("resources.limits needs cpu and memory (e.g. limits: {cpu: '1', memory: 2Gi})")
        if requests.gpu is not None:
            raise ValueError(f"{GPU_RESOURCE} goes in resources.limits only (Kubernetes' rule for extended resources)")
        for key in ("cpu", "memory"):
            asked, most = getattr(requests, key), getattr(limits, key)
            if asked is not None and quantity(asked) > quantity(most):
                raise ValueError(f"resources.requests.{key} ({asked}) is above resources.limits.{key} ({most})")
        return self

    @property
    def vcpus(self) -> int:
        """The CPUs a pod of this type may use (its limit, rounded up: a node's size is whole CPUs)."""
        return max(1, math.ceil(quantity(self.resources.limits.cpu) - 1e-9))

    @property
    def memory_gb(self) -> float:
        return round(quantity(self.resources.limits.memory) / 2**30, 3)

    @property
    def gpus(self) -> int:
        gpu = self.resources.limits.gpu
        return int(quantity(gpu)) if gpu is not None else 0

    def describe(self) -> str:
        return (f"{self.resources.limits.cpu} CPU, {self.resources.limits.memory} memory"
                + (f", {self.gpus} GPU" if self.gpus else ""))


# Azure's implicit type: "used when no type is given"; a CRD of that name overrides it.
DEFAULT_TYPE = InstanceType(resources=InstanceTypeResources(requests=ResourceList(cpu="100m", memory="2Gi"),
                                                            limits=ResourceList(cpu="2", memory="2Gi")))


def check_namespace(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise ValueError(f"'{value}' is not a namespace name (lowercase letters, digits and '-', at most 63)")
    return value


def check_instance_type_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"'{name}' is not an instance type name: lowercase letters, digits, '-' and '.', starting "
                         "and ending with a letter or digit, at most 63 characters")
    return name


class CibleKubernetesSettings(SpecModel):
    """cible's own settings for an attached Kubernetes cluster, under the key `cible:`."""

    # The kubeconfig on the workspace server's machine (its path is stored, the file read at each
    # connection, as an SSH key's is); none: $KUBECONFIG or ~/.kube/config of the server's user, or the
    # service account of a server that runs in a pod.
    kubeconfig: str | None = None
    context: str | None = None  # the kubeconfig's context (default: its current-context)
    # The image of the node pods: only its Python 3 (≥ 3.10) is used; the agent comes from the server.
    image: str = DEFAULT_IMAGE
    python: str = "python3"
    # Where the pods reach the workspace server (default: the server's own URL).
    server_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/.*)?$")
    service_account: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    # Instance types of cible's (the CRD's spec shape), over those the cluster defines.
    instance_types: dict[str, InstanceType] = Field(default_factory=dict)
    # Each instance type's pods form a pool: at most this many at once, each kept this long after its
    # last job (0: a job's pods go with it, as on Azure).
    max_instances: int = Field(16, ge=1, le=1000)
    idle_time_before_scale_down: int = Field(120, ge=0, le=30 * 86400)
    # A job whose pod is deleted, evicted or stops answering: back to the queue, or failed.
    on_node_failure: Literal["requeue", "fail"] = "requeue"

    @field_validator("instance_types")
    @classmethod
    def _names(cls, value: dict[str, InstanceType]) -> dict[str, InstanceType]:
        for name in value:
            check_instance_type_name(name)
        return value
