"""GPUs found, handed to nodes and read, through the injectable device list (CIBLE_FAKE_GPUS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cible.node import gpus
from cible.node.limits import host_capacity

TWO = [{"uuid": "GPU-aaaa", "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559, "minor": 0},
       {"uuid": "GPU-bbbb", "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559, "minor": 1,
        "utilization_percent": 87, "memory_used_mb": 40000}]


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[gpus.Gpu]:
    monkeypatch.setenv(gpus.ENV_FAKE, json.dumps(TWO))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return gpus.discover()


def test_the_fake_device_list_is_the_machine_s_gpus(two_gpus: list[gpus.Gpu]) -> None:
    assert [(g.index, g.uuid, g.minor) for g in two_gpus] == [(0, "GPU-aaaa", 0), (1, "GPU-bbbb", 1)]
    assert host_capacity().gpus == 2


def test_the_server_s_own_cuda_visible_devices_says_which_gpus_are_lent(two_gpus: list[gpus.Gpu],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for visible, expected in (("1", ["GPU-bbbb"]), ("GPU-aaaa", ["GPU-aaaa"]), ("", [])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        assert [g.uuid for g in gpus.discover()] == expected


def test_a_file_list_is_read_again_at_each_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "gpus.json"
    listing.write_text(json.dumps(TWO))
    monkeypatch.setenv(gpus.ENV_FAKE, str(listing))
    assert gpus.busy(gpus.sample(["GPU-aaaa", "GPU-bbbb"])) == ["GPU 1 (87 %)"]
    listing.write_text(json.dumps([{**TWO[0], "utilization_percent": 30}, {**TWO[1], "utilization_percent": 0}]))
    assert gpus.busy(gpus.sample(["GPU-aaaa", "GPU-bbbb"])) == ["GPU 0 (30 %)"]


def test_a_bad_device_list_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpus.ENV_FAKE, '{"uuid": "x"}')
    with pytest.raises(gpus.GpuError, match="JSON list of objects"):
        gpus.discover()


def test_without_nvml_the_dev_files_are_the_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpus.ENV_FAKE, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus, "_nvml", list)
    for name in ("nvidia1", "nvidia0", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    found = gpus.discover(str(tmp_path))
    assert [(g.index, g.minor, g.ident) for g in found] == [(0, 0, "0"), (1, 1, "1")]
    # Indices mean the /dev (bus) order, so CUDA is told to count that way.
    assert gpus.visible_env([found[1].ident]) == {"CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "1",
                                                  "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_two_one_gpu_nodes_get_different_gpus_and_a_third_waits(two_gpus: list[gpus.Gpu]) -> None:
    first = gpus.assign(1, two_gpus, {}, overcommit=False)
    second = gpus.assign(1, two_gpus, {g.ident: "n1" for g in first}, overcommit=False)
    assert [g.uuid for g in first] == ["GPU-aaaa"] and [g.uuid for g in second] == ["GPU-bbbb"]
    held = {"GPU-aaaa": "n1", "GPU-bbbb": "n2"}
    with pytest.raises(gpus.GpuError) as refused:
        gpus.assign(1, two_gpus, held, overcommit=False, size="Standard_NC40ads_H100_v5")
    assert "0 of this machine's 2 are free" in refused.value.message
    assert "GPU 0 by node n1" in refused.value.message and "GPU 1 by node n2" in refused.value.message


def test_overcommitted_a_node_shares_held_gpus_but_never_gets_more_than_there_are(two_gpus: list[gpus.Gpu]) -> None:
    shared = gpus.assign(8, two_gpus, {"GPU-aaaa": "n1"}, overcommit=True, size="Standard_ND96isr_H100_v5")
    assert [g.uuid for g in shared] == ["GPU-bbbb", "GPU-aaaa"]  # the free one first
    with pytest.raises(gpus.GpuError, match="needs 8 GPUs and this machine has 2"):
        gpus.assign(8, two_gpus, {}, overcommit=False, size="Standard_ND96isr_H100_v5")


def test_a_cpu_node_sees_no_gpu_and_cannot_open_any(two_gpus: list[gpus.Gpu]) -> None:
    assert gpus.assign(0, two_gpus, {}, overcommit=False) == []
    assert gpus.visible_env([]) == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
    assert gpus.denied_minors(two_gpus, []) == [0, 1]
    assert gpus.denied_minors(two_gpus, ["GPU-bbbb"]) == [0]
    assert gpus.visible_env(["GPU-bbbb"]) == {"CUDA_VISIBLE_DEVICES": "GPU-bbbb", "NVIDIA_VISIBLE_DEVICES": "GPU-bbbb"}


def test_gpu_ids_argument(monkeypatch: pytest.MonkeyPatch, two_gpus: list[gpus.Gpu]) -> None:
    assert gpus.parse_idents(None) is None and gpus.parse_idents("none") == []
    assert gpus.parse_idents("GPU-a, GPU-b") == ["GPU-a", "GPU-b"]
    # What an agent reads: what it was given; else what Ray showed it; else the machine's.
    assert gpus.node_idents(["GPU-bbbb"]) == ["GPU-bbbb"]
    assert gpus.node_idents(None) == ["GPU-aaaa", "GPU-bbbb"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpus.node_idents(None) == ["1"]


def test_readings_by_uuid_or_index_and_busy_ignores_bad_records(two_gpus: list[gpus.Gpu]) -> None:
    readings = gpus.sample(["GPU-bbbb", "0"])
    assert [(r["uuid"], r["utilization_percent"], r["memory_used_mb"], r["memory_total_mb"]) for r in readings] == [
        ("GPU-bbbb", 87.0, 40000, 81559), ("GPU-aaaa", 0.0, 0, 81559)]
    assert gpus.sample([]) == []
    assert gpus.busy([{"index": 0, "utilization_percent": "high"}, "junk", {"utilization_percent": 4.9},
                      {"index": 3, "utilization_percent": 5}]) == ["GPU 3 (5 %)"]


def test_without_nvidia_device_files_nvml_is_not_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpus.ENV_FAKE, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def asked() -> list:
        raise AssertionError("NVML was asked on a machine without NVIDIA device files")

    monkeypatch.setattr(gpus, "_nvml", asked)
    assert gpus.discover(str(tmp_path)) == []
