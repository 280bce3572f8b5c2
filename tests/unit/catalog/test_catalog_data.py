"""Every row of the catalog's data files holds together, and the facts the issue names are there."""

from __future__ import annotations

from datetime import date

import pytest

from cible.core import catalog

AML_SERIES = [
    "DDSv4", "Dv2", "Dv3", "DSv2", "DSv3", "EAv4", "Ev3", "ESv3", "FSv2", "FX", "H", "HB", "HBv2", "HBv3",
    "HC", "LSv2", "M", "NC", "NC Promo", "NCv2", "NCv3", "ND", "NDv2", "NV", "NVv3", "NCasT4_v3",
    "NDasrA100_v4",
]
ISOLATED = {"Standard_M128ms", "Standard_F72s_v2", "Standard_NC24s_v3", "Standard_NC24rs_v3"}


def test_every_azure_ml_series_has_sizes():
    by_series: dict[str, int] = {}
    for size in catalog.all_sizes():
        by_series[size.series] = by_series.get(size.series, 0) + 1
    for series in AML_SERIES:
        assert by_series.get(series, 0) >= 1, series
    assert set(catalog.all_series()) == set(AML_SERIES)


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
        assert size.gpu_model and size.gpu_architecture and size.min_cuda
        assert size.min_cuda == catalog.min_cuda_for(size.gpu_architecture)
    else:
        assert size.category != "gpu"
        assert size.gpu_model is None and size.gpu_architecture is None and size.min_cuda is None


def test_names_are_unique_case_insensitively():
    names = [s.name.lower() for s in catalog.all_sizes()]
    assert len(names) == len(set(names))


def test_every_series_names_its_sources():
    for name, series in catalog.all_series().items():
        assert series["spec_source"].startswith("https://learn.microsoft.com/"), name


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


@pytest.mark.parametrize("series", ["DDSv4", "EAv4", "FX", "HBv3", "M", "NDv2", "NCasT4_v3", "NDasrA100_v4"])
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
    ],
)
def test_gpu_models_and_architectures(series: str, model: str, architecture: str):
    rows = [s for s in catalog.all_sizes() if s.series == series]
    assert rows and all(s.gpus > 0 and s.gpu_model == model and s.gpu_architecture == architecture for s in rows)


def test_known_shapes():
    ds3 = catalog.get_size("Standard_DS3_v2")
    assert (ds3.vcpus, ds3.memory_gb, ds3.gpus, ds3.family) == (4, 14, 0, "standardDSv2Family")
    nc24 = catalog.get_size("Standard_NC24")
    assert (nc24.vcpus, nc24.memory_gb, nc24.gpus) == (24, 224, 4)
    a100 = catalog.get_size("Standard_ND96asr_v4")
    assert (a100.vcpus, a100.memory_gb, a100.gpus) == (96, 900, 8)
    assert catalog.get_size("Standard_M128ms").memory_gb == 3892


def test_fx_is_cluster_only_and_the_rest_both():
    for size in catalog.all_sizes():
        expected = ("amlcompute",) if size.series == "FX" else ("amlcompute", "computeinstance")
        assert size.compute_types == expected, size.name
