"""Finding the interpreter a venv is built on: the requested X.Y where this machine has it or uv can
download it, else (unless strict) the nearest Python the machine has.

Standard library only at import time: the launcher imports this module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIN_FALLBACK_MINOR = 8  # oldest Python 3 that uv creates environments for
# A download of a Python build is a few tens of MB: a minute and a half is ample where it works,
# and where the download host cannot be reached uv fails at once (no retries, see _download_env).
DOWNLOAD_TIMEOUT_S = float(os.environ.get("CIBLE_PYTHON_DOWNLOAD_TIMEOUT") or 90)
_DOWNLOADS_OFF = ("never",)  # UV_PYTHON_DOWNLOADS values that forbid any download (uv's "manual" allows an install)

Say = Callable[[str, bool], None]  # (line, also to the job's stream): the build log always


class NoInterpreter(Exception):
    """No interpreter may be used; .message says what is available."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Interpreter:
    exe: str
    version: str  # "3.11.7"
    exact: bool  # the requested major.minor (or the host's when none was requested)


def _version_of(exe: str) -> tuple[int, int, int] | None:
    """The version of the interpreter at `exe`, by running it (pyenv shims on PATH may not work)."""
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:3])"],
            check=False, capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 3:
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def _pyenv_interpreters() -> list[tuple[tuple[int, int, int], str]]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    found = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for d in entries:
        m = re.fullmatch(r"^(\d+)\.(\d+)\.(\d+)$", d.name)  # CPython builds only (not pypy, conda, virtualenvs)
        exe = d / "bin" / "python"
        if m and exe.exists():
            found.append(((int(m[1]), int(m[2]), int(m[3])), str(exe)))
    return found


def _path_interpreter(major: int, minor: int) -> tuple[tuple[int, int, int], str] | None:
    exe = shutil.which(f"python{major}.{minor}")
    if not exe:
        return None
    version = _version_of(exe)
    if version is None or version[:2] != (major, minor):
        return None
    return version, exe


def _uv_find(uv: str, wanted: str) -> tuple[tuple[int, int, int], str] | None:
    try:
        out = subprocess.run(
            [uv, "python", "find", wanted, "--no-python-downloads"],
            check=False, capture_output=True, text=True, timeout=30, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    exe = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    if not exe:
        return None
    version = _version_of(exe)
    return (version, exe) if version else None


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def find_interpreter(requested: str | None, uv: str | None = None) -> tuple[str, str] | None:
    """(path, "X.Y.Z") of an interpreter for `requested` ("3.10"; None = the host's), or None.

    Looks at the host interpreter, $PYENV_ROOT/versions/X.Y.*, pythonX.Y on PATH and
    `uv python find X.Y --no-python-downloads`. Never downloads an interpreter.
    """
    host = tuple(sys.version_info[:3])
    if requested is None:
        return sys.executable, _fmt(host)
    try:
        major, minor = (int(p) for p in str(requested).split(".")[:2])
    except ValueError:
        return None
    if host[:2] == (major, minor):
        return sys.executable, _fmt(host)
    pyenv = sorted((v, exe) for v, exe in _pyenv_interpreters() if v[:2] == (major, minor))
    if pyenv:
        return pyenv[-1][1], _fmt(pyenv[-1][0])
    on_path = _path_interpreter(major, minor)
    if on_path:
        return on_path[1], _fmt(on_path[0])
    if uv and (major, minor) >= (3, 7):
        found = _uv_find(uv, f"{major}.{minor}")
        if found and found[0][:2] == (major, minor):
            return found[1], _fmt(found[0])
    return None


def available_interpreters() -> list[tuple[str, str]]:
    """[(path, "X.Y.Z")] of the Python 3.8+ interpreters this machine has, one per minor version
    (the host's own for its minor, else the newest patch)."""
    host = tuple(sys.version_info[:3])
    by_minor: dict[tuple[int, int], tuple[tuple[int, int, int], str]] = {}
    for version, exe in sorted(_pyenv_interpreters()):
        by_minor[version[:2]] = (version, exe)  # sorted: the newest patch wins
    by_minor[host[:2]] = (host, sys.executable)
    for minor in range(MIN_FALLBACK_MINOR, 20):
        if (3, minor) not in by_minor:
            found = _path_interpreter(3, minor)
            if found:
                by_minor[(3, minor)] = found
    return [(exe, _fmt(v)) for (major, minor), (v, exe) in sorted(by_minor.items())
            if major == 3 and minor >= MIN_FALLBACK_MINOR]


def _requested_minor(requested: str) -> tuple[int, int] | None:
    try:
        major, minor = (int(p) for p in str(requested).split(".")[:2])
    except ValueError:
        return None
    return major, minor


def _download_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "UV_PYTHON"):
        env.pop(name, None)
    env.update({
        "UV_PYTHON_DOWNLOADS": "manual",  # this explicit install only
        "UV_HTTP_RETRIES": "0",  # an unreachable download host fails in milliseconds, not after retries
        "UV_HTTP_TIMEOUT": env.get("UV_HTTP_TIMEOUT") or "10",
        "UV_NO_CONFIG": "1", "UV_NO_PROGRESS": "1", "NO_COLOR": "1",
    })
    return env


def download_python(requested: str, uv: str, say: Say, timeout: float | None = None) -> tuple[str, str] | None:
    """`uv python install X.Y` (uv's managed interpreters), then its path and version; None when
    downloads are off (UV_PYTHON_DOWNLOADS=never) or the download fails, which the build log says."""
    setting = (os.environ.get("UV_PYTHON_DOWNLOADS") or "").strip().lower()
    if setting in _DOWNLOADS_OFF:
        say(f"python {requested}: not downloaded (UV_PYTHON_DOWNLOADS={setting})", False)
        return None
    wanted = _requested_minor(requested)
    if wanted is None or wanted < (3, 7):
        say(f"python {requested}: uv has no download of it", False)
        return None
    limit = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    cmd = [uv, "python", "install", f"{wanted[0]}.{wanted[1]}", "--no-bin"]
    say("$ " + " ".join(cmd), False)
    try:
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=limit, env=_download_env(),
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        say(f"python {requested}: uv could not download it within {limit:.0f}s", True)
        return None
    except OSError as exc:
        say(f"python {requested}: could not run uv to download it: {exc}", True)
        return None
    output = (out.stdout + out.stderr).strip()
    for line in output.splitlines():
        say(line, False)
    if out.returncode != 0:
        causes = [ln.strip() for ln in output.splitlines() if ln.strip()]
        why = causes[-1].removeprefix("cause: ") if causes else f"exit code {out.returncode}"
        say(f"python {requested}: uv could not download it ({why})", True)
        return None
    found = _uv_find(uv, f"{wanted[0]}.{wanted[1]}")
    if not found or found[0][:2] != wanted:
        say(f"python {requested}: uv installed it but does not find it", True)
        return None
    say(f"python {requested}: downloaded by uv: {found[1]} ({_fmt(found[0])})", True)
    return found[1], _fmt(found[0])


def choose_interpreter(requested: str | None, strict: bool, uv: str, say: Say) -> Interpreter:
    """The interpreter a venv for `requested` is built on. Raises NoInterpreter."""
    found = find_interpreter(requested, uv)
    if found:
        say(f"python {requested or 'of the host'}: {found[0]} ({found[1]})", False)
        return Interpreter(found[0], found[1], True)
    downloaded = download_python(str(requested), uv, say)
    if downloaded:
        return Interpreter(downloaded[0], downloaded[1], True)
    available = available_interpreters()
    listing = ", ".join(v for _, v in available) or "none"
    if strict or not available:
        raise NoInterpreter(
            f"python {requested} is not available on this machine (looked at PATH, $PYENV_ROOT/versions and "
            f"uv's interpreters, and uv could not download it); available: {listing}. Install Python {requested} "
            "or pin a version the machine has" + (" (strict Python matching is on)" if strict else "")
        )
    try:
        want = int(str(requested).split(".")[1])
    except (IndexError, ValueError):
        want = sys.version_info[1]
    host_minor = sys.version_info[1]
    exe, version = min(
        available,
        key=lambda a: (abs(int(a[1].split(".")[1]) - want), int(a[1].split(".")[1]) != host_minor, -int(a[1].split(".")[1])),
    )
    say(f"python {requested} not available here; using {version} ({exe}) instead "
        f"(available: {listing}; strict Python matching makes this an error)", True)
    return Interpreter(exe, version, False)
