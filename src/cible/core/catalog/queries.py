"""VM sizes as resource shapes: load the catalog's data files and answer questions about them.

Pure: no clock reads. Anything that depends on the date takes `today` from the caller.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from cible.core.errors import InvalidSpecError

COMPUTE_TYPES: tuple[str, ...] = ("amlcompute", "computeinstance")
CATEGORIES: tuple[str, ...] = ("general", "compute", "memory", "storage", "gpu", "hpc")
CONFIDENCES: tuple[str, ...] = ("high", "medium", "low")
# Azure's spelling of the compute types in list-sizes' supportedComputeTypes.
AZURE_COMPUTE_TYPE = {"amlcompute": "AmlCompute", "computeinstance": "ComputeInstance"}


@dataclass(frozen=True)
class VmSize:
    """A VM size's shape. GPU fields are None on CPU sizes. `gpus` counts the GPU devices a node gets;
    `gpu_share` is the fraction of a physical GPU each one is (1/6 on Standard_NV6ads_A10_v5, else 1.0)
    and `gpu_memory_gb` each device's memory. NVIDIA sizes have `compute_capability` and `min_cuda`,
    AMD ones `gpu_target` and `min_rocm`."""

    name: str
    series: str
    family: str
    vcpus: int
    memory_gb: float
    gpus: int
    gpu_model: str | None
    gpu_architecture: str | None
    min_cuda: str | None
    category: str
    compute_types: tuple[str, ...]
    isolated: bool
    low_priority_capable: bool
    price_per_hour: float
    retired_on: date | None
    os_disk_gb: int
    confidence: str
    gpu_memory_gb: float | None = None
    gpu_vendor: str | None = None
    compute_capability: str | None = None
    interconnect: str | None = None
    gpu_share: float = 1.0
    min_rocm: str | None = None
    gpu_target: str | None = None

    def is_retired(self, today: date) -> bool:
        return self.retired_on is not None and self.retired_on <= today

    def describe(self) -> str:
        """`Standard_NC8as_T4_v3 (8 vCPUs, 56 GB, 1 x NVIDIA Tesla T4)`; a fraction of a GPU as
        `1/6 x NVIDIA A10`."""
        mem = f"{self.memory_gb:g} GB"
        count = share_text(self.gpu_share) if self.gpu_share < 1 else str(self.gpus)
        gpu = f", {count} x {self.gpu_model}" if self.gpus else ""
        return f"{self.name} ({self.vcpus} vCPUs, {mem}{gpu})"


def share_text(share: float) -> str:
    """A GPU share as the spec pages write it: 1/6, 1/3, 1/2, 1."""
    return str(Fraction(share).limit_denominator(64))


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def _architectures() -> dict[str, dict[str, Any]]:
    """gpu_architectures.yaml's rows: vendor, compute_capabilities (NVIDIA) or gpu_targets (AMD)."""
    return _read("gpu_architectures.yaml")["architectures"]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _gpu_facts(series_name: str, series: dict[str, Any]) -> dict[str, Any]:
    """A GPU series' architecture facts: vendor, its chip, and the oldest CUDA or ROCm for that chip.
    ValueError for a chip the architecture table does not list (a data error, caught by the tests)."""
    arch_name = series.get("gpu_architecture")
    if not arch_name:
        return {}
    arch = _architectures()[arch_name]  # KeyError = an architecture missing from gpu_architectures.yaml
    capability, target = series.get("compute_capability"), series.get("gpu_target")
    facts: dict[str, Any] = {"gpu_vendor": arch["vendor"], "compute_capability": capability, "gpu_target": target}
    if capability is not None and capability in arch.get("compute_capabilities", {}):
        facts["min_cuda"] = arch["compute_capabilities"][capability]
    elif target is not None and target in arch.get("gpu_targets", {}):
        facts["min_rocm"] = arch["gpu_targets"][target]
    else:
        raise ValueError(f"series {series_name}: {arch_name} has no chip {capability or target!r} in gpu_architectures.yaml")
    return facts


@lru_cache(maxsize=1)
def _catalog() -> tuple[tuple[VmSize, ...], dict[str, VmSize], date]:
    series_doc = _read("series.yaml")
    sizes_doc = _read("sizes.yaml")
    defaults = sizes_doc.get("defaults", {})
    out: list[VmSize] = []
    for series_name, rows in sizes_doc["sizes"].items():
        series = series_doc["series"][series_name]  # KeyError here = a size row for a series not in series.yaml
        gpu = _gpu_facts(series_name, series)
        for row in rows:
            out.append(
                VmSize(
                    name=row["name"],
                    series=series_name,
                    family=series["family"],
                    vcpus=int(row["vcpus"]),
                    memory_gb=float(row["memory_gb"]),
                    gpus=int(row.get("gpus", 0)),
                    gpu_model=series.get("gpu_model"),
                    gpu_architecture=series.get("gpu_architecture"),
                    min_cuda=gpu.get("min_cuda"),
                    category=series["category"],
                    compute_types=tuple(series["compute_types"]),
                    isolated=bool(row.get("isolated", False)),
                    low_priority_capable=bool(row.get("low_priority_capable", defaults.get("low_priority_capable", True))),
                    price_per_hour=float(row["price"]),
                    retired_on=series.get("retired_on"),
                    os_disk_gb=int(row.get("os_disk_gb", defaults.get("os_disk_gb", 1023))),
                    confidence=str(row.get("confidence", defaults.get("confidence", "medium"))),
                    gpu_memory_gb=_float_or_none(row.get("gpu_memory_gb", series.get("gpu_memory_gb"))),
                    gpu_vendor=gpu.get("gpu_vendor"),
                    compute_capability=gpu.get("compute_capability"),
                    interconnect=row.get("interconnect", series.get("interconnect")),
                    gpu_share=float(Fraction(str(row.get("gpu_share", 1)))),
                    min_rocm=gpu.get("min_rocm"),
                    gpu_target=gpu.get("gpu_target"),
                )
            )
    by_key = {s.name.lower(): s for s in out}
    if len(by_key) != len(out):
        raise ValueError("sizes.yaml lists a VM size twice")
    return tuple(out), by_key, series_doc["as_of"]


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def all_sizes() -> list[VmSize]:
    """Every size in the catalog, retired ones included, in data-file order."""
    return list(_catalog()[0])


def all_series() -> dict[str, dict[str, Any]]:
    """series.yaml's rows (family, category, compute types, GPU, retirement, sources) by series name."""
    return _read("series.yaml")["series"]


def catalog_as_of() -> date:
    """The day the catalog's facts were checked; list_sizes' default `today`."""
    return _catalog()[2]


def _unknown(name: str) -> str:
    close = suggest_names(name)
    hint = f"did you mean {', '.join(close)}?" if close else "see `cible compute list-sizes`"
    return f"unknown VM size '{name}'; {hint}"


def get_size(name: str) -> VmSize:
    """The size called `name`, case-insensitively. Unknown: InvalidSpecError with the nearest names."""
    size = _catalog()[1].get(name.strip().lower())
    if size is None:
        raise InvalidSpecError(_unknown(name), details={"size": name, "suggestions": suggest_names(name)})
    return size


def suggest_names(name: str, n: int = 3) -> list[str]:
    lowered = {s.name.lower(): s.name for s in _catalog()[0]}
    return [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]


def _compute_type(compute_type: str) -> str:
    key = compute_type.strip().lower()
    if key not in COMPUTE_TYPES:
        raise InvalidSpecError(
            f"unknown compute type '{compute_type}' for a VM size; expected one of {', '.join(COMPUTE_TYPES)}"
        )
    return key


def list_sizes(
    compute_type: str | None = None,
    gpu: bool | None = None,
    include_retired: bool = False,
    today: date | None = None,
) -> list[VmSize]:
    """Sizes filtered by compute type and GPU/CPU, current ones only unless include_retired.

    `today` decides what is retired; without it the catalog's as_of date is used (core reads no clock).
    """
    ctype = _compute_type(compute_type) if compute_type else None
    day = today or catalog_as_of()
    out = []
    for size in _catalog()[0]:
        if ctype and ctype not in size.compute_types:
            continue
        if gpu is not None and (size.gpus > 0) != gpu:
            continue
        if not include_retired and size.is_retired(day):
            continue
        out.append(size)
    return out


def nearest_current(size: VmSize, compute_type: str, today: date) -> VmSize | None:
    """The cheapest current size of the same category that the compute type supports and that is no
    smaller in vCPUs, memory and GPUs. When none is that large, the one that falls short on the fewest
    of those, then the cheapest."""
    ctype = _compute_type(compute_type)
    candidates = [
        s for s in _catalog()[0]
        if s.category == size.category and ctype in s.compute_types and not s.is_retired(today) and s.name != size.name
    ]
    if not candidates:
        return None

    def shortfall(s: VmSize) -> int:  # GPUs as whole-GPU equivalents: 1/6 of an A10 is not one GPU
        return (s.vcpus < size.vcpus) + (s.memory_gb < size.memory_gb) + (s.gpus * s.gpu_share < size.gpus * size.gpu_share)

    return min(candidates, key=lambda s: (shortfall(s), s.price_per_hour, s.vcpus, s.memory_gb, s.name))


def check_size(name: str, compute_type: str, today: date) -> VmSize:
    """The size a compute of `compute_type` may be created with, or InvalidSpecError saying why not:
    unknown (nearest names), retired (date, "recreate with another size", a current size), or not
    supported by the compute type (which types support it)."""
    size = get_size(name)
    ctype = _compute_type(compute_type)
    if size.is_retired(today):
        alt = nearest_current(size, ctype, today)
        suggestion = f"; for example {alt.describe()}" if alt else ""
        raise InvalidSpecError(
            f"VM size '{size.name}' belongs to the {size.series} series, which was retired on "
            f"{size.retired_on.isoformat()}; recreate with another size{suggestion}",
            details={
                "size": size.name,
                "series": size.series,
                "retired_on": size.retired_on.isoformat(),
                "suggestion": alt.name if alt else None,
            },
        )
    if ctype not in size.compute_types:
        supported = ", ".join(size.compute_types)
        raise InvalidSpecError(
            f"VM size '{size.name}' ({size.series} series) is not supported for {ctype}; "
            f"it is supported for: {supported}",
            details={"size": size.name, "compute_type": ctype, "supported_compute_types": list(size.compute_types)},
        )
    return size


def min_cuda_for(architecture: str) -> str:
    """The oldest CUDA version for any chip of an NVIDIA architecture ("Volta" -> "9.0", "Hopper" -> "11.8").
    InvalidSpecError for an unknown architecture, or an AMD one (it runs ROCm)."""
    table = _architectures()
    name = next((a for a in table if a.lower() == architecture.strip().lower()), None)
    if name is None:
        raise InvalidSpecError(f"unknown GPU architecture '{architecture}'; known: {', '.join(table)}")
    cudas = table[name].get("compute_capabilities", {}).values()
    if not cudas:
        roc = min(table[name]["gpu_targets"].values(), key=_version_key)
        raise InvalidSpecError(f"{name} is an {table[name]['vendor']} architecture: it runs ROCm {roc} or newer, not CUDA")
    return min(cudas, key=_version_key)


def min_cuda_for_capability(capability: str) -> str:
    """The oldest CUDA version that builds for an NVIDIA compute capability ("8.6" or "sm_86" -> "11.1",
    "9.0" -> "11.8", "10.0" -> "12.8"). InvalidSpecError for one the catalog does not know."""
    wanted = capability.strip().lower()
    if wanted.startswith("sm_") and wanted[3:].isdigit():
        wanted = f"{wanted[3:-1]}.{wanted[-1]}"  # sm_90 -> 9.0, sm_103 -> 10.3
    known: dict[str, str] = {}
    for arch in _architectures().values():
        known.update(arch.get("compute_capabilities", {}))
    if wanted not in known:
        raise InvalidSpecError(f"unknown compute capability '{capability}'; known: {', '.join(sorted(known, key=_version_key))}")
    return known[wanted]


def to_dict(size: VmSize) -> dict[str, Any]:
    """Azure's list-sizes fields, then cible's own."""
    return {
        "name": size.name,
        "family": size.family,
        "vCPUs": size.vcpus,
        "gpus": size.gpus,
        "memoryGB": size.memory_gb,
        "osVhdSizeMB": size.os_disk_gb * 1024,
        "lowPriorityCapable": size.low_priority_capable,
        "supportedComputeTypes": [AZURE_COMPUTE_TYPE[t] for t in size.compute_types],
        "series": size.series,
        "gpu_model": size.gpu_model,
        "gpu_memory_gb": size.gpu_memory_gb,
        "gpu_share": size.gpu_share,
        "gpu_vendor": size.gpu_vendor,
        "gpu_architecture": size.gpu_architecture,
        "compute_capability": size.compute_capability,
        "gpu_target": size.gpu_target,
        "min_cuda": size.min_cuda,
        "min_rocm": size.min_rocm,
        "interconnect": size.interconnect,
        "category": size.category,
        "isolated": size.isolated,
        "retired_on": size.retired_on.isoformat() if size.retired_on else None,
        "price_per_hour": size.price_per_hour,
        "confidence": size.confidence,
    }
