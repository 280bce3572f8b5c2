"""A compute row's spec, read back into its domain model (cible.core.models.computes).

The row keeps the spec exactly as the user's validated model dumped it; the server reads it
through these models so every default (min/max instances, idle times, tier, the `cible:`
settings, schedules) is written once, in the models, never again as `.get(key, default)`.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.orm import Session

from cible.core import catalog
from cible.core.catalog.queries import VmSize
from cible.core.models.computes import (
    COMPUTE_TYPES,
    AmlCompute,
    CibleClusterSettings,
    CibleInstanceSettings,
    ComputeBase,
    ComputeInstance,
    SynapseSparkCompute,
    VirtualMachineCompute,
)
from cible.core.planning.quotas import UNMETERED_FAMILY
from cible.core.planning.spark import pool_cluster
from cible.server.services import kubernetes
from cible.server.store.rows import ComputeRow

SERVERLESS_NAME = "serverless"  # a pool's row is named serverless:<job>, which is no compute name
LEGACY_PROVIDER = "local"  # computes made before the provider was stored
ATTACHED_PROVIDER = "ssh"  # the node provider of attached machines
# Providers whose nodes are the user's own machines (attached ones, a Slurm cluster's): free, and
# counted by no quota.
OWN_MACHINES = frozenset({ATTACHED_PROVIDER, "slurm", kubernetes.PROVIDER})
ATTACHED_IDLE_S = 600  # an attached machine's agent stays this long after its last job


def attached_spark(row: ComputeRow) -> bool:
    """A synapsespark compute that is a Spark cible does not own (cible.master_url): no nodes of cible's,
    its jobs' drivers run on the workspace's machine."""
    return row.compute_type == "synapsespark" and bool((row.spec.get("cible") or {}).get("master_url"))


def attached_spark_names(session: Session) -> set[str]:
    """The attached Spark computes' names (only synapsespark rows are read whole: they are few)."""
    return {row.name for row in session.scalars(select(ComputeRow).where(ComputeRow.compute_type == "synapsespark"))
            if attached_spark(row)}


def compute_spec(row: ComputeRow) -> ComputeBase:
    """The row's spec as its model. A serverless pool (the nodes of one job, spec written by the
    server: size, tier, max_instances, job) reads as the cluster of those nodes, and so does a
    Kubernetes compute's pool of one instance type."""
    if row.compute_type == kubernetes.POOL_TYPE:
        return kubernetes.pool_cluster(row.spec)
    if row.compute_type == "serverless":
        pool = {k: v for k, v in row.spec.items() if k != "job"}
        return AmlCompute.model_validate({**pool, "name": SERVERLESS_NAME})
    return COMPUTE_TYPES[row.compute_type].model_validate(row.spec)


def cluster_spec(row: ComputeRow) -> AmlCompute:
    """A cluster's (or serverless pool's) spec; raises TypeError for any other compute."""
    spec = compute_spec(row)
    if not isinstance(spec, AmlCompute):
        raise TypeError(f"compute {row.name} is a {row.compute_type}, not a cluster")
    return spec


def instance_spec(row: ComputeRow) -> ComputeInstance:
    """A compute instance's spec; raises TypeError for any other compute."""
    spec = compute_spec(row)
    if not isinstance(spec, ComputeInstance):
        raise TypeError(f"compute {row.name} is a {row.compute_type}, not a compute instance")
    return spec


def cible_settings(spec: AmlCompute | ComputeInstance) -> CibleClusterSettings | CibleInstanceSettings:
    """The spec's `cible:` settings, defaults where the YAML has none (Azure files never do)."""
    if spec.cible is not None:
        return spec.cible
    return CibleClusterSettings() if isinstance(spec, AmlCompute) else CibleInstanceSettings()


def provider_name(spec: AmlCompute | ComputeInstance | VirtualMachineCompute) -> str:
    """The node provider the compute's nodes come from (stored at create; ssh for an attached machine)."""
    if isinstance(spec, VirtualMachineCompute):
        return ATTACHED_PROVIDER
    return cible_settings(spec).provider or LEGACY_PROVIDER


def attached_size(vm: VirtualMachineCompute) -> VmSize:
    """The "size" of an attached machine's node: the machine itself, as probed at attach. It costs
    nothing (the machine is the user's) and counts against no quota (as on Azure)."""
    facts = vm.host_facts
    return VmSize(name=f"attached {vm.host}", series="Attached", family=UNMETERED_FAMILY,
                  vcpus=facts.cpus if facts else 1, memory_gb=facts.memory_gb if facts else 1.0,
                  gpus=facts.gpus if facts else 0, gpu_model=None, gpu_architecture=None, min_cuda=None,
                  category="attached", compute_types=("virtualmachine",), isolated=False, low_priority_capable=False,
                  price_per_hour=0.0, retired_on=None, os_disk_gb=0, confidence="probed")


def attached_cluster(vm: VirtualMachineCompute) -> AmlCompute:
    """An attached machine as the cluster reconciler plans it: a cluster of at most one node, that
    node the machine's agent. The agent stays ATTACHED_IDLE_S after a job (the next job starts at
    once), then goes: a machine also named in a cluster's cible.hosts is then free for it."""
    return AmlCompute(name=vm.name, size=attached_size(vm).name, min_instances=0, max_instances=1,
                      idle_time_before_scale_down=ATTACHED_IDLE_S, cible=CibleClusterSettings(provider=ATTACHED_PROVIDER,
                                                                                hosts=[vm.name], overcommit=True))


def node_spec(row: ComputeRow) -> tuple[AmlCompute | ComputeInstance, VmSize]:
    """What the cluster reconciler plans a compute as, and the size of its nodes."""
    spec = compute_spec(row)
    if row.compute_type == kubernetes.POOL_TYPE:  # pods of an instance type: sized by its limits, free
        return spec, kubernetes.pool_size(row.spec)
    if isinstance(spec, VirtualMachineCompute):
        return attached_cluster(spec), attached_size(spec)
    if isinstance(spec, SynapseSparkCompute):  # a Spark pool of cible's own nodes
        spec = pool_cluster(spec)
    size = catalog.get_size(spec.size)
    if provider_name(spec) in OWN_MACHINES:  # a cluster of attached machines or Slurm's: the user's own, free
        size = dataclasses.replace(size, family=UNMETERED_FAMILY, price_per_hour=0.0)
    return spec, size
