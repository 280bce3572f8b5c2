"""The CUDA preflight reads the torch build from an environment's own Python (cible.launch.preflight).

A stand-in `torch` package (its version module and compiled-arch flags, as real torch answers them)
sits on the PYTHONPATH of a `python` wrapper, so the probe really runs in another interpreter."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from cible.launch.preflight import CACHE_FILE, preflight, read_build

H100 = {"size": "Standard_NC40ads_H100_v5", "count": 1, "model": "NVIDIA H100 NVL", "vendor": "NVIDIA",
        "architecture": "Hopper", "compute_capability": "9.0", "min_cuda": "11.8"}


def fake_torch(site: Path, version: str, cuda: str | None, archs: str) -> Path:
    """A `torch` package that answers the probe as a real build does."""
    package = site / "torch"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"__version__ = {version!r}\nfrom . import _C, cuda, version\n")
    (package / "version.py").write_text(f"cuda = {cuda!r}\nhip = None\n")
    (package / "_C.py").write_text(f"def _cuda_getArchFlags():\n    return {archs!r}\n")
    (package / "cuda.py").write_text("def get_arch_list():\n    return []  # as real torch without a GPU\n")
    shutil.rmtree(package / "__pycache__", ignore_errors=True)  # rewritten within a second: no stale bytecode
    return site


def python_with(bin_dir: Path, site: Path | None) -> Path:
    """A `python` in `bin_dir` that finds torch in `site` only; without `site`, no torch at all (-S: not
    even this venv's, which the tests' dependencies may hold)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    run = f"PYTHONPATH={site} exec {sys.executable}" if site else f"exec {sys.executable} -S"
    wrapper = bin_dir / "python"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        {run} "$@"
        """))
    wrapper.chmod(0o755)
    return bin_dir


def test_an_old_build_is_refused_on_hopper_and_the_answer_is_kept_with_a_venv(tmp_path: Path) -> None:
    site = fake_torch(tmp_path / "site", "2.0.1+cu117", "11.7", "sm_37 sm_50 sm_60 sm_70 sm_75 sm_80 sm_86")
    bin_dir = python_with(tmp_path / "venv" / "bin", site)
    lines: list[str] = []
    refusal = preflight(H100, bin_dir, True, {}, lines.append)
    assert refusal and "torch 2.0.1+cu117 (CUDA 11.7) cannot run on Standard_NC40ads_H100_v5" in refusal
    assert "needs CUDA 11.8 or newer" in refusal and "use a torch built for CUDA 11.8 or newer" in refusal
    kept = json.loads((tmp_path / "venv" / CACHE_FILE).read_text())
    assert kept["archs"][-1] == "sm_86"
    # A venv never changes once built: the next job reads the kept answer, not the interpreter.
    fake_torch(site, "2.5.1+cu124", "12.4", "sm_80 sm_90")
    assert read_build(bin_dir, tmp_path / "venv" / CACHE_FILE).cuda == "11.7"
    assert read_build(bin_dir, None).cuda == "12.4"


def test_the_job_s_own_pythonpath_decides_which_torch_is_checked_and_nothing_is_kept(tmp_path: Path) -> None:
    site = fake_torch(tmp_path / "site", "2.0.1+cu117", "11.7", "sm_80 sm_86")
    venv = tmp_path / "venv"
    lines: list[str] = []
    refusal = preflight(H100, python_with(venv / "bin", None), True, {"PYTHONPATH": str(site)}, lines.append)
    assert refusal and "torch 2.0.1+cu117" in refusal
    assert not (venv / CACHE_FILE).exists()  # another job of this venv may set another PYTHONPATH


def test_a_build_that_runs_there_is_said_in_the_log(tmp_path: Path) -> None:
    site = fake_torch(tmp_path / "site", "2.5.1+cu124", "12.4", "sm_50 sm_80 sm_90")
    lines: list[str] = []
    assert preflight(H100, python_with(tmp_path / "bin", site), False, {}, lines.append) is None
    assert lines == ["CUDA preflight: torch 2.5.1+cu124 (CUDA 12.4) can run on Standard_NC40ads_H100_v5's "
                     "NVIDIA H100 NVL"]


def test_a_cpu_only_build_is_a_warning_and_no_torch_is_nothing_to_check(tmp_path: Path) -> None:
    site = fake_torch(tmp_path / "site", "2.5.1+cpu", None, "")
    lines: list[str] = []
    assert preflight(H100, python_with(tmp_path / "cpu" / "bin", site), False, {}, lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("warning: torch 2.5.1+cpu (CPU only) is a CPU-only build")
    lines.clear()
    assert preflight(H100, python_with(tmp_path / "none" / "bin", None), False, {}, lines.append) is None
    assert lines == []
    assert preflight(None, python_with(tmp_path / "none" / "bin", None), False, {}, lines.append) is None


def test_an_interpreter_that_cannot_answer_skips_the_check_and_says_why(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    (bin_dir / "python").chmod(0o755)
    lines: list[str] = []
    assert preflight(H100, bin_dir, False, {}, lines.append) is None
    assert lines and "CUDA preflight skipped" in lines[0] and "broken" in lines[0]



def test_a_real_torch_build_is_read_from_its_interpreter() -> None:
    torch = pytest.importorskip("torch")
    build = read_build(Path(sys.executable).parent, None)
    assert build is not None and build.version == str(torch.__version__)
    assert build.cuda == torch.version.cuda
