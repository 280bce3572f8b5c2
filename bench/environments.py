"""Environment materialisation: uv (through cible) against pip, cold, and warm reuse.

In one run, for the same scikit-learn requirement set:
  (a) `python -m venv` + `pip install`, with a fresh, empty pip cache and PIP_CONFIG_FILE=/dev/null
      (and no PIP_* variables), so pip goes to plain PyPI like uv does;
  (b) a cold build through `cible.launch.environments.materialise`: empty cache_root, so an empty
      UV_CACHE_DIR too;
  (c) warm reuse through `materialise` of the environment (b) built: the time until the
      interpreter's bin dir is known (median of --warm-runs).
Prints times and ratios. Targets: pip / uv-cold >= 5, warm reuse <= 100 ms.

    .venv/bin/python bench/environments.py [--requirements "scikit-learn pandas"] [--warm-runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cible.core.environments import plan_environment
from cible.launch.environments import find_interpreter, materialise

DEFAULT_REQUIREMENTS = "scikit-learn"


def pip_env(pip_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({
        "PIP_CONFIG_FILE": os.devnull,  # not /etc/xdg/pip/pip.conf's local find-links: plain PyPI
        "PIP_CACHE_DIR": str(pip_cache),  # fresh and empty: a cold pip
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    })
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


def show_pip_config(python: str) -> None:
    def config(env: dict[str, str]) -> str:
        out = subprocess.run([python, "-m", "pip", "config", "list"], check=False, capture_output=True, text=True, env=env)
        return (out.stdout.strip() or "(empty)").replace("\n", "; ")

    print(f"pip config on this machine (`pip config list`): {config(dict(os.environ))}")
    machine_vars = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}
    if machine_vars:
        print(f"PIP_* variables on this machine (removed for the bench): {', '.join(f'{k}={v}' for k, v in sorted(machine_vars.items()))}")
    print(f"pip config for the bench (PIP_CONFIG_FILE={os.devnull}, no PIP_* but the cache dir): "
          f"{config(pip_env(Path(tempfile.gettempdir())))}")


def pip_cold(python: str, requirements: list[str], work: Path) -> float:
    venv, cache = work / "pip-venv", work / "pip-cache"
    env = pip_env(cache)
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True, env=env)
    seconds = time.perf_counter() - t0
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], check=False, capture_output=True, text=True, env=env).stdout
    print(f"  pip installed: {' '.join(frozen.split())}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requirements", default=DEFAULT_REQUIREMENTS, help="space-separated pip requirements")
    parser.add_argument("--python", default="3.10", help="interpreter version for both venvs")
    parser.add_argument("--warm-runs", type=int, default=20)
    args = parser.parse_args()
    requirements = args.requirements.split()

    found = find_interpreter(args.python)
    if found is None:
        print(f"python {args.python} is not on this machine; using the host's {sys.version.split()[0]}")
        args.python, found = None, (sys.executable, sys.version.split()[0])
    python, version = found
    plan = plan_environment({
        "image": "python",
        "conda_file": {"dependencies": ([f"python={args.python}"] if args.python else []) + [{"pip": requirements}]},
    })
    print(f"requirements: {' '.join(requirements)}; Python {version} ({python})")
    show_pip_config(python)

    with tempfile.TemporaryDirectory(prefix="cible-bench-env-") as tmp:
        work = Path(tmp)
        print("(a) python -m venv + pip install, cold pip cache ...", flush=True)
        pip_s = pip_cold(python, requirements, work)
        print(f"    {pip_s:.2f} s")

        cache_root = work / "envs"  # empty: the uv cache (cache_root/.uv-cache) is empty too
        log = work / "build.log"
        lines: list[str] = []
        print("(b) uv through materialise, empty cache_root and UV_CACHE_DIR ...", flush=True)
        t0 = time.perf_counter()
        materialise(plan, cache_root=cache_root, progress=lines.append, build_log=log)
        uv_s = time.perf_counter() - t0
        print(f"    {uv_s:.2f} s")
        for line in lines:
            print(f"    | {line}")

        print(f"(c) warm reuse through materialise, {args.warm_runs} runs ...", flush=True)
        warm = []
        for _ in range(args.warm_runs):
            t0 = time.perf_counter()
            materialise(plan, cache_root=cache_root, progress=lambda _line: None, build_log=log)
            warm.append((time.perf_counter() - t0) * 1000)
        warm_ms = statistics.median(warm)
        print(f"    median {warm_ms:.3f} ms (min {min(warm):.3f}, max {max(warm):.3f})")
        bin_dir = materialise(plan, cache_root=cache_root, progress=lambda _line: None, build_log=log)
        starts = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([str(bin_dir / "python"), "-c", "pass"], check=True)
            starts.append((time.perf_counter() - t0) * 1000)
        print(f"    for reference, `python -c pass` from the cached environment: median {statistics.median(starts):.1f} ms")
        shutil.rmtree(cache_root, ignore_errors=True)

    ratio = pip_s / uv_s
    print()
    print(f"pip cold      {pip_s:8.2f} s")
    print(f"uv cold       {uv_s:8.2f} s")
    print(f"ratio pip/uv  {ratio:8.1f} x   (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    print(f"warm reuse    {warm_ms:8.3f} ms  (target <= 100 ms: {'met' if warm_ms <= 100 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
