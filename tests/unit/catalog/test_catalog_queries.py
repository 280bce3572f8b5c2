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
    assert suggestion.vcpus >= old.vcpus and suggestion.memory_gb >= old.memory_gb
    assert suggestion.gpus * suggestion.gpu_share >= old.gpus * old.gpu_share


def test_the_suggestion_is_the_cheapest_that_fits():
    with pytest.raises(InvalidSpecError) as err:
        catalog.check_size("Standard_NC6", "amlcompute", TODAY)
    # 6 vCPUs, 56 GB, 1 GPU -> the cheapest current GPU size with at least that much
    assert err.value.details["suggestion"] == "Standard_NC8as_T4_v3"


def test_a_share_of_a_gpu_is_not_suggested_for_a_whole_one():
    # ND6s: 6 vCPUs, 112 GB, 1 P40. Half an A10 (NV18ads, 1.60 $/h) is cheaper but not a whole GPU; the
    # cheapest current size with a whole GPU and that much memory is a whole A10.
    with pytest.raises(InvalidSpecError) as err:
        catalog.check_size("Standard_ND6s", "amlcompute", TODAY)
    assert err.value.details["suggestion"] == "Standard_NV36ads_A10_v5"


@pytest.mark.parametrize(
    "name",
    ["Standard_NC24ads_A100_v4", "Standard_ND96amsr_A100_v4", "Standard_NC40ads_H100_v5", "Standard_ND96isr_H100_v5",
     "Standard_ND96isr_H200_v5", "Standard_ND96isr_MI300X_v5", "Standard_ND128isr_NDR_GB200_v6",
     "Standard_NV6ads_A10_v5"],
)
def test_current_gpu_sizes_can_make_a_cluster(name: str):
    assert catalog.check_size(name, "amlcompute", date(2026, 12, 7)).name == name


def test_a10_sizes_are_refused_on_a_compute_instance():
    with pytest.raises(InvalidSpecError, match="not supported for computeinstance"):
        catalog.check_size("Standard_NV36ads_A10_v5", "computeinstance", TODAY)
    assert catalog.check_size("Standard_ND96isr_H100_v5", "computeinstance", TODAY).name == "Standard_ND96isr_H100_v5"


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
     ("Kepler", "9.0"), ("ampere", "11.0"), ("Hopper", "11.8"), ("Blackwell", "12.8")],
)
def test_gpu_architecture_to_cuda(architecture: str, cuda: str):
    """An architecture's oldest CUDA (Ampere: sm_80's 11.0, not sm_86's 11.1; Blackwell: sm_100's 12.8)."""
    assert catalog.min_cuda_for(architecture) == cuda


def test_unknown_architecture():
    with pytest.raises(InvalidSpecError, match="unknown GPU architecture 'Fermi'; known: Kepler, .*Blackwell"):
        catalog.min_cuda_for("Fermi")


def test_an_amd_architecture_has_no_cuda():
    with pytest.raises(InvalidSpecError, match="CDNA3 is an AMD architecture: it runs ROCm 6.0 or newer, not CUDA"):
        catalog.min_cuda_for("CDNA3")


@pytest.mark.parametrize(
    ("capability", "cuda"),
    [("3.7", "9.0"), ("7.5", "10.0"), ("8.0", "11.0"), ("8.6", "11.1"), ("9.0", "11.8"), ("10.0", "12.8"),
     ("10.3", "12.9"), ("sm_90", "11.8"), ("sm_100", "12.8"), (" sm_86 ", "11.1")],
)
def test_compute_capability_to_cuda(capability: str, cuda: str):
    assert catalog.min_cuda_for_capability(capability) == cuda


@pytest.mark.parametrize("capability", ["8.9", "12.0", "gfx942", "", "sm_"])
def test_unknown_compute_capability(capability: str):
    with pytest.raises(InvalidSpecError, match="unknown compute capability"):
        catalog.min_cuda_for_capability(capability)


def test_list_filters():
    current = catalog.list_sizes(today=TODAY)
    everything = catalog.list_sizes(include_retired=True)
    assert len(everything) == len(catalog.all_sizes()) > len(current)
    assert all(not s.is_retired(TODAY) for s in current)
    gpus = catalog.list_sizes(gpu=True, today=TODAY)
    assert gpus and all(s.gpus > 0 for s in gpus)
    assert {s.series for s in gpus} == {"NDv2", "NCasT4_v3", "NDasrA100_v4", "NCads_A100_v4", "NDamsrA100_v4",
                                        "NCads_H100_v5", "NDH100v5", "NDH200v5", "NVadsA10_v5", "NDMI300Xv5",
                                        "NDGB200v6", "NDGB300v6"}
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
    assert body["gpu_memory_gb"] == 16 and body["gpu_share"] == 1 and body["gpu_vendor"] == "NVIDIA"
    assert body["compute_capability"] == "7.0" and body["interconnect"] == "InfiniBand (RDMA)"
    assert body["min_rocm"] is None and body["gpu_target"] is None
    cpu = catalog.to_dict(catalog.get_size("Standard_FX4mds"))
    assert cpu["supportedComputeTypes"] == ["AmlCompute"] and cpu["gpu_model"] is None and cpu["retired_on"] is None
    assert cpu["gpu_memory_gb"] is None and cpu["min_cuda"] is None and cpu["interconnect"] is None


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("Standard_ND96isr_H100_v5", {"gpu_architecture": "Hopper", "compute_capability": "9.0", "min_cuda": "11.8",
                                      "gpu_memory_gb": 80, "gpu_vendor": "NVIDIA", "retired_on": None}),
        ("Standard_ND96isr_H200_v5", {"gpu_architecture": "Hopper", "min_cuda": "11.8", "gpu_memory_gb": 141}),
        ("Standard_NC24ads_A100_v4", {"gpu_architecture": "Ampere", "compute_capability": "8.0", "min_cuda": "11.0"}),
        ("Standard_ND128isr_NDR_GB200_v6", {"gpu_architecture": "Blackwell", "compute_capability": "10.0",
                                            "min_cuda": "12.8"}),
        ("Standard_ND96isr_MI300X_v5", {"gpu_vendor": "AMD", "gpu_architecture": "CDNA3", "gpu_target": "gfx942",
                                        "min_rocm": "6.0", "min_cuda": None, "compute_capability": None}),
        ("Standard_NV6ads_A10_v5", {"gpus": 1, "gpu_share": pytest.approx(1 / 6), "gpu_memory_gb": 4,
                                    "compute_capability": "8.6", "min_cuda": "11.1"}),
    ],
)
def test_to_dict_names_the_gpu(name: str, fields: dict):
    body = catalog.to_dict(catalog.get_size(name))
    assert {k: body[k] for k in fields} == fields


def test_new_gpu_sizes_are_current_as_of_the_catalogs_date():
    current = {s.name for s in catalog.list_sizes(gpu=True)}
    assert {"Standard_NC24ads_A100_v4", "Standard_ND96amsr_A100_v4", "Standard_ND96isr_H100_v5",
            "Standard_ND96isr_H200_v5", "Standard_ND96isr_MI300X_v5"} <= current
    assert "Standard_NV12s_v3" not in current  # NVv3 retired on 2026-09-30
