"""Job environments: curated names, conda files and images -> what the launcher materialises.

Pure (no processes, no network, no clock). The node side is cible.launch.environments.
"""

from cible.core.environments.conda import CondaPlan, is_conda_only, normalise_name, parse_conda, pypi_name
from cible.core.environments.curated import (
    curated_environments,
    curated_families,
    curated_names,
    resolve_curated,
    split_reference,
)
from cible.core.environments.plan import classify_image, environment_key, plan_environment

__all__ = [
    "CondaPlan",
    "classify_image",
    "curated_environments",
    "curated_families",
    "curated_names",
    "environment_key",
    "is_conda_only",
    "normalise_name",
    "parse_conda",
    "plan_environment",
    "pypi_name",
    "resolve_curated",
    "split_reference",
]
