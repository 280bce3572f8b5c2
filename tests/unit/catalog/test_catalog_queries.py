"""Catalog queries: lookup, suggestions, filters, and the checks a compute create runs."""

from __future__ import annotations

from datetime import date

import pytest

from cible.core import catalog
from cible.core.errors import InvalidSpecError

TODAY = date(2026, 11, 28)


def test_lookup_is_case_insensitive():
    assert catalog.get_size("standard_ds3_v2").name == "Standard_DS3_v2"
    assert catalog.get_size(" STANDARD_NC6S_V3 ").name == "Standard_NC6s_v3"


def test_unknown_size_suggests_the_nearest_names():
    with pytest.raises(InvalidSpecError) as err:
        catalog.get_size("Standard_DS3v2")
    message = err.value.message
    assert message.startswith("unknown VM size 'Standard_DS3v2'; did you mean Standard_DS3_v2")
    assert err.value.details["suggestions"][0] == "Standard_DS3_v2"


def test_unknown_size_with_nothing_close():
    with pytest.raises(InvalidSpecError, match="unknown VM size 'banana'; see `cible compute list-sizes`"):
        catalog.get_size("banana")


def test_check_size_unknown_is_the_same_error():
    with pytest.raises(InvalidSpecError, match="did you mean .*Standard_NC4as_T4_v3"):
        catalog.check_size("Standard_NC4as_T4v3", "amlcompute", TODAY)


@pytest.mark.parametrize(
    ("name", "retired_on"),
    [
        ("Standard_NC6", "2023-08-31"),
        ("Standard_NC24r", "2023-08-31"),
        ("Standard_NC12_Promo", "2023-08-31"),
        ("Standard_NC6s_v2", "2023-08-31"),
        ("Standard_ND24rs", "2023-08-31"),
        ("Standard_NV12", "2023-08-31"),
        ("Standard_HB60rs", "2024-08-31"),
        ("Standard_H16mr", "2022-08-31"),
    ],
)
@pytest.mark.parametrize("compute_type", ["amlcompute", "computeinstance"])
def test_retired_series_are_refused_with_a_current_not_smaller_suggestion(name: str, retired_on: str, compute_type: str):
    old = catalog.get_size(name)
    with pytest.raises(InvalidSpecError) as err:
        catalog.check_size(name, compute_type, TODAY)
    message = err.value.message
    assert f"retired on {retired_on}" in message
    assert "recreate with another size" in message
    suggestion = catalog.get_size(err.value.details["suggestion"])
    assert suggestion.name in message
    assert not suggestion.is_retired(TODAY)
    assert suggestion.category == old.category
    assert compute_type in suggestion.compute_types
    assert suggestion.vcpus >= old.vcpus and suggestion.memory_gb >= old.memory_gb and suggestion.gpus >= old.gpus


def test_the_suggestion_is_the_cheapest_that_fits():
    with pytest.raises(InvalidSpecError) as err:
        catalog.check_size("Standard_NC6", "amlcompute", TODAY)
    # 6 vCPUs, 56 GB, 1 GPU -> the cheapest current GPU size with at least that much
    assert err.value.details["suggestion"] == "Standard_NC8as_T4_v3"


def test_retirement_depends_on_the_day_passed_in():
    assert catalog.check_size("Standard_NC6", "amlcompute", date(2023, 8, 30)).name == "Standard_NC6"
    with pytest.raises(InvalidSpecError, match="retired on 2023-08-31"):
        catalog.check_size("Standard_NC6", "amlcompute", date(2023, 8, 31))
    # an announced retirement is accepted until its day
    assert catalog.check_size("Standard_DS3_v2", "amlcompute", TODAY).name == "Standard_DS3_v2"
    with pytest.raises(InvalidSpecError, match="retired on 2028-05-01"):
        catalog.check_size("Standard_DS3_v2", "amlcompute", date(2028, 5, 1))


def test_fx_is_refused_on_a_compute_instance():
    with pytest.raises(InvalidSpecError) as err:
        catalog.check_size("Standard_FX12mds", "computeinstance", TODAY)
    assert "not supported for computeinstance" in err.value.message
    assert "supported for: amlcompute" in err.value.message
    assert err.value.details["supported_compute_types"] == ["amlcompute"]
    assert catalog.check_size("Standard_FX12mds", "amlcompute", TODAY).name == "Standard_FX12mds"


def test_compute_type_is_case_insensitive_and_checked():
    assert catalog.check_size("Standard_DS3_v2", "AmlCompute", TODAY).name == "Standard_DS3_v2"
    with pytest.raises(InvalidSpecError, match="unknown compute type 'kubernetes'"):
        catalog.check_size("Standard_DS3_v2", "kubernetes", TODAY)


@pytest.mark.parametrize(
    ("architecture", "cuda"),
    [("Ampere", "11.0"), ("Turing", "10.0"), ("Volta", "9.0"), ("Pascal", "9.0"), ("Maxwell", "9.0"),
     ("Kepler", "9.0"), ("ampere", "11.0")],
)
def test_gpu_architecture_to_cuda(architecture: str, cuda: str):
    assert catalog.min_cuda_for(architecture) == cuda


def test_unknown_architecture():
    with pytest.raises(InvalidSpecError, match="unknown GPU architecture 'Hopper'"):
        catalog.min_cuda_for("Hopper")


def test_list_filters():
    current = catalog.list_sizes(today=TODAY)
    everything = catalog.list_sizes(include_retired=True)
    assert len(everything) == len(catalog.all_sizes()) > len(current)
    assert all(not s.is_retired(TODAY) for s in current)
    gpus = catalog.list_sizes(gpu=True, today=TODAY)
    assert gpus and all(s.gpus > 0 for s in gpus)
    assert {s.series for s in gpus} == {"NDv2", "NCasT4_v3", "NDasrA100_v4"}
    cpus = catalog.list_sizes(gpu=False, today=TODAY)
    assert cpus and all(s.gpus == 0 for s in cpus)
    assert len(gpus) + len(cpus) == len(current)
    instance = {s.name for s in catalog.list_sizes("computeinstance", include_retired=True)}
    assert "Standard_FX4mds" not in instance and "Standard_DS3_v2" in instance
    assert "Standard_FX4mds" in {s.name for s in catalog.list_sizes("amlcompute", today=TODAY)}
    # before the 2023 retirements the K80 sizes are current
    assert "Standard_NC6" in {s.name for s in catalog.list_sizes(gpu=True, today=date(2023, 1, 1))}


def test_list_without_today_uses_the_catalogs_date():
    assert catalog.list_sizes() == catalog.list_sizes(today=catalog.catalog_as_of())


def test_to_dict_has_azures_list_sizes_fields_and_cibles():
    body = catalog.to_dict(catalog.get_size("Standard_NC24rs_v3"))
    assert body["name"] == "Standard_NC24rs_v3"
    assert body["family"] == "standardNCSv3Family"
    assert (body["vCPUs"], body["gpus"], body["memoryGB"]) == (24, 4, 448.0)
    assert body["osVhdSizeMB"] == 1047552
    assert body["lowPriorityCapable"] is True
    assert body["supportedComputeTypes"] == ["AmlCompute", "ComputeInstance"]
    assert body["gpu_model"] == "NVIDIA Tesla V100" and body["gpu_architecture"] == "Volta"
    assert body["min_cuda"] == "9.0" and body["category"] == "gpu"
    assert body["isolated"] is True and body["retired_on"] == "2025-09-30"
    assert body["price_per_hour"] > 0
    cpu = catalog.to_dict(catalog.get_size("Standard_FX4mds"))
    assert cpu["supportedComputeTypes"] == ["AmlCompute"] and cpu["gpu_model"] is None and cpu["retired_on"] is None
