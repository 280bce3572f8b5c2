"""A compute row's spec, read back into its domain model (cible.core.models.computes).

The row keeps the spec exactly as the user's validated model dumped it; the server reads it
through these models so every default (min/max instances, idle times, tier, the `cible:`
settings, schedules) is written once, in the models, never again as `.get(key, default)`.
"""

from __future__ import annotations

from cible.core.models.computes import (
    COMPUTE_TYPES,
    AmlCompute,
    CibleClusterSettings,
    CibleInstanceSettings,
    ComputeBase,
    ComputeInstance,
)
from cible.server.store.rows import ComputeRow

SERVERLESS_NAME = "serverless"  # a pool's row is named serverless:<job>, which is no compute name
LEGACY_PROVIDER = "local"  # computes made before the provider was stored


def compute_spec(row: ComputeRow) -> ComputeBase:
    """The row's spec as its model. A serverless pool (the nodes of one job, spec written by the
    server: size, tier, max_instances, job) reads as the cluster of those nodes."""
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


def provider_name(spec: AmlCompute | ComputeInstance) -> str:
    """The node provider the compute's nodes come from (stored at create)."""
    return cible_settings(spec).provider or LEGACY_PROVIDER
