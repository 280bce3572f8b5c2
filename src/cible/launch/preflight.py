"""The CUDA preflight: before a job's command starts on a GPU size, the framework build its environment
holds is read and checked against the size's GPU (cible.core.planning.cuda says the rules).

The build is read by the environment's own Python, with the job's own variables (its PYTHONPATH decides
which torch its command imports): `import torch` gives its version, CUDA or ROCm, and the architectures
it was compiled for. Importing torch takes a second or more, so a built environment's answer is kept
beside it (a venv never changes once ready); the machine's own Python, or a job that sets PYTHONPATH,
is asked each time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.core.planning.cuda import Build, check_build

PROBE_TIMEOUT_S = 120.0
CACHE_FILE = ".cible-framework.json"
# Run by the environment's Python: prints the torch build as JSON, or null without torch.
PROBE = r"""
import json
try:
    import torch
except Exception:
    print("null")
    raise SystemExit(0)
cuda = getattr(torch.version, "cuda", None)
archs = []
if cuda:
    flags = getattr(getattr(torch, "_C", None), "_cuda_getArchFlags", None)  # compiled in: no GPU needed
    try:
        archs = flags().split() if flags else list(torch.cuda.get_arch_list())
    except Exception:
        archs = []
print(json.dumps({"framework": "torch", "version": str(torch.__version__), "cuda": cuda,
                  "hip": getattr(torch.version, "hip", None), "archs": archs}))
"""


class ProbeError(Exception):
    pass


def read_build(bin_dir: Path, cache: Path | None, env: dict[str, str] | None = None) -> Build | None:
    """The torch build of the environment whose interpreter is in `bin_dir`, run with `env` (default: this
    process's); None without torch. `cache`: where a built environment keeps the answer (None: ask each time)."""
    if cache is not None and cache.is_file():
        try:
            return _build(json.loads(cache.read_text()))
        except (OSError, ValueError, TypeError):
            pass  # read again below
    try:
        done = subprocess.run([str(bin_dir / "python"), "-c", PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"could not ask the environment's Python for its torch build: {exc}") from None
    if done.returncode != 0:
        raise ProbeError(f"the environment's Python could not tell its torch build: "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    if cache is not None:
        try:
            cache.write_text(json.dumps(raw))
        except OSError:
            pass  # asked again next time
    return _build(raw)


def _build(raw: dict[str, Any] | None) -> Build | None:
    if raw is None:
        return None
    return Build(framework=raw["framework"], version=raw["version"], cuda=raw.get("cuda"), hip=raw.get("hip"),
                 archs=tuple(raw.get("archs") or ()))


def preflight(gpus: dict[str, Any] | None, bin_dir: Path, is_venv: bool, env: dict[str, str],
              progress: Callable[[str], None]) -> str | None:
    """Check the build the job's command would import (`env`: its variables) against the plan's `gpus`: the
    refusal (the job fails with it) or None; warnings and what was checked go to the job's log."""
    if not gpus:
        return None  # a size without GPUs: nothing to check
    cache = bin_dir.parent / CACHE_FILE if is_venv and not env.get("PYTHONPATH") else None
    try:
        build = read_build(bin_dir, cache, env)
    except ProbeError as exc:
        progress(f"CUDA preflight skipped: {exc}")
        return None
    verdict = check_build(build, gpus)
    for warning in verdict.warnings:
        progress(f"warning: {warning}")
    if build is not None and verdict.refusal is None and not verdict.warnings:
        progress(f"CUDA preflight: {build.describe()} can run on {gpus.get('size')}'s {gpus.get('model') or 'GPU'}")
    return verdict.refusal
