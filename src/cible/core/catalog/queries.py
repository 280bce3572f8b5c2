"""VM sizes as resource shapes: load the catalog's data files and answer questions about them.

Pure: no clock reads. Anything that depends on the date takes `today` from the caller.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date
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

    def is_retired(self, today: date) -> bool:
        return self.retired_on is not None and self.retired_on <= today

    def describe(self) -> str:
        """`Standard_NC8as_T4_v3 (8 vCPUs, 56 GB, 1 x NVIDIA Tesla T4)`"""
        mem = f"{self.memory_gb:g} GB"
        gpu = f", {self.gpus} x {self.gpu_model}" if self.gpus else ""
        return f"{self.name} ({self.vcpus} vCPUs, {mem}{gpu})"


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def _catalog() -> tuple[tuple[VmSize, ...], dict[str, VmSize], dict[str, str], date]:
    architectures = {arch: str(row["min_cuda"]) for arch, row in _read("gpu_architectures.yaml")["architectures"].items()}
    series_doc = _read("series.yaml")
    sizes_doc = _read("sizes.yaml")
    defaults = sizes_doc.get("defaults", {})
    out: list[VmSize] = []
    for series_name, rows in sizes_doc["sizes"].items():
        series = series_doc["series"][series_name]  # KeyError here = a size row for a series not in series.yaml
        arch = series.get("gpu_architecture")
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
                    gpu_architecture=arch,
                    min_cuda=architectures[arch] if arch else None,
                    category=series["category"],
                    compute_types=tuple(series["compute_types"]),
                    isolated=bool(row.get("isolated", False)),
                    low_priority_capable=bool(row.get("low_priority_capable", defaults.get("low_priority_capable", True))),
                    price_per_hour=float(row["price"]),
                    retired_on=series.get("retired_on"),
                    os_disk_gb=int(row.get("os_disk_gb", defaults.get("os_disk_gb", 1023))),
                    confidence=str(row.get("confidence", defaults.get("confidence", "medium"))),
                )
            )
    by_key = {s.name.lower(): s for s in out}
    if len(by_key) != len(out):
        raise ValueError("sizes.yaml lists a VM size twice")
    return tuple(out), by_key, architectures, series_doc["as_of"]


def all_sizes() -> list[VmSize]:
    """Every size in the catalog, retired ones included, in data-file order."""
    return list(_catalog()[0])


def all_series() -> dict[str, dict[str, Any]]:
    """series.yaml's rows (family, category, compute types, GPU, retirement, sources) by series name."""
    return _read("series.yaml")["series"]


def catalog_as_of() -> date:
    """The day the catalog's facts were checked; list_sizes' default `today`."""
    return _catalog()[3]


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

    def shortfall(s: VmSize) -> int:
        return (s.vcpus < size.vcpus) + (s.memory_gb < size.memory_gb) + (s.gpus < size.gpus)

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
    """The oldest CUDA version Azure ML documents for a GPU architecture ("Volta" -> "9.0")."""
    table = _catalog()[2]
    for arch, cuda in table.items():
        if arch.lower() == architecture.strip().lower():
            return cuda
    raise InvalidSpecError(f"unknown GPU architecture '{architecture}'; known: {', '.join(table)}")


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
        "gpu_architecture": size.gpu_architecture,
        "min_cuda": size.min_cuda,
        "category": size.category,
        "isolated": size.isolated,
        "retired_on": size.retired_on.isoformat() if size.retired_on else None,
        "price_per_hour": size.price_per_hour,
        "confidence": size.confidence,
    }
