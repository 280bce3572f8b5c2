"""Every row of the catalog's data files holds together, and the facts the issue names are there."""

from __future__ import annotations

import re
from datetime import date
from importlib import resources

import pytest

from cible.core import catalog

AML_SERIES = [
    "DDSv4", "Dv2", "Dv3", "DSv2", "DSv3", "EAv4", "Ev3", "ESv3", "FSv2", "FX", "H", "HB", "HBv2", "HBv3",
    "HC", "LSv2", "M", "NC", "NC Promo", "NCv2", "NCv3", "ND", "NDv2", "NV", "NVv3", "NCasT4_v3",
    "NDasrA100_v4",
]
# GPU series Azure offers beyond Azure ML's table (issue 21): data, with their own spec pages.
NEW_GPU_SERIES = [
    "NCads_A100_v4", "NDamsrA100_v4", "NCads_H100_v5", "NDH100v5", "NDH200v5", "NVadsA10_v5", "NDMI300Xv5",
    "NDGB200v6", "NDGB300v6",
]
CLUSTER_ONLY = {"FX", "NVadsA10_v5", "NDMI300Xv5", "NDGB200v6", "NDGB300v6"}
ISOLATED = {"Standard_M128ms", "Standard_F72s_v2", "Standard_NC24s_v3", "Standard_NC24rs_v3"}


def test_every_azure_ml_series_has_sizes():
    by_series: dict[str, int] = {}
    for size in catalog.all_sizes():
        by_series[size.series] = by_series.get(size.series, 0) + 1
    for series in AML_SERIES + NEW_GPU_SERIES:
        assert by_series.get(series, 0) >= 1, series
    assert set(catalog.all_series()) == set(AML_SERIES + NEW_GPU_SERIES)


def test_isolated_sizes_are_exactly_azure_mls_list():
    assert {s.name for s in catalog.all_sizes() if s.isolated} == ISOLATED


@pytest.mark.parametrize("size", catalog.all_sizes(), ids=lambda s: s.name)
def test_every_row_validates(size: catalog.VmSize):
    assert size.name.startswith("Standard_")
    assert size.vcpus > 0 and size.memory_gb > 0 and size.price_per_hour > 0 and size.os_disk_gb > 0
    assert size.gpus >= 0
    assert size.category in catalog.CATEGORIES
    assert size.compute_types and set(size.compute_types) <= set(catalog.COMPUTE_TYPES)
    assert size.confidence in ("high", "medium", "low")
    assert size.family
    assert size.retired_on is None or isinstance(size.retired_on, date)
    if size.gpus:
        assert size.category == "gpu"
        assert size.gpu_model and size.gpu_architecture and size.gpu_memory_gb and size.gpu_memory_gb > 0
        assert 0 < size.gpu_share <= 1 and (size.gpu_share == 1 or size.gpus == 1)
        if size.gpu_vendor == "NVIDIA":
            assert size.min_cuda == catalog.min_cuda_for_capability(size.compute_capability)
            assert size.min_rocm is None and size.gpu_target is None
        else:
            assert size.gpu_vendor == "AMD" and size.min_rocm and size.gpu_target
            assert size.min_cuda is None and size.compute_capability is None
    else:
        assert size.category != "gpu"
        gpu_fields = (size.gpu_model, size.gpu_architecture, size.min_cuda, size.gpu_memory_gb, size.gpu_vendor,
                      size.compute_capability, size.interconnect, size.min_rocm, size.gpu_target)
        assert gpu_fields == (None,) * len(gpu_fields) and size.gpu_share == 1


def test_names_are_unique_case_insensitively():
    names = [s.name.lower() for s in catalog.all_sizes()]
    assert len(names) == len(set(names))


def test_every_series_names_its_sources():
    for name, series in catalog.all_series().items():
        assert series["spec_source"].startswith("https://learn.microsoft.com/"), name
        assert series.get("confidence", "high") in ("high", "medium", "low"), name


def test_every_retirement_date_says_where_it_comes_from():
    """A `retired_on:` line in series.yaml has a comment just above it (the page, or the announcement)."""
    lines = resources.files("cible.core.catalog").joinpath("series.yaml").read_text(encoding="utf-8").splitlines()
    dated = [i for i, line in enumerate(lines) if line.strip().startswith("retired_on:")]
    assert len(dated) == sum("retired_on" in s for s in catalog.all_series().values())
    for i in dated:
        assert lines[i - 1].strip().startswith("#"), f"series.yaml line {i + 1}: {lines[i].strip()} has no source"


@pytest.mark.parametrize(
    ("series", "retired_on"),
    [
        # Azure ML: "These series retired on August 31, 2023: NC, NCv2, ND, NV and NV_Promo"
        ("NC", date(2023, 8, 31)),
        ("NC Promo", date(2023, 8, 31)),
        ("NCv2", date(2023, 8, 31)),
        ("ND", date(2023, 8, 31)),
        ("NV", date(2023, 8, 31)),
        # "These series retired on August 31, 2024: Av1, HB"
        ("HB", date(2024, 8, 31)),
        ("H", date(2022, 8, 31)),
        ("NCv3", date(2025, 9, 30)),
    ],
)
def test_retirement_dates(series: str, retired_on: date):
    assert {s.retired_on for s in catalog.all_sizes() if s.series == series} == {retired_on}


# The GPU table of the VM retirements page (2026-09-24) lists only NCv3, NVv3 and NVv4.
@pytest.mark.parametrize("series", ["DDSv4", "EAv4", "FX", "HBv3", "M", "NDv2", "NCasT4_v3", "NDasrA100_v4",
                                    *NEW_GPU_SERIES])
def test_series_without_an_announced_retirement(series: str):
    assert all(s.retired_on is None for s in catalog.all_sizes() if s.series == series)


@pytest.mark.parametrize(
    ("series", "model", "architecture"),
    [
        ("NC", "NVIDIA Tesla K80", "Kepler"),
        ("NC Promo", "NVIDIA Tesla K80", "Kepler"),
        ("NCv2", "NVIDIA Tesla P100", "Pascal"),
        ("ND", "NVIDIA Tesla P40", "Pascal"),
        ("NCv3", "NVIDIA Tesla V100", "Volta"),
        ("NDv2", "NVIDIA Tesla V100 32GB", "Volta"),
        ("NV", "NVIDIA Tesla M60", "Maxwell"),
        ("NVv3", "NVIDIA Tesla M60", "Maxwell"),
        ("NCasT4_v3", "NVIDIA Tesla T4", "Turing"),
        ("NDasrA100_v4", "NVIDIA A100 40GB", "Ampere"),
        ("NCads_A100_v4", "NVIDIA A100 80GB PCIe", "Ampere"),
        ("NDamsrA100_v4", "NVIDIA A100 80GB", "Ampere"),
        ("NCads_H100_v5", "NVIDIA H100 NVL", "Hopper"),
        ("NDH100v5", "NVIDIA H100 80GB", "Hopper"),
        ("NDH200v5", "NVIDIA H200", "Hopper"),
        ("NVadsA10_v5", "NVIDIA A10", "Ampere"),
        ("NDMI300Xv5", "AMD Instinct MI300X", "CDNA3"),
        ("NDGB200v6", "NVIDIA GB200 (Blackwell B200)", "Blackwell"),
        ("NDGB300v6", "NVIDIA GB300 (Blackwell Ultra B300)", "Blackwell"),
    ],
)
def test_gpu_models_and_architectures(series: str, model: str, architecture: str):
    rows = [s for s in catalog.all_sizes() if s.series == series]
    assert rows and all(s.gpus > 0 and s.gpu_model == model and s.gpu_architecture == architecture for s in rows)


@pytest.mark.parametrize(
    ("name", "shape", "gpu"),
    [
        # (vCPUs, memory GB, GPUs), (GB per GPU, compute capability or gfx target, min CUDA or ROCm), from the
        # series' spec pages and the toolkit notes in gpu_architectures.yaml.
        ("Standard_NC24ads_A100_v4", (24, 220, 1), (80, "8.0", "11.0")),
        ("Standard_NC96ads_A100_v4", (96, 880, 4), (80, "8.0", "11.0")),
        ("Standard_ND96amsr_A100_v4", (96, 1900, 8), (80, "8.0", "11.0")),
        ("Standard_NC40ads_H100_v5", (40, 320, 1), (94, "9.0", "11.8")),
        ("Standard_NC80adis_H100_v5", (80, 640, 2), (94, "9.0", "11.8")),
        ("Standard_ND96isr_H100_v5", (96, 1900, 8), (80, "9.0", "11.8")),
        ("Standard_ND96isr_H200_v5", (96, 1850, 8), (141, "9.0", "11.8")),
        ("Standard_NV72ads_A10_v5", (72, 880, 2), (24, "8.6", "11.1")),
        ("Standard_ND128isr_NDR_GB200_v6", (128, 900, 4), (192, "10.0", "12.8")),
        ("Standard_ND128isr_GB300_v6", (128, 864, 4), (288, "10.3", "12.9")),
        ("Standard_ND96isr_MI300X_v5", (96, 1850, 8), (192, "gfx942", "6.0")),
        ("Standard_NC4as_T4_v3", (4, 28, 1), (16, "7.5", "10.0")),
        ("Standard_ND40rs_v2", (40, 672, 8), (32, "7.0", "9.0")),
        ("Standard_ND96asr_v4", (96, 900, 8), (40, "8.0", "11.0")),
        ("Standard_NC24", (24, 224, 4), (12, "3.7", "9.0")),
        ("Standard_NV12s_v3", (12, 112, 1), (8, "5.2", "9.0")),
    ],
)
def test_gpu_shapes(name: str, shape: tuple, gpu: tuple):
    size = catalog.get_size(name)
    assert (size.vcpus, size.memory_gb, size.gpus) == shape
    chip = size.compute_capability or size.gpu_target
    assert (size.gpu_memory_gb, chip, size.min_cuda or size.min_rocm) == gpu


def test_a10_shares_are_fractions_of_one_gpu():
    """NVadsA10_v5: 1/6, 1/3, 1/2 of an A10 (4, 8, 12 of its 24 GB), then whole GPUs."""
    rows = {s.name: s for s in catalog.all_sizes() if s.series == "NVadsA10_v5"}
    expected = {"Standard_NV6ads_A10_v5": (1, 1 / 6, 4), "Standard_NV12ads_A10_v5": (1, 1 / 3, 8),
                "Standard_NV18ads_A10_v5": (1, 1 / 2, 12), "Standard_NV36ads_A10_v5": (1, 1, 24),
                "Standard_NV36adms_A10_v5": (1, 1, 24), "Standard_NV72ads_A10_v5": (2, 1, 24)}
    assert set(rows) == set(expected)
    for name, (gpus, share, memory) in expected.items():
        assert (rows[name].gpus, rows[name].gpu_share, rows[name].gpu_memory_gb) == pytest.approx((gpus, share, memory))
    assert all(s.gpu_memory_gb == pytest.approx(24 * s.gpu_share) for s in rows.values())
    assert catalog.get_size("Standard_NV6ads_A10_v5").describe() == "Standard_NV6ads_A10_v5 (6 vCPUs, 55 GB, 1/6 x NVIDIA A10)"


@pytest.mark.parametrize(
    ("name", "interconnect"),
    [
        ("Standard_ND96isr_H100_v5", "InfiniBand NDR, 400 Gb/s per GPU"),
        ("Standard_ND96isr_H200_v5", "InfiniBand NDR, 400 Gb/s per GPU"),
        ("Standard_ND96isr_MI300X_v5", "InfiniBand NDR, 400 Gb/s per GPU"),
        ("Standard_ND96amsr_A100_v4", "InfiniBand HDR, 200 Gb/s per GPU"),
        ("Standard_ND96asr_v4", "InfiniBand HDR, 200 Gb/s per GPU"),
        ("Standard_ND40rs_v2", "InfiniBand EDR, 100 Gb/s per VM"),
        ("Standard_ND128isr_GB300_v6", "InfiniBand, 800 Gb/s per GPU"),
        ("Standard_NC24rs_v3", "InfiniBand"),
        ("Standard_NC24s_v3", None),
        ("Standard_NC24ads_A100_v4", None),
        ("Standard_NC80adis_H100_v5", None),
    ],
)
def test_interconnect_where_it_matters(name: str, interconnect: str | None):
    found = catalog.get_size(name).interconnect
    assert found == interconnect if interconnect is None else found.startswith(interconnect)


def test_gpu_vendors():
    vendors = {s.gpu_vendor for s in catalog.all_sizes() if s.gpus}
    assert vendors == {"NVIDIA", "AMD"}
    assert {s.series for s in catalog.all_sizes() if s.gpu_vendor == "AMD"} == {"NDMI300Xv5"}


def test_known_shapes():
    ds3 = catalog.get_size("Standard_DS3_v2")
    assert (ds3.vcpus, ds3.memory_gb, ds3.gpus, ds3.family) == (4, 14, 0, "standardDSv2Family")
    nc24 = catalog.get_size("Standard_NC24")
    assert (nc24.vcpus, nc24.memory_gb, nc24.gpus) == (24, 224, 4)
    a100 = catalog.get_size("Standard_ND96asr_v4")
    assert (a100.vcpus, a100.memory_gb, a100.gpus) == (96, 900, 8)
    assert catalog.get_size("Standard_M128ms").memory_gb == 3892


def test_cluster_only_series_and_the_rest_both():
    """FX: Azure ML's table. NVadsA10_v5: Azure ML's known issue (no A10 compute instances). MI300X, GB200,
    GB300: Azure ML support unconfirmed, so no more than clusters."""
    for size in catalog.all_sizes():
        expected = ("amlcompute",) if size.series in CLUSTER_ONLY else ("amlcompute", "computeinstance")
        assert size.compute_types == expected, size.name


def test_catalog_date():
    assert catalog.catalog_as_of() == date(2026, 12, 7)


def test_gpu_series_name_their_chip_in_the_architecture_table():
    """Every GPU series gives an architecture and a chip the table knows (the loader refuses otherwise)."""
    for name, series in catalog.all_series().items():
        if series["category"] != "gpu":
            continue
        chip = series.get("compute_capability") or series.get("gpu_target")
        assert series.get("gpu_architecture") and chip and series.get("gpu_memory_gb"), name
        assert re.fullmatch(r"\d+\.\d|gfx\w+", str(chip)), name
