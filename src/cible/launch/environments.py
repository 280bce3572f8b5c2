"""Materialising a job's environment on the node: the plan's environment block -> a bin dir.

`materialise(env, ...)` returns the directory whose `python` runs the job:

- ``host``: the launcher's own interpreter (the plan's notes, e.g. on an image that is not run, go
  to the job's log with the interpreter's version).
- ``venv``: a uv virtual environment in ``cache_root/<key>``, shared by every job and target on the
  machine. A ready environment has a marker file, written last; with the marker it is reused
  without starting any process (the warm path). Otherwise the builder holds an exclusive flock on
  ``cache_root/<key>.lock``: a second job that needs the same environment waits for it and then
  reuses it; a directory without a marker (a build that died) is removed first; a failed build is
  removed, never reused. A CUDA environment (the plan's ``cuda``) is built as its CUDA build where
  this machine has a GPU and as its CPU build (``cpu_build``) where it has none; the job's log
  says which.
  The interpreter is the requested X.Y where the machine has it or uv can download it
  (`cible.launch.interpreters`); else, unless strict Python matching is on, the nearest one, and
  then each exact pin with no wheel for it is moved to the nearest version with one
  (`cible.launch.pins`): every move in the build log, the list once in the job's log. Such a build
  is cached under a key of its own (the planned key, that Python and the relaxed pins), pointed to
  by ``<key>.fallback.json``, so it never stands in for the exact build a strict job wants.
- ``container``: needs a container engine; fails with the plan's reason.

Standard library only at import time: the launcher imports this module. uv is found when a build
starts (the `uv` package's binary, else `uv` on PATH).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.launch.interpreters import (  # noqa: F401 - find_interpreter and available_interpreters are this module's API
    NoInterpreter,
    available_interpreters,
    choose_interpreter,
    find_interpreter,
)
from cible.launch.pins import Relaxation
from cible.launch.pins import relax as relax_pins
from cible.node import gpus

READY_MARKER = ".cible-ready"
REQUIREMENTS_FILE = "cible-requirements.txt"
# A .pth line runs at every interpreter start: how an environment's variables (a Docker ENV in
# Azure's image) reach the job, its subprocesses and `python -m pip` alike.
VARIABLES_PTH = "cible-environment-variables.pth"
UV_CACHE_DIRNAME = ".uv-cache"
TAIL_LINES = 30
# uv lines worth showing in the job's stream while it installs
_PROGRESS_LINE = re.compile(r"^(Using CPython |Resolved |Prepared |Installed |Uninstalled |Audited )")


class EnvironmentBuildError(Exception):
    """The environment could not be materialised; .message says what and ends with the installer's output."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Progress = Callable[[str], None]


# -- entry point ------------------------------------------------------------------------------------
def materialise(
    env: dict[str, Any],
    *,
    cache_root: Path,
    progress: Progress,
    build_log: Path,
    strict_python: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Path:
    """The bin dir whose `python` runs the job. Raises EnvironmentBuildError.

    cancel (optional): polled while an installer runs; when it returns True the installer is
    stopped and EnvironmentBuildError("... canceled") raised.
    """
    env = env or {}
    kind = env.get("kind", "host")
    if kind == "host":
        for note in env.get("notes") or []:
            progress(f"{_who(env)}: {note} (Python {'.'.join(map(str, sys.version_info[:3]))}, {sys.executable})")
        return Path(sys.executable).parent
    if kind == "container":
        _container(env)
    if kind != "venv":
        raise EnvironmentBuildError(f"unknown environment kind '{kind}' in the launch plan")
    return _venv(_for_this_node(env, progress), Path(cache_root), progress, Path(build_log), strict_python, cancel)


# -- GPUs ---------------------------------------------------------------------------------------------
def visible_gpus(dev: str = "/dev") -> int:
    """GPUs this process can use: those CUDA_VISIBLE_DEVICES names (a node is given its own, see
    cible.node.gpus), none when it hides them all, else the machine's."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        idents = [i for i in listed.split(",") if i.strip()]
        return 0 if not idents or idents[0].strip() in ("-1", "none", "NoDevFiles") else len(idents)
    return len(gpus.discover(dev))


def _for_this_node(env: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """A CUDA environment's build for this node: as planned (its CUDA build) where there is a GPU, its
    CPU build where there is none, as Azure runs a CUDA image on a VM without GPUs (on its CPUs)."""
    cpu, cuda = env.get("cpu_build"), env.get("cuda")
    if not cpu or not cuda:
        return env
    gpus = visible_gpus()
    if gpus:
        progress(f"{_who(env)} is a CUDA environment (CUDA {cuda}); this node has {gpus} GPU"
                 f"{'s' if gpus != 1 else ''}: running its CUDA build")
        return env
    progress(f"{_who(env)} is a CUDA environment (CUDA {cuda}); this node has no GPU: running its CPU build")
    chosen = {k: v for k, v in env.items() if k not in ("cpu_build", "torch_backend", "variables")}
    return {**chosen, **cpu, "variant": "cpu"}


def ready_environment(cache_root: Path, key: str) -> Path | None:
    """The bin dir of the ready environment `key`, or None: two stats, no process."""
    env_dir = Path(cache_root) / key
    bin_dir = env_dir / "bin"
    if (env_dir / READY_MARKER).is_file() and (bin_dir / "python").exists():
        return bin_dir
    return None


# -- container ----------------------------------------------------------------------------------------
def container_engine() -> str | None:
    """'docker' or 'podman' when one answers `info`, else None."""
    for engine in ("docker", "podman"):
        exe = shutil.which(engine)
        if not exe:
            continue
        try:
            rc = subprocess.run([exe, "info"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=15).returncode
        except (OSError, subprocess.TimeoutExpired):
            continue
        if rc == 0:
            return engine
    return None


def _container(env: dict[str, Any]) -> None:
    reason = env.get("reason") or f"the environment ({env.get('label', '?')}) needs a container engine"
    engine = container_engine()
    if engine is None:
        raise EnvironmentBuildError(reason)
    raise EnvironmentBuildError(
        f"{reason}\n{engine} answers on this machine, but cible does not build or run container "
        "environments yet; use a conda_file on a Python or Azure ML base image instead."
    )


def _who(env: dict[str, Any]) -> str:
    label = str(env.get("label") or "")
    if not label:
        return "environment"
    return label if "environment" in label.lower() else f"environment {label}"


# -- venv -----------------------------------------------------------------------------------------------
# An environment built on another Python than its plan's (the requested one is not here) lives under a
# key of its own, which includes that Python and its relaxed pins, so that it never stands in for the
# exact build; `<key>.fallback.json` points from the planned key to it.
FALLBACK_POINTER = ".fallback.json"
DOWNLOAD_RETRY_S = 24 * 3600  # a build on another Python is reused this long before the download is tried again


def fallback_key(key: str, python: str, requirements: list[str]) -> str:
    """The cache key of environment `key` built on `python` ("3.11.7") with `requirements` (relaxed)."""
    major_minor = ".".join(str(python).split(".")[:2])
    inputs = {"of": key, "python": major_minor, "requirements": sorted(set(requirements))}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _venv(
    env: dict[str, Any], cache_root: Path, progress: Progress, build_log: Path,
    strict_python: bool, cancel: Callable[[], bool] | None,
) -> Path:
    key, label = env["key"], _who(env)
    ready = ready_environment(cache_root, key)
    if ready is not None:  # warm path: no lock, no process
        progress(f"{label}: cached ({key[:12]}), reused")
        return ready
    if not strict_python:
        ready = _reuse_fallback(env, cache_root, progress, build_log)
        if ready is not None:
            return ready
    cache_root.mkdir(parents=True, exist_ok=True)
    lock_path = cache_root / f"{key}.lock"
    with open(lock_path, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"{label}: another run is building it ({key[:12]}); waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ready = ready_environment(cache_root, key)
            if ready is not None:
                progress(f"{label}: built by another run ({key[:12]}), reused")
                return ready
            if not strict_python:
                ready = _reuse_fallback(env, cache_root, progress, build_log)
                if ready is not None:
                    return ready
            return _build(env, cache_root, progress, build_log, strict_python, cancel)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reuse_fallback(env: dict[str, Any], cache_root: Path, progress: Progress, build_log: Path) -> Path | None:
    """The ready build of `env` on another Python, unless the requested Python is here by now."""
    key, label, requested = env["key"], _who(env), env.get("python")
    try:
        pointer = json.loads((cache_root / f"{key}{FALLBACK_POINTER}").read_text(encoding="utf-8"))
        built_key, python = str(pointer["key"]), str(pointer["python"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    bin_dir = ready_environment(cache_root, built_key)
    if bin_dir is None or (requested and _requested_python_reachable(requested, pointer)):
        return None
    relaxed = [tuple(pair) for pair in pointer.get("relaxed") or []]
    progress(f"{label}: cached ({built_key[:12]}: python {requested} built on Python {python}), reused")
    _log(build_log, f"== {label}: reusing {built_key}, python {requested} built on Python {python}")
    for line in pointer.get("deviations") or []:
        _log(build_log, line)
    if relaxed:
        progress(_relaxed_summary(label, python, relaxed))
    return bin_dir


def _requested_python_reachable(requested: str, pointer: dict[str, Any]) -> bool:
    """Whether an exact build should be tried instead of reusing the one on another Python: the requested
    Python is here by now (on PATH, pyenv, or uv's own), or the download that failed for that build is
    old enough to try again (a network blip must not pin the fallback for good)."""
    try:
        uv: str | None = find_uv()
    except EnvironmentBuildError:
        uv = None
    if find_interpreter(requested, uv) is not None:
        return True
    retry_s = float(os.environ.get("CIBLE_PYTHON_DOWNLOAD_RETRY_S", DOWNLOAD_RETRY_S))
    return time.time() - float(pointer.get("at") or 0) > retry_s


def _relaxed_summary(label: str, python: str, relaxed: list) -> str:
    pairs = ", ".join(f"{planned} -> {used}" for planned, used in relaxed)
    minor = ".".join(str(python).split(".")[:2])
    return (f"{label}: {len(relaxed)} pin(s) with no wheel for Python {minor} relaxed to the nearest version "
            f"with one: {pairs} (see the environment build log)")


def _build(
    env: dict[str, Any], cache_root: Path, progress: Progress, build_log: Path,
    strict_python: bool, cancel: Callable[[], bool] | None,
) -> Path:
    key, label = env["key"], _who(env)
    requirements = [str(r) for r in env.get("requirements") or []]
    requested = env.get("python")
    started = time.monotonic()
    build_log.parent.mkdir(parents=True, exist_ok=True)
    log_start = build_log.stat().st_size if build_log.exists() else 0
    _log(build_log, f"== building {label} (key {key}) at {time.strftime('%Y-%m-%dT%H:%M:%S')}")

    def say(line: str, stream: bool) -> None:
        _log(build_log, line)
        if stream:
            progress(line)

    env_dir: Path | None = None
    try:
        uv = find_uv()
        try:
            chosen = choose_interpreter(requested, strict_python, uv, say)
        except NoInterpreter as exc:
            raise EnvironmentBuildError(exc.message) from None
        interpreter, version = chosen.exe, chosen.version
        build_key, relaxation = key, None
        if not chosen.exact:
            if requirements:
                relaxation = relax_pins(requirements, chosen.exe)
                for line in relaxation.notes + relaxation.deviations:
                    _log(build_log, line)
                if relaxation.relaxed:
                    progress(_relaxed_summary(label, version, relaxation.relaxed))
                requirements = relaxation.requirements
            build_key = fallback_key(key, version, requirements)
            ready = ready_environment(cache_root, build_key)
            if ready is not None:  # the pointer was lost: the build is still good
                _point(cache_root, key, build_key, version, relaxation)
                progress(f"{label}: cached ({build_key[:12]}: python {requested} built on Python {version}), reused")
                return ready
        env_dir = cache_root / build_key
        if env_dir.exists() or env_dir.is_symlink():  # a build that died half-way: never reused
            _remove(env_dir)
        progress(
            f"{label}: building a Python {version} virtual environment with "
            f"{len(requirements)} requirement(s) (key {build_key[:12]})"
        )
        conda_only = env.get("conda_only") or []
        if conda_only:
            progress(f"{label}: conda packages with no PyPI twin, not installed: {', '.join(conda_only)}")
        for note in env.get("notes") or []:
            progress(f"{label}: {note}")
        uv_env = _uv_env(cache_root)
        _run([uv, "venv", "--seed", "--python", interpreter, str(env_dir)],
             uv_env, cache_root, build_log, progress, label, cancel)
        env_python = env_dir / "bin" / "python"
        torch_backend = env.get("torch_backend")
        if requirements:
            req_file = env_dir / REQUIREMENTS_FILE
            req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
            # --torch-backend: uv takes the PyTorch packages (only those) from PyTorch's index of that build.
            backend = ["--torch-backend", str(torch_backend)] if torch_backend else []
            # A compiled package with no wheel for this Python at any version is not built from source unasked.
            no_build = [a for name in (relaxation.no_build if relaxation else []) for a in ("--only-binary", name)]
            _run([uv, "pip", "install", "--python", str(env_python), *backend, *no_build, "-r", str(req_file)],
                 uv_env, cache_root, build_log, progress, label, cancel)
        variables = env.get("variables") or {}
        if variables:
            _write_variables(env_dir, variables)
        packages = _freeze(uv, env_python, uv_env, cache_root)
        seconds = round(time.monotonic() - started, 3)
        facts = {
            "key": build_key, "label": label,
            "python": {"requested": requested, "version": version, "interpreter": interpreter, "exact": chosen.exact},
            "requirements": requirements, "conda_only": conda_only, "packages": packages, "seconds": seconds,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"planned_key": key} if build_key != key else {}),
            **({"relaxed": [list(pair) for pair in relaxation.relaxed],
                "deviations": relaxation.deviations} if relaxation and relaxation.relaxed else {}),
            **({"variant": env["variant"]} if env.get("variant") else {}),
            **({"torch_backend": torch_backend} if torch_backend else {}),
            **({"variables": variables} if variables else {}),
        }
        tmp = env_dir / (READY_MARKER + ".tmp")
        tmp.write_text(json.dumps(facts, indent=1), encoding="utf-8")
        os.replace(tmp, env_dir / READY_MARKER)  # written last: its presence means the build completed
        if build_key != key:
            _point(cache_root, key, build_key, version, relaxation)
    except BaseException as exc:
        if env_dir is not None:
            _remove(env_dir)
        if isinstance(exc, EnvironmentBuildError):
            _log(build_log, f"== build failed: {exc.message.splitlines()[0]}")
            progress(f"{label}: build failed after {time.monotonic() - started:.1f}s")
            raise EnvironmentBuildError(exc.message + _tail(build_log, log_start)) from None
        _log(build_log, f"== build failed: {exc!r}")
        raise
    _log(build_log, f"== {label} ready in {seconds:.1f}s ({len(packages)} packages)")
    progress(f"{label}: ready in {seconds:.1f}s ({len(packages)} packages, Python {version})")
    return env_dir / "bin"


def _point(cache_root: Path, key: str, build_key: str, python: str, relaxation: Relaxation | None) -> None:
    """Record that environment `key` is built (on another Python) as `build_key`."""
    pointer = {"key": build_key, "python": python, "at": time.time(),
               "relaxed": [list(pair) for pair in relaxation.relaxed] if relaxation else [],
               "deviations": list(relaxation.deviations) if relaxation else []}
    tmp = cache_root / f"{key}{FALLBACK_POINTER}.tmp"
    tmp.write_text(json.dumps(pointer, indent=1), encoding="utf-8")
    os.replace(tmp, cache_root / f"{key}{FALLBACK_POINTER}")


# -- processes ------------------------------------------------------------------------------------------
def find_uv() -> str:
    try:
        import uv as uv_package  # lazily: the launcher's import stays stdlib-only

        exe = uv_package.find_uv_bin()
    except Exception:  # noqa: BLE001 - no uv package, or a broken one: try PATH
        exe = None
    if exe and os.path.exists(exe):
        return str(exe)
    exe = shutil.which("uv")
    if exe:
        return exe
    raise EnvironmentBuildError("uv is not installed on this machine; install it (pip install uv) to build environments")


def _uv_env(cache_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "UV_PYTHON", "UV_SYSTEM_PYTHON"):
        env.pop(name, None)
    env.update({
        "UV_CACHE_DIR": str(cache_root / UV_CACHE_DIRNAME),  # shared by every build on the machine
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",  # no uv.toml or pyproject of the job's directory
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
    })
    return env


def _run(
    cmd: list[str], env: dict[str, str], cwd: Path, build_log: Path, progress: Progress, label: str,
    cancel: Callable[[], bool] | None,
) -> None:
    _log(build_log, "$ " + " ".join(cmd))
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise EnvironmentBuildError(f"could not start {cmd[0]}: {exc}") from None

    def pump() -> None:
        assert proc.stdout is not None
        with open(build_log, "ab") as log:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace").strip()
                if _PROGRESS_LINE.match(line):
                    progress(f"{label}: {line}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    canceled = False
    while True:
        try:
            proc.wait(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel():
                canceled = True
                _stop(proc)
    reader.join()
    if canceled:
        raise EnvironmentBuildError(f"{label}: the build was canceled")
    if proc.returncode != 0:
        step = " ".join(cmd[1:3]) if len(cmd) > 2 else cmd[0]
        raise EnvironmentBuildError(f"building {label} failed: uv {step} exited with code {proc.returncode}")


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


def _freeze(uv: str, python: Path, env: dict[str, str], cwd: Path) -> list[str]:
    try:
        out = subprocess.run(
            [uv, "pip", "freeze", "--python", str(python)], check=False, capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


# -- files ------------------------------------------------------------------------------------------------
def _write_variables(env_dir: Path, variables: dict[str, Any]) -> None:
    """The environment's variables, set at interpreter start unless the job sets them itself."""
    site = sorted(env_dir.glob("lib/python*/site-packages"))
    if not site:
        raise EnvironmentBuildError(f"no site-packages in {env_dir} to set the environment's variables in")
    sets = "; ".join(f"os.environ.setdefault({str(k)!r}, {str(v)!r})" for k, v in sorted(variables.items()))
    (site[0] / VARIABLES_PTH).write_text(f"import os; {sets}\n", encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _log(build_log: Path, line: str) -> None:
    with open(build_log, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _tail(build_log: Path, start: int, lines: int = TAIL_LINES) -> str:
    try:
        with open(build_log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return ("\n--- last lines of the environment build log ---\n" + "\n".join(tail)) if tail else ""
