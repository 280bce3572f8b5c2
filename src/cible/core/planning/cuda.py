"""What a job needs of GPUs, and whether its framework build can run on them (the CUDA preflight).

A job needs GPUs when the size it runs on has them: a cluster's or instance's size, or a serverless
job's `resources.instance_type` (never guessed from an environment's name). Its launch plan then carries
`gpus` (`job_gpus`): the count per node and what the size's GPU is, which the launcher checks the built
environment's framework against before the command starts (`check_build`).

Rules of `check_build` (NVIDIA's compatibility rules, as PyTorch states its own builds):
- a build whose CUDA is older than the architecture's first (Hopper: 11.8, Blackwell: 12.8) cannot run;
- a build must hold code for the GPU: a cubin `sm_XY` of the same major and a minor not above the GPU's
  (sm_80 runs on an 8.6 GPU, sm_90 does not run on 10.0), or PTX `compute_XY` not above it (the driver
  compiles it at start);
- a CUDA build cannot run on an AMD GPU, nor a ROCm build on an NVIDIA one;
- a CPU-only build runs, without the GPU: a warning, not a refusal.
Pure: the launcher reads the build (launch/preflight.py) and hands it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


def job_gpus(size: Any) -> dict[str, Any] | None:
    """The launch plan's `gpus` for a job on nodes of `size` (a catalog VmSize: this module is imported by the
    launcher, which runs on nodes without the catalog's YAML reader): None for a size without GPUs."""
    if size is None or size.gpus <= 0:
        return None
    return {"size": size.name, "count": size.gpus, "model": size.gpu_model, "vendor": size.gpu_vendor or "NVIDIA",
            "architecture": size.gpu_architecture, "compute_capability": size.compute_capability,
            "min_cuda": size.min_cuda, "min_rocm": size.min_rocm}


def submit_notes(size: Any, environment: dict[str, Any], distribution: dict[str, Any] | None,
                 compute: str) -> list[str]:
    """Warnings for a job on nodes of `size`: a CUDA environment on a size without GPUs (it runs its CPU
    build, as Azure runs a CUDA image on a CPU VM), and PyTorch ranks that do not match the node's GPUs."""
    notes = []
    cuda = environment.get("cuda")
    if size is not None and cuda and size.gpus <= 0:
        notes.append(f"{environment.get('label') or 'the environment'} is a CUDA environment (CUDA {cuda}) but "
                     f"compute {compute}'s size {size.name} has no GPU: the job runs on CPUs, with its CPU build")
    if size is not None and size.gpus > 1 and distribution and distribution.get("type") == "pytorch":
        per_node = int(distribution.get("process_count_per_instance") or 1)
        if per_node != size.gpus:
            notes.append(f"distribution.process_count_per_instance is {per_node} and {size.name} has {size.gpus} "
                         f"GPUs a node: each rank finds its GPU by LOCAL_RANK, so {size.gpus - per_node} stay unused"
                         if per_node < size.gpus else
                         f"distribution.process_count_per_instance is {per_node} and {size.name} has {size.gpus} "
                         f"GPUs a node: ranks beyond LOCAL_RANK {size.gpus - 1} share GPUs; set it to {size.gpus}")
    return notes


@dataclass(frozen=True)
class Build:
    """A framework build as the environment holds it (PyTorch's torch.version and compiled arch list)."""

    framework: str  # "torch"
    version: str  # "2.5.1+cu124"
    cuda: str | None = None  # torch.version.cuda; None for a CPU-only or ROCm build
    hip: str | None = None  # torch.version.hip (ROCm)
    archs: tuple[str, ...] = ()  # torch.cuda.get_arch_list(): sm_XY cubins, compute_XY PTX; () when unknown

    def describe(self) -> str:
        kind = f"CUDA {self.cuda}" if self.cuda else f"ROCm {self.hip}" if self.hip else "CPU only"
        return f"{self.framework} {self.version} ({kind})"


@dataclass(frozen=True)
class Verdict:
    refusal: str | None = None  # why the build cannot run on the size's GPU, with the fix
    warnings: list[str] = field(default_factory=list)


def check_build(build: Build | None, gpus: dict[str, Any]) -> Verdict:
    """Whether `build` can run on the GPU of the plan's `gpus` (see the module's rules)."""
    if build is None:
        return Verdict()  # no framework build to check: the command's own business
    gpu = _gpu_text(gpus)
    vendor = (gpus.get("vendor") or "NVIDIA").upper()
    if vendor == "AMD":
        if build.cuda:
            return Verdict(f"{build.describe()} cannot run on {gpu}: it is built for NVIDIA's CUDA; use a "
                           f"{build.framework} built for ROCm{_at_least(gpus.get('min_rocm'))} "
                           f"(e.g. pip install {build.framework} --index-url https://download.pytorch.org/whl/rocm6.2)")
        if not build.hip:
            return Verdict(warnings=[_cpu_only(build, gpu, "ROCm")])
        return Verdict()
    if build.hip:
        return Verdict(f"{build.describe()} cannot run on {gpu}: it is built for AMD's ROCm; use a "
                       f"{build.framework} built for CUDA{_at_least(gpus.get('min_cuda'))}")
    if not build.cuda:
        return Verdict(warnings=[_cpu_only(build, gpu, "CUDA")])
    fix = f"use a {build.framework} built for CUDA{_at_least(gpus.get('min_cuda'))}"
    minimum = gpus.get("min_cuda")
    if minimum and _version(build.cuda) < _version(minimum):
        return Verdict(f"{build.describe()} cannot run on {gpu}: that architecture needs CUDA {minimum} or "
                       f"newer; {fix} (e.g. pip install {build.framework} --index-url "
                       f"https://download.pytorch.org/whl/cu{_wheel_tag(minimum)})")
    capability = gpus.get("compute_capability")
    if capability and build.archs and not runs_on(build.archs, capability):
        return Verdict(f"{build.describe()} holds code for {', '.join(build.archs)} and none runs on {gpu} "
                       f"(compute capability {capability}: it needs sm_{capability.replace('.', '')} or PTX "
                       f"of an older architecture); {fix} that includes sm_{capability.replace('.', '')}")
    return Verdict()


def runs_on(archs: tuple[str, ...] | list[str], capability: str) -> bool:
    """Whether any of a build's architectures runs on a GPU of `capability` ("9.0")."""
    major, minor = _capability(capability)
    for arch in archs:
        match = re.fullmatch(r"(sm|compute)_(\d+?)(\d)[a-z]?", arch.strip())
        if match is None:
            continue
        kind, a_major, a_minor = match.group(1), int(match.group(2)), int(match.group(3))
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True  # a cubin runs on later GPUs of its major version
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True  # PTX is compiled by the driver for any later GPU
    return False


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:3])


def _wheel_tag(cuda: str) -> str:
    """PyTorch's wheel index suffix for a CUDA version: 11.8 -> 118, 12.8 -> 128."""
    major, minor = (_version(cuda) + (0, 0))[:2]
    return f"{major}{minor}"


def _at_least(version: str | None) -> str:
    return f" {version} or newer" if version else ""


def _gpu_text(gpus: dict[str, Any]) -> str:
    arch = gpus.get("architecture")
    capability = gpus.get("compute_capability")
    detail = ", ".join(x for x in (arch, f"compute capability {capability}" if capability else None) if x)
    return f"{gpus.get('size', 'this size')}'s {gpus.get('model') or 'GPU'}" + (f" ({detail})" if detail else "")


def _cpu_only(build: Build, gpu: str, stack: str) -> str:
    return (f"{build.describe()} is a CPU-only build: on {gpu} the job runs without the GPU; install a "
            f"{build.framework} built for {stack} to use it")
