"""Environment materialisation on the node, with the real uv and PyPI (cible.launch.environments).

Most builds install `six` or `tomli` (tiny wheels); one test builds the curated
AzureML-sklearn-1.5 environment for real. Nothing here waits with sleep: concurrency is
arranged by holding the build lock, and the cancel test uses a stand-in installer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cible.core.environments import plan_environment
from cible.launch import environments as envs
from cible.launch.environments import READY_MARKER, EnvironmentBuildError, find_interpreter, materialise


class Progress(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


def small_env(*pip: str, python: str | None = "3.10", extra: list | None = None) -> dict:
    deps = ([f"python={python}"] if python else []) + (extra or []) + [{"pip": list(pip)}]
    return plan_environment({"image": "python:3.10", "conda_file": {"dependencies": deps}})


def build_count(log: Path) -> int:
    return log.read_text().count("== building ") if log.exists() else 0


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "envs"


def run_python(bin_dir: Path, code: str) -> str:
    return subprocess.run([str(bin_dir / "python"), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_launcher_module_is_stdlib_only_at_import():
    code = "import sys, cible.launch.environments; print(sorted(m for m in ('yaml', 'uv', 'packaging') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_host_is_the_launchers_interpreter(cache: Path, tmp_path: Path):
    assert materialise({"kind": "host", "label": "host Python"}, cache_root=cache, progress=Progress(),
                       build_log=tmp_path / "b.log") == Path(sys.executable).parent
    assert not cache.exists()


def test_build_then_warm_reuse(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if find_interpreter("3.10") is None:
        pytest.skip("no Python 3.10 on this machine")
    plan = small_env("six", extra=["mkl", "cudatoolkit=11.3"])
    log, progress = tmp_path / "build.log", Progress()
    bin_dir = materialise(plan, cache_root=cache, progress=progress, build_log=log)
    assert bin_dir == cache / plan["key"] / "bin"
    assert run_python(bin_dir, "import sys, six; print('%d.%d' % sys.version_info[:2])") == "3.10"
    facts = json.loads((cache / plan["key"] / READY_MARKER).read_text())
    assert facts["python"]["version"].startswith("3.10.") and any(p.startswith("six==") for p in facts["packages"])
    text = progress.text()
    assert "building a Python 3.10" in text and "ready in" in text
    assert "conda packages with no PyPI twin, not installed: mkl, cudatoolkit" in text
    assert "Installed 1 package" in text  # uv's own lines reach the stream
    assert "six==" in log.read_text() and build_count(log) == 1

    # warm: no process at all, no log growth, marker untouched
    marker = cache / plan["key"] / READY_MARKER
    mtime, size = marker.stat().st_mtime_ns, log.stat().st_size

    def no_process(*a, **k):
        raise AssertionError("the warm path started a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(subprocess, "run", no_process)
    warm = Progress()
    assert materialise(plan, cache_root=cache, progress=warm, build_log=log) == bin_dir
    assert marker.stat().st_mtime_ns == mtime and log.stat().st_size == size
    assert warm == [f"inline environment: cached ({plan['key'][:12]}), reused"]


def test_concurrent_jobs_build_once(cache: Path, tmp_path: Path):
    import fcntl

    plan = small_env("tomli", python=None)
    log = tmp_path / "build.log"
    cache.mkdir(parents=True)
    waiting = [threading.Event(), threading.Event()]
    results: list = [None, None]
    progresses = [Progress(), Progress()]

    def job(i: int) -> None:
        def progress(line: str) -> None:
            progresses[i].append(line)
            if "waiting" in line:
                waiting[i].set()
        try:
            results[i] = materialise(plan, cache_root=cache, progress=progress, build_log=log)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    # Hold the build lock so that both jobs are inside materialise at once, then let them race.
    with open(cache / f"{plan['key']}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        assert all(w.wait(timeout=60) for w in waiting), progresses
        fcntl.flock(lock, fcntl.LOCK_UN)
    for t in threads:
        t.join(timeout=240)
    assert results[0] == results[1] == cache / plan["key"] / "bin", results
    assert build_count(log) == 1
    reused = [p for p in progresses if any("built by another run" in line for line in p)]
    assert len(reused) == 1


def test_concurrent_processes_build_once(cache: Path, tmp_path: Path):
    plan = small_env("six", python=None)
    log = tmp_path / "build.log"
    code = (
        "import json, sys; from pathlib import Path; from cible.launch.environments import materialise; "
        "print(materialise(json.loads(sys.argv[1]), cache_root=Path(sys.argv[2]), progress=print, build_log=Path(sys.argv[3])))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(plan), str(cache), str(log)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o.strip().splitlines()[-1] for o in outs} == {str(cache / plan["key"] / "bin")}
    assert build_count(log) == 1


def test_failed_build_raises_with_uv_tail_and_leaves_nothing(cache: Path, tmp_path: Path):
    plan = small_env("this-package-does-not-exist-xyz", python=None)
    log, progress = tmp_path / "build.log", Progress()
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=progress, build_log=log)
    msg = info.value.message
    assert "uv pip install exited with code" in msg
    assert "last lines of the environment build log" in msg
    assert "this-package-does-not-exist-xyz" in msg.split("last lines")[1]  # uv's own words
    assert not (cache / plan["key"]).exists()
    assert "build failed" in progress.text()

    # a retry of an environment with the same key whose inputs are now fine builds cleanly
    fixed = dict(plan, requirements=["six"])
    bin_dir = materialise(fixed, cache_root=cache, progress=Progress(), build_log=log)
    assert (bin_dir.parent / READY_MARKER).is_file()
    assert run_python(bin_dir, "import six; print('ok')") == "ok"
    assert build_count(log) == 2


def test_half_built_environment_is_removed_not_reused(cache: Path, tmp_path: Path):
    plan = small_env("six", python=None)
    half = cache / plan["key"]
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "python").write_text("junk")  # a dead build: no marker
    (half / "leftover").write_text("x")
    bin_dir = materialise(plan, cache_root=cache, progress=Progress(), build_log=tmp_path / "b.log")
    assert not (half / "leftover").exists()
    assert run_python(bin_dir, "import six; print('ok')") == "ok"


def test_strict_python_that_is_not_here_fails(cache: Path, tmp_path: Path):
    plan = small_env("six", python="3.2")
    assert plan["python"] == "3.2"
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=Progress(), build_log=tmp_path / "b.log", strict_python=True)
    assert "python 3.2 is not available on this machine" in info.value.message
    assert "available:" in info.value.message
    assert not (cache / plan["key"]).exists()


def test_missing_python_falls_back_to_the_nearest_with_a_note(cache: Path, tmp_path: Path):
    plan = plan_environment({"image": "python", "conda_file": {"dependencies": ["python=3.2"]}})
    progress = Progress()
    bin_dir = materialise(plan, cache_root=cache, progress=progress, build_log=tmp_path / "b.log")
    note = next(line for line in progress if "python 3.2 not available here; using 3." in line)
    used = note.split("using ")[1].split()[0]
    assert run_python(bin_dir, "import platform; print(platform.python_version())") == used
    facts = json.loads((bin_dir.parent / READY_MARKER).read_text())
    assert facts["python"] == {**facts["python"], "requested": "3.2", "version": used}


@pytest.mark.parametrize("engine", [None, "docker"])
def test_container_kinds_raise_with_the_reason(engine, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(envs, "container_engine", lambda: engine)
    plan = plan_environment({"build": {"path": "ctx"}})
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=Progress(), build_log=tmp_path / "b.log")
    assert info.value.message.startswith(plan["reason"])
    assert ("does not build or run container environments yet" in info.value.message) is (engine is not None)


def test_container_without_a_stub_uses_the_real_probe(cache: Path, tmp_path: Path):
    plan = plan_environment({"image": "myacr.azurecr.io/team/img:1"})  # a private registry: needs an engine
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=Progress(), build_log=tmp_path / "b.log")
    assert "container engine" in info.value.message


def fake_uv(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-uv"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return str(exe)


def test_failure_message_carries_the_last_30_lines(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = 'for i in $(seq 1 45); do echo "installer line $i"; done; exit 3'
    monkeypatch.setattr(envs, "find_uv", lambda: fake_uv(tmp_path, script))
    plan = small_env("six", python=None)
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=Progress(), build_log=tmp_path / "b.log")
    tail = info.value.message.split("last lines of the environment build log ---\n")[1].splitlines()
    assert len(tail) == 30
    assert "installer line 45" in tail and "installer line 15" not in tail
    assert "exited with code 3" in info.value.message
    assert not (cache / plan["key"]).exists()


def test_cancel_stops_the_installer(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(envs, "find_uv", lambda: fake_uv(tmp_path, "echo started; exec sleep 600"))
    plan = small_env("six", python=None)
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=Progress(), build_log=tmp_path / "b.log", cancel=lambda: True)
    assert "canceled" in info.value.message
    assert not (cache / plan["key"]).exists()


def test_curated_sklearn_environment_builds_and_imports(tmp_path: Path):
    """The one real curated build: AzureML-sklearn-1.5 from PyPI, then its packages import."""
    plan = plan_environment("azureml:AzureML-sklearn-1.5@latest")
    cache = Path(os.environ.get("CIBLE_TEST_ENV_CACHE") or tmp_path / "envs")
    progress = Progress()
    bin_dir = materialise(plan, cache_root=cache, progress=progress, build_log=tmp_path / "b.log")
    out = run_python(
        bin_dir,
        "import sys, sklearn, pandas, numpy, scipy, mlflow, joblib, matplotlib, azureml_inference_server_http; "
        "print('%d.%d' % sys.version_info[:2], sklearn.__version__, pandas.__version__)",
    )
    python, sklearn_version, pandas_version = out.split()
    assert sklearn_version.startswith("1.5.") and pandas_version.startswith("1.5.")
    if find_interpreter("3.10") is not None:
        assert python == "3.10"
    else:
        assert any("python 3.10 not available here" in line for line in progress)


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.mark.parametrize("name", ["AzureML-sklearn-1.5", "AzureML-lightgbm-3.3", "AzureML-AutoML"])
@pytest.mark.parametrize("python", ["3.10", "3.11"])
def test_curated_environments_resolve_to_wheels_only(name: str, python: str, tmp_path: Path, uv_cache: Path):
    """Every curated requirement set installs from PyPI wheels (no source builds) on 3.10 and 3.11."""
    plan = plan_environment(name)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join(plan["requirements"]) + "\n")
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache), "UV_NO_CONFIG": "1"}
    out = subprocess.run(
        [envs.find_uv(), "pip", "compile", "--quiet", "--only-binary", ":all:", "--python-version", python,
         "--python-platform", "x86_64-manylinux_2_28", str(reqs)],
        check=False, capture_output=True, text=True, env=env, timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
