"""Where a compute's nodes come from: the node provider a cluster, instance or Spark pool is stored
with, whether its size fits there (refused at create, not left waiting), the notes the provider has
on that size, and the nodes of a serverless job (its size, from the workspace's default provider)."""

from __future__ import annotations

from typing import Any

from cible.backends.base.contract import SIZE_NOTES, NodeProvider, supports
from cible.core import catalog
from cible.core.clock import Clock
from cible.core.errors import CibleError, InvalidRequestError
from cible.core.models.computes import (
    CibleClusterSettings,
    CibleInstanceSettings,
    CibleSparkSettings,
    SynapseSparkCompute,
)
from cible.core.planning.spark import pool_cluster, pool_size
from cible.server.services import kubernetes
from cible.server.services.quotas import QuotaService

# Azure picks a CPU VM for a serverless job without instance_type; cible takes the first of
# these that the node provider can hold (on `local`, whose vCPUs are shared, the first whose memory fits).
DEFAULT_SERVERLESS_SIZES = ("Standard_DS3_v2", "Standard_DS2_v2", "Standard_DS1_v2")


class ComputeProviders:
    def __init__(self, providers: dict[str, NodeProvider], default: str, clock: Clock, quotas: QuotaService) -> None:
        self.providers = providers
        self.default = default  # for computes whose YAML names none
        self.clock = clock
        self.quotas = quotas

    def settle(self, entity):  # noqa: ANN001, ANN201
        """The entity with its node provider stored: the YAML's `cible.provider`, else the workspace's
        default at create (a later change of default does not move existing computes)."""
        settings = entity.cible or (CibleClusterSettings() if entity.type == "amlcompute" else CibleInstanceSettings())
        if settings.provider is None:
            settings = settings.model_copy(update={"provider": self.default})
        if settings.provider == kubernetes.PROVIDER:
            raise InvalidRequestError("cible.provider: kubernetes nodes are pods of an attached Kubernetes cluster, "
                                      "sized by its instance types: attach it (cible compute attach --type kubernetes) "
                                      "and send jobs to it with resources.instance_type",
                                      details={"field": "cible.provider"})
        provider = self.providers.get(settings.provider)
        if provider is None:
            raise InvalidRequestError(f"cible.provider: '{settings.provider}' is not a node provider (providers: "
                                      f"{', '.join(sorted(self.providers))})", details={"field": "cible.provider"})
        status = provider.status()
        if not status.available:
            raise InvalidRequestError(f"cible.provider: the {settings.provider} node provider is unavailable: "
                                      f"{status.error}", details={"field": "cible.provider"})
        return entity.model_copy(update={"cible": settings})

    def refuse_if_cannot_hold(self, entity) -> None:  # noqa: ANN001
        """A settled compute's size fits its provider's machines (or the compute says overcommit)."""
        size = catalog.get_size(entity.size)
        settings = entity.cible
        why = self.providers[settings.provider].cannot_hold(size.name, size.vcpus, size.memory_gb, size.gpus,
                                                            overcommit=settings.overcommit)
        if why:
            hint = "in YAML: cible: {overcommit: true}" if settings.provider == "local" else "pick a smaller size"
            raise InvalidRequestError(f"size: compute '{entity.name}': {why} ({hint})", details={"field": "size"})

    def size_notes(self, provider: str | None, size: str) -> list[str]:
        """Warnings on nodes of `size` from that provider, where it declares the capability: `local`
        shares vCPUs beyond this machine's (Ray places nodes by its own resources)."""
        node_provider = self.providers.get(provider or "")
        if node_provider is None or not supports(node_provider, SIZE_NOTES):
            return []
        vm = catalog.get_size(size)
        return node_provider.size_notes(vm.name, vm.vcpus, vm.memory_gb, vm.gpus)

    def listing(self) -> dict[str, Any]:
        """Every node provider the server knows, usable or not (with why not, and the fix)."""
        items = [self.providers[name].status().model_dump(mode="json") for name in sorted(self.providers)]
        return {"value": items, "count": len(items), "default": self.default}

    def spark_pool(self, entity: SynapseSparkCompute) -> tuple[SynapseSparkCompute, list[str]]:
        """A Spark pool of cible's nodes as stored: its size and provider checked as a cluster's (and the
        provider stored), with notes on its nodes."""
        try:
            size = catalog.check_size(pool_size(entity), "amlcompute", self.clock.now().date())
        except CibleError as exc:
            raise InvalidRequestError(f"node_size: {exc.message}", details={"field": "node_size"}) from None
        cluster = self.settle(pool_cluster(entity))
        notes = []
        provider = self.providers[cluster.cible.provider]
        if not cluster.cible.overcommit and provider.cannot_hold(size.name, size.vcpus, size.memory_gb, size.gpus,
                                                                 overcommit=False):
            # As a serverless Spark job's: a pool's JVMs take what its jobs' conf asks, not the node's size.
            cluster = cluster.model_copy(update={"cible": cluster.cible.model_copy(update={"overcommit": True})})
            notes.append(f"nodes of {size.name} are larger than this machine: they share its memory (a Spark job's "
                         "JVMs take what its conf asks)")
        self.refuse_if_cannot_hold(cluster)
        self.quotas.refuse_if_never_fits(size, low_priority=False, count=cluster.min_instances,
                                         what=f"Spark pool {entity.name}: min_node_count {cluster.min_instances}",
                                         field="scale_settings.min_node_count")
        settings = (entity.cible or CibleSparkSettings()).model_copy(
            update={"provider": cluster.cible.provider, "overcommit": cluster.cible.overcommit})
        return entity.model_copy(update={"cible": settings}), notes + self.size_notes(cluster.cible.provider, size.name)

    def serverless_pool(self, job_name: str, instance_type: str | None, instance_count: int,
                        job_tier: str | None, overcommit: bool = False) -> dict[str, Any]:
        """The spec of a serverless job's own nodes: `resources.instance_type` (or a default size this
        machine holds) × `instance_count`, low priority for `job_tier: spot`. Refused at submit
        when the size is unknown, retired, too big for the provider, or beyond the quotas."""
        field = "resources.instance_type"
        # The nodes come from the workspace's default provider (on Ray when that is `ray`).
        provider_name = self.default if self.providers.get(self.default) else "local"
        provider = self.providers[provider_name]
        if not (status := provider.status()).available:
            raise InvalidRequestError(f"compute: serverless nodes come from the {provider_name} node provider, which is "
                                      f"unavailable: {status.error}", details={"field": "compute"})
        if instance_type:
            try:
                size = catalog.check_size(instance_type, "amlcompute", self.clock.now().date())
            except CibleError as exc:
                raise InvalidRequestError(f"{field}: {exc.message}", details={"field": field}) from None
            why = provider.cannot_hold(size.name, size.vcpus, size.memory_gb, size.gpus, overcommit=False)
            # A Spark job's nodes may be larger than this machine: its JVMs take what its conf says, not the size.
            overcommit = overcommit and why is not None and provider.cannot_hold(
                size.name, size.vcpus, size.memory_gb, size.gpus, overcommit=True) is None
            if why and not overcommit:
                raise InvalidRequestError(f"{field}: serverless nodes of {size.name}: {why}; pick a smaller size "
                                          "(`cible compute list-sizes`)", details={"field": field})
        else:
            overcommit = False  # the default size is one this machine holds
            size = self.default_serverless_size(provider_name)
            if size is None:
                where = "this machine" if provider_name == "local" else f"any machine of the {provider_name} provider"
                raise InvalidRequestError(f"{field}: not even a {DEFAULT_SERVERLESS_SIZES[-1]} node fits {where}; "
                                          "use compute: local", details={"field": field})
        low = job_tier == "spot"
        self.quotas.refuse_if_never_fits(size, low_priority=low, count=instance_count,
                                         what=f"serverless job {job_name} ({instance_count} x {size.name})",
                                         field="resources.instance_count")
        return {"size": size.name, "tier": "low_priority" if low else "dedicated", "min_instances": 0,
                "max_instances": instance_count, "idle_time_before_scale_down": 0, "job": job_name,
                "cible": {"provider": provider_name, **({"overcommit": True} if overcommit else {})}}

    def default_serverless_size(self, provider_name: str = "local") -> catalog.VmSize | None:
        """The size of a serverless job's nodes when it names none: the first of DEFAULT_SERVERLESS_SIZES
        the provider's machines hold (None: not even the smallest)."""
        provider = self.providers[provider_name]
        sizes = [catalog.get_size(name) for name in DEFAULT_SERVERLESS_SIZES]
        return next((z for z in sizes if not provider.cannot_hold(z.name, z.vcpus, z.memory_gb, z.gpus,
                                                                    overcommit=False)), None)
