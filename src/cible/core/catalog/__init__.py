"""The VM size catalog: Azure ML's VM series and sizes as resource shapes (data files + queries).

series.yaml (family, category, compute types, GPU, retirement, sources), sizes.yaml (one row per size),
gpu_architectures.yaml (architecture -> vendor; compute capability -> oldest CUDA, gfx target -> oldest
ROCm). Pure: callers pass `today`.
"""

from cible.core.catalog.queries import (
    AZURE_COMPUTE_TYPE,
    CATEGORIES,
    COMPUTE_TYPES,
    VmSize,
    all_series,
    all_sizes,
    catalog_as_of,
    check_size,
    get_size,
    list_sizes,
    min_cuda_for,
    min_cuda_for_capability,
    nearest_current,
    share_text,
    suggest_names,
    to_dict,
)

__all__ = [
    "AZURE_COMPUTE_TYPE",
    "CATEGORIES",
    "COMPUTE_TYPES",
    "VmSize",
    "all_series",
    "all_sizes",
    "catalog_as_of",
    "check_size",
    "get_size",
    "list_sizes",
    "min_cuda_for",
    "min_cuda_for_capability",
    "nearest_current",
    "share_text",
    "suggest_names",
    "to_dict",
]
