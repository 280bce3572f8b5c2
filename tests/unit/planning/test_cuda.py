"""The CUDA preflight's rules and what a job on a GPU size carries (cible.core.planning.cuda)."""

from __future__ import annotations

import pytest

from cible.core.planning.cuda import Build, check_build, job_gpus, runs_on, submit_notes

H100 = {"size": "Standard_NC40ads_H100_v5", "count": 1, "model": "NVIDIA H100 NVL", "vendor": "NVIDIA",
        "architecture": "Hopper", "compute_capability": "9.0", "min_cuda": "11.8"}
A10 = {**H100, "size": "Standard_NV36ads_A10_v5", "model": "NVIDIA A10", "architecture": "Ampere",
       "compute_capability": "8.6", "min_cuda": "11.1"}
MI300X = {"size": "Standard_ND96isr_MI300X_v5", "count": 8, "model": "AMD Instinct MI300X", "vendor": "AMD",
          "architecture": "CDNA3", "compute_capability": None, "min_cuda": None, "min_rocm": "6.0"}
CU117 = Build("torch", "2.0.1+cu117", cuda="11.7", archs=("sm_37", "sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86"))
CU124 = Build("torch", "2.5.1+cu124", cuda="12.4", archs=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"))
CPU = Build("torch", "2.5.1+cpu")
ROCM = Build("torch", "2.5.1+rocm6.2", hip="6.2.41133")


def test_a_build_older_than_the_architecture_s_cuda_is_refused_with_the_fix() -> None:
    verdict = check_build(CU117, H100)
    assert verdict.refusal is not None
    for part in ("torch 2.0.1+cu117 (CUDA 11.7)", "Standard_NC40ads_H100_v5", "Hopper", "compute capability 9.0",
                 "CUDA 11.8 or newer", "use a torch built for CUDA 11.8 or newer", "whl/cu118"):
        assert part in verdict.refusal, verdict.refusal
    assert check_build(CU124, H100).refusal is None


def test_a_build_without_code_for_the_gpu_is_refused() -> None:
    no_sm90 = Build("torch", "2.1.0+cu121", cuda="12.1", archs=("sm_70", "sm_80", "sm_86"))
    verdict = check_build(no_sm90, H100)
    assert verdict.refusal and "holds code for sm_70, sm_80, sm_86" in verdict.refusal and "sm_90" in verdict.refusal
    with_ptx = Build("torch", "2.1.0+cu121", cuda="12.1", archs=("sm_80", "compute_80"))
    assert check_build(with_ptx, H100).refusal is None  # the driver compiles the PTX for Hopper


@pytest.mark.parametrize(("archs", "capability", "runs"), [
    (("sm_80",), "8.6", True),  # a cubin runs on later GPUs of its major
    (("sm_86",), "8.0", False),  # not on earlier ones
    (("sm_90",), "10.0", False),  # nor on another major
    (("sm_90a",), "9.0", True),
    (("compute_90",), "12.0", True),  # PTX: any later GPU
    (("sm_100", "sm_120"), "12.0", True),
    (("compute_120",), "10.0", False),
    (("junk",), "9.0", False),
])
def test_which_code_runs_on_which_gpu(archs: tuple[str, ...], capability: str, runs: bool) -> None:
    assert runs_on(archs, capability) is runs


def test_a_cpu_only_build_on_a_gpu_size_is_a_warning() -> None:
    verdict = check_build(CPU, A10)
    assert verdict.refusal is None
    assert verdict.warnings == ["torch 2.5.1+cpu (CPU only) is a CPU-only build: on Standard_NV36ads_A10_v5's "
                                "NVIDIA A10 (Ampere, compute capability 8.6) the job runs without the GPU; install "
                                "a torch built for CUDA to use it"]
    assert check_build(None, A10).refusal is None and check_build(None, A10).warnings == []


def test_cuda_and_rocm_builds_are_refused_on_the_other_vendor() -> None:
    on_amd = check_build(CU124, MI300X)
    assert on_amd.refusal and "built for NVIDIA's CUDA" in on_amd.refusal and "ROCm 6.0 or newer" in on_amd.refusal
    assert check_build(ROCM, MI300X).refusal is None
    on_nvidia = check_build(ROCM, H100)
    assert on_nvidia.refusal and "built for AMD's ROCm" in on_nvidia.refusal


class _Size:
    """The VmSize fields the module reads."""

    def __init__(self, name: str, gpus: int) -> None:
        self.name, self.gpus = name, gpus
        self.gpu_model, self.gpu_architecture, self.min_cuda = ("NVIDIA H100", "Hopper", "11.8") if gpus else (None,) * 3
        self.gpu_vendor, self.compute_capability, self.min_rocm = ("NVIDIA", "9.0", None) if gpus else (None,) * 3


def test_a_job_needs_gpus_when_its_size_has_them() -> None:
    assert job_gpus(None) is None and job_gpus(_Size("Standard_DS3_v2", 0)) is None
    gpus = job_gpus(_Size("Standard_ND96isr_H100_v5", 8))
    assert gpus == {"size": "Standard_ND96isr_H100_v5", "count": 8, "model": "NVIDIA H100", "vendor": "NVIDIA",
                    "architecture": "Hopper", "compute_capability": "9.0", "min_cuda": "11.8", "min_rocm": None}


def test_submit_notes_name_a_cuda_environment_on_cpus_and_ranks_that_miss_gpus() -> None:
    cuda_env = {"label": "environment AzureML-acpt-pytorch-2.2-cuda12.1", "cuda": "12.1"}
    cpu = _Size("Standard_DS3_v2", 0)
    assert submit_notes(cpu, cuda_env, None, "cpu-cluster") == [
        "environment AzureML-acpt-pytorch-2.2-cuda12.1 is a CUDA environment (CUDA 12.1) but compute cpu-cluster's "
        "size Standard_DS3_v2 has no GPU: the job runs on CPUs, with its CPU build"]
    # The environment's name says nothing: a host environment named "gpu" gets no note.
    assert submit_notes(cpu, {"label": "gpu-env"}, None, "cpu-cluster") == []
    eight = _Size("Standard_ND96isr_H100_v5", 8)
    torch = {"type": "pytorch", "process_count_per_instance": 8}
    assert submit_notes(eight, {}, torch, "h100") == []
    (fewer,) = submit_notes(eight, {}, {**torch, "process_count_per_instance": 2}, "h100")
    assert "is 2 and Standard_ND96isr_H100_v5 has 8 GPUs a node" in fewer and "6 stay unused" in fewer
    (more,) = submit_notes(eight, {}, {**torch, "process_count_per_instance": 16}, "h100")
    assert "share GPUs; set it to 8" in more
