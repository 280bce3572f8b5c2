"""`recommend-size`'s choice: the smallest current size with 150 % of the measured peak memory, and
ceil(target / measured) replicas, with the numbers said; clear errors when nothing fits."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from cible.core.catalog import VmSize, all_sizes, get_size
from cible.core.errors import InvalidRequestError, InvalidSpecError
from cible.core.planning.sizing import HEADROOM, recommend, replicas_for

TODAY = date(2026, 1, 1)
MB = 1 << 20
GB = 1 << 30


def size(name: str, vcpus: int, memory_gb: float, price: float, *, gpus: int = 0, family: str = "standardDFamily",
         isolated: bool = False, retired_on: date | None = None) -> VmSize:
    return VmSize(name=name, series="X", family=family, vcpus=vcpus, memory_gb=memory_gb, gpus=gpus,
                  gpu_model="T4" if gpus else None, gpu_architecture=None, min_cuda=None,
                  category="gpu" if gpus else "general", compute_types=("amlcompute",), isolated=isolated,
                  low_priority_capable=True, price_per_hour=price, retired_on=retired_on, os_disk_gb=1023,
                  confidence="high")


SMALL = size("Small", 1, 2, 0.05)
MEDIUM = size("Medium", 2, 4, 0.10)
LARGE = size("Large", 4, 16, 0.40)


def test_the_smallest_size_with_150_percent_of_the_peak_is_chosen():
    # 1.5 GB peak needs 2.25 GB: Small (2 GB) is too small, Medium (4 GB) is the smallest that fits.
    choice = recommend(int(1.5 * GB), 100.0, None, [LARGE, SMALL, MEDIUM], TODAY)
    assert choice.size.name == "Medium"
    assert choice.needed_memory_bytes == int(1.5 * GB * HEADROOM)
    assert choice.size.memory_gb * GB >= HEADROOM * choice.peak_memory_bytes
    assert (choice.candidates, choice.fitting) == (3, 2)
    assert choice.instance_count is None
    assert "150 % of the peak memory of 1536.0 MB is 2304.0 MB" in choice.explanation
    assert "Medium (2 vCPUs, 4 GB)" in choice.explanation
    assert "2 of 3 current sizes are large enough" in choice.explanation


def test_exactly_150_percent_is_enough():
    assert recommend(int(4 * GB / HEADROOM), 1.0, None, [MEDIUM, LARGE], TODAY).size.name == "Medium"
    assert recommend(int(4 * GB / HEADROOM) + 1, 1.0, None, [MEDIUM, LARGE], TODAY).size.name == "Large"


def test_ties_on_memory_go_to_fewer_vcpus_then_the_cheaper_then_the_current_family():
    few_cpus = size("FewCpus", 2, 8, 0.30)
    many_cpus = size("ManyCpus", 8, 8, 0.10)
    assert recommend(GB, 1.0, None, [many_cpus, few_cpus], TODAY).size.name == "FewCpus"
    cheap = size("Cheap", 2, 8, 0.09)
    assert recommend(GB, 1.0, None, [few_cpus, cheap], TODAY).size.name == "Cheap"
    d_family = size("Dsize", 2, 8, 0.1, family="standardDFamily")
    e_family = size("Esize", 2, 8, 0.1, family="standardEFamily")
    current = size("Eother", 4, 32, 0.5, family="standardEFamily")
    assert recommend(GB, 1.0, None, [d_family, e_family], TODAY).size.name == "Dsize"  # by name
    assert recommend(GB, 1.0, None, [d_family, e_family, current], TODAY, current="Eother").size.name == "Esize"


def test_retired_sizes_are_skipped():
    old = replace(MEDIUM, name="OldMedium", retired_on=date(2025, 6, 1))
    assert recommend(int(1.5 * GB), 1.0, None, [old, LARGE], TODAY).size.name == "Large"
    # Before its retirement day it is current.
    assert recommend(int(1.5 * GB), 1.0, None, [old, LARGE], date(2025, 5, 31)).size.name == "OldMedium"


def test_isolated_sizes_only_when_nothing_else_is_large_enough():
    whole_host = size("WholeHost", 2, 4, 0.05, isolated=True)
    assert recommend(GB, 1.0, None, [whole_host, LARGE], TODAY).size.name == "Large"
    huge = size("Huge", 128, 4000, 26.0, isolated=True)
    choice = recommend(100 * GB, 1.0, None, [LARGE, huge], TODAY)
    assert choice.size.name == "Huge"
    assert "Only isolated sizes" in choice.explanation


def test_a_cpu_deployment_gets_a_cpu_size_and_a_gpu_one_keeps_its_gpus():
    gpu_small = size("GpuSmall", 4, 28, 0.5, gpus=1)
    gpu_big = size("GpuBig", 24, 220, 4.0, gpus=4)
    cpu_big = size("CpuBig", 16, 64, 0.8)
    assert recommend(20 * GB, 1.0, None, [gpu_small, cpu_big], TODAY).size.name == "CpuBig"
    assert recommend(GB, 1.0, None, [gpu_small, cpu_big, gpu_big], TODAY, min_gpus=1).size.name == "GpuSmall"
    assert recommend(GB, 1.0, None, [gpu_small, cpu_big, gpu_big], TODAY, min_gpus=2).size.name == "GpuBig"


@pytest.mark.parametrize("target, rps, count", [
    (100, 50.0, 2), (100, 40.0, 3), (100, 100.0, 1), (1, 500.0, 1), (0.5, 0.1, 5), (1000, 333.3, 4),
])
def test_replicas_are_the_target_over_one_replicas_rate_rounded_up(target, rps, count):
    assert replicas_for(target, rps) == count
    choice = recommend(GB, rps, target, [MEDIUM, LARGE], TODAY)
    assert choice.instance_count == count
    assert f"ceil({target:g} / {rps:g}) = {count} replica" in choice.explanation


def test_the_current_size_is_compared_in_the_explanation():
    assert "runs on Large (4 vCPUs, 16 GB) now: larger than it needs" in recommend(
        GB, 1.0, None, [MEDIUM, LARGE], TODAY, current="Large").explanation
    assert "runs on Small (1 vCPUs, 2 GB) now: too small for this peak" in recommend(
        2 * GB, 1.0, None, [SMALL, LARGE], TODAY, current="Small").explanation
    assert "already runs on Medium" in recommend(GB, 1.0, None, [MEDIUM, LARGE], TODAY, current="medium").explanation
    assert "instance_type Nope is not a current size" in recommend(
        GB, 1.0, None, [MEDIUM], TODAY, current="Nope").explanation


def test_nothing_large_enough_is_an_error_naming_the_need_and_the_largest():
    with pytest.raises(InvalidSpecError) as info:
        recommend(20 * GB, 1.0, None, [SMALL, MEDIUM, LARGE], TODAY)
    message = info.value.message
    assert ("no current VM size without GPUs has 30.00 GB of memory (150 % of the measured peak of 20480.0 MB)"
            in message)
    assert "the largest is Large (4 vCPUs, 16 GB)" in message
    assert info.value.details["largest"] == "Large"


def test_no_current_size_of_the_kind_is_an_error():
    with pytest.raises(InvalidSpecError, match="no current VM size with at least 1 GPU is in the catalog"):
        recommend(GB, 1.0, None, [SMALL, LARGE], TODAY, min_gpus=1)
    retired = replace(LARGE, retired_on=date(2020, 1, 1))
    with pytest.raises(InvalidSpecError, match="no current VM size without GPUs"):
        recommend(GB, 1.0, None, [retired], TODAY)


@pytest.mark.parametrize("peak", [0, -5])
def test_a_peak_that_is_not_a_measurement_is_refused(peak):
    with pytest.raises(InvalidRequestError, match="peak_memory_bytes"):
        recommend(peak, 1.0, None, [LARGE], TODAY)


@pytest.mark.parametrize("target", [0, -1.0, float("nan"), float("inf")])
def test_a_target_that_is_not_a_positive_rate_is_refused(target):
    with pytest.raises(InvalidRequestError, match="target_rps: give a positive number"):
        recommend(GB, 10.0, target, [LARGE], TODAY)


def test_a_target_without_any_successful_request_is_refused():
    with pytest.raises(InvalidRequestError, match="no request succeeded during the measurement"):
        recommend(GB, 0.0, 100.0, [LARGE], TODAY)
    assert recommend(GB, 0.0, None, [LARGE], TODAY).size.name == "Large"  # the size needs no rate


def test_with_the_real_catalog_a_small_model_gets_a_small_current_cpu_size():
    today = date(2026, 1, 1)
    sizes = [s for s in all_sizes() if "amlcompute" in s.compute_types]
    choice = recommend(300 * MB, 200.0, 500.0, sizes, today, current="Standard_DS3_v2")
    assert choice.size.gpus == 0 and not choice.size.is_retired(today) and not choice.size.isolated
    smallest = min(s.memory_gb for s in sizes if s.gpus == 0 and not s.is_retired(today) and not s.isolated)
    assert choice.size.memory_gb == smallest
    assert choice.size.family == get_size("Standard_DS3_v2").family  # DS1_v2 over D1_v2 (same shape and price)
    assert choice.instance_count == 3
