"""`cible compute list-sizes` and `show-size` through the CLI."""

from __future__ import annotations

import json


def test_list_sizes_filters_gpu_sizes_of_a_compute_type(workspace):  # noqa: ANN001
    sizes = json.loads(workspace.cible("compute", "list-sizes", "--type", "computeinstance", "--gpu", "-o", "json").stdout)
    assert sizes and all(s["gpus"] > 0 and "ComputeInstance" in s["supportedComputeTypes"] for s in sizes)
    assert not any(s["retired_on"] for s in sizes)  # retired series are left out unless asked for


def test_show_size_gives_the_shape_and_suggests_names_for_a_typo(workspace):  # noqa: ANN001
    size = json.loads(workspace.cible("compute", "show-size", "Standard_DS3_v2", "-o", "json").stdout)
    assert (size["vCPUs"], size["memoryGB"], size["gpus"]) == (4, 14.0, 0)
    typo = workspace.cible("compute", "show-size", "Standard_DS3v2", check=False)
    assert typo.returncode == 1 and "did you mean Standard_DS3_v2" in typo.stderr


def test_show_size_names_the_gpu_its_architecture_and_the_toolkit_it_needs(workspace):
    h100 = workspace.cible("compute", "show-size", "Standard_ND96isr_H100_v5", "-o", "table").stdout
    for text in ("8 x NVIDIA H100 80GB, 80 GB each", "Hopper, compute capability 9.0", "CUDA 11.8 or newer",
                 "InfiniBand NDR, 400 Gb/s per GPU"):
        assert text in h100, (text, h100)
    mi300x = workspace.cible("compute", "show-size", "Standard_ND96isr_MI300X_v5", "-o", "table").stdout
    assert "8 x AMD Instinct MI300X, 192 GB each" in mi300x and "CDNA3, gfx942" in mi300x
    assert "ROCm 6.0 or newer (not CUDA)" in mi300x
    a10 = workspace.cible("compute", "show-size", "Standard_NV6ads_A10_v5", "-o", "table").stdout
    assert "1/6 x NVIDIA A10, 4 GB" in a10 and "Ampere, compute capability 8.6" in a10 and "CUDA 11.1" in a10
    h200 = json.loads(workspace.cible("compute", "show-size", "Standard_ND96isr_H200_v5", "-o", "json").stdout)
    assert (h200["gpus"], h200["gpu_memory_gb"], h200["gpu_architecture"], h200["compute_capability"],
            h200["min_cuda"]) == (8, 141, "Hopper", "9.0", "11.8")
    cpu = workspace.cible("compute", "show-size", "Standard_DS3_v2", "-o", "table").stdout
    assert "GPUs" in cpu and "none" in cpu and "CUDA" not in cpu


def test_list_sizes_shows_a_share_of_a_gpu(workspace):
    table = workspace.cible("compute", "list-sizes", "--gpu", "-o", "table").stdout
    assert "Standard_NV6ads_A10_v5" in table and "1/6" in table


def test_clusters_of_current_a100_h100_h200_sizes_are_created(workspace):
    # These are bigger than the test machine: --overcommit, as for any size the host cannot hold.
    for name, size in (("a100", "Standard_NC24ads_A100_v4"), ("a100x8", "Standard_ND96amsr_A100_v4"),
                       ("h100", "Standard_ND96isr_H100_v5"), ("h200", "Standard_ND96isr_H200_v5")):
        created = json.loads(workspace.cible("compute", "create", "--name", name, "--type", "amlcompute", "--size", size,
                                             "--max-instances", "1", "--overcommit", "-o", "json").stdout)
        assert created["size"] == size
