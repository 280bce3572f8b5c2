"""Azure's old pinned environments (python=3.8.5, scikit-learn==1.1.2, numpy==1.21.6) on a machine
without that Python: the real launcher environment builder, the real uv and PyPI.

Each test hides every interpreter but the host's (an empty PYENV_ROOT, PATH and uv Python dir) and,
unless it tests the download, turns uv's Python downloads off (UV_PYTHON_DOWNLOADS=never), so the
build falls back to the host's Python whatever the machine has.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cible.core.environments import plan_environment
from cible.launch import environments as envs
from cible.launch import interpreters
from cible.launch import pins as node_pins
from cible.launch.environments import READY_MARKER, EnvironmentBuildError, materialise

HOST_MINOR = sys.version_info[1]
# what PyPI has for each host Python: the nearest release with a wheel for it
RELAXED = {11: ("1.1.3", "1.23.2"), 12: ("1.3.1", "1.26.0"), 13: ("1.5.2", "2.1.0")}
AZURE_CONDA = {  # the shape of Azure's batch examples' conda files
    "name": "model-env",
    "channels": ["conda-forge"],
    "dependencies": ["python=3.8.5", "numpy=1.21.6", "pip", {"pip": ["scikit-learn==1.1.2"]}],
}


class Progress(list):
    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture()
def only_host_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pyenv", "bin", "uv-python"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(tmp_path / "uv-python"))
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    assert interpreters.find_interpreter("3.8", envs.find_uv()) is None


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envs")


def run_python(bin_dir: Path, code: str, *args: str) -> str:
    out = subprocess.run([str(bin_dir / "python"), "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


TRAIN = """
import pickle, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
X = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2], [0.2, 0.8], [0.8, 0.1]])
y = np.array([0, 1, 0, 1, 0, 1])
with open(sys.argv[1], "wb") as fh:
    pickle.dump(LogisticRegression().fit(X, y), fh)
"""
SCORE = """
import pickle, sys
import numpy as np, sklearn
model = pickle.load(open(sys.argv[1], "rb"))
print(sklearn.__version__, np.__version__, list(model.predict(np.array([[0.0, 1.0], [1.0, 0.0]]))))
"""


@pytest.mark.skipif(HOST_MINOR not in RELAXED, reason=f"no expectation for Python 3.{HOST_MINOR}'s wheels")
def test_old_pins_are_relaxed_on_the_nearest_python_and_a_model_loads_and_scores(
    only_host_python: None, env_cache: Path, tmp_path: Path,
):
    sklearn_version, numpy_version = RELAXED[HOST_MINOR]
    plan = plan_environment({"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "conda_file": AZURE_CONDA})
    assert plan["python"] == "3.8" and plan["requirements"] == ["numpy==1.21.6", "scikit-learn==1.1.2"]
    log, progress = tmp_path / "environment_build.txt", Progress()
    bin_dir = materialise(plan, cache_root=env_cache, progress=progress, build_log=log)

    # the relaxed versions are what is installed, on the host's Python
    model = tmp_path / "model.pkl"
    run_python(bin_dir, TRAIN, str(model))
    scored = run_python(bin_dir, SCORE, str(model))
    assert scored == f"{sklearn_version} {numpy_version} [0, 1]"
    assert run_python(bin_dir, "import sys; print(sys.version_info[1])") == str(HOST_MINOR)

    # every deviation in the environment log; the whole list once in the job's log
    target = f"CPython 3.{HOST_MINOR} (linux "
    text = log.read_text()
    assert "python 3.8: not downloaded (UV_PYTHON_DOWNLOADS=never)" in text
    assert f"python 3.8 not available here; using 3.{HOST_MINOR}." in text
    for pinned, used in (("scikit-learn==1.1.2", sklearn_version), ("numpy==1.21.6", numpy_version)):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{pinned} has no wheel for {target}"))
        assert line.endswith(f"; using {used}")
    summaries = [line for line in progress if "relaxed to the nearest version" in line]
    assert len(summaries) == 1
    assert f"numpy==1.21.6 -> numpy=={numpy_version}" in summaries[0]
    assert f"scikit-learn==1.1.2 -> scikit-learn=={sklearn_version}" in summaries[0]

    # cached under a key of its own: the relaxed pins and the Python it was built on
    built_key = bin_dir.parent.name
    assert built_key != plan["key"] and not (env_cache / plan["key"]).exists()
    assert built_key == envs.fallback_key(plan["key"], f"3.{HOST_MINOR}",
                                          [f"numpy=={numpy_version}", f"scikit-learn=={sklearn_version}"])
    facts = json.loads((bin_dir.parent / READY_MARKER).read_text())
    assert facts["planned_key"] == plan["key"] and facts["python"]["exact"] is False
    assert sorted(map(tuple, facts["relaxed"])) == [("numpy==1.21.6", f"numpy=={numpy_version}"),
                                                    ("scikit-learn==1.1.2", f"scikit-learn=={sklearn_version}")]

    # the next job reuses it without building, and its own environment log lists the deviations again
    again_log, again = tmp_path / "again.txt", Progress()
    assert materialise(plan, cache_root=env_cache, progress=again, build_log=again_log) == bin_dir
    assert "== building" not in again_log.read_text() and "scikit-learn==1.1.2 has no wheel" in again_log.read_text()
    assert any("reused" in line for line in again) and any("relaxed to the nearest" in line for line in again)

    # a strict job never takes the relaxed build: it refuses, and the relaxed build stays for others
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=env_cache, progress=Progress(), build_log=tmp_path / "strict.txt", strict_python=True)
    assert "python 3.8 is not available on this machine" in info.value.message
    assert "strict Python matching is on" in info.value.message
    assert (bin_dir.parent / READY_MARKER).is_file()


def test_strict_python_refuses_and_relaxes_nothing(only_host_python: None, tmp_path: Path):
    plan = plan_environment({"image": "python:3.8", "conda_file": AZURE_CONDA})
    cache, log, progress = tmp_path / "envs", tmp_path / "b.log", Progress()
    with pytest.raises(EnvironmentBuildError) as info:
        materialise(plan, cache_root=cache, progress=progress, build_log=log, strict_python=True)
    message = info.value.message
    assert message.startswith("python 3.8 is not available on this machine")
    assert f"available: {sys.version_info[0]}.{HOST_MINOR}." in message and "strict Python matching is on" in message
    assert "has no wheel" not in log.read_text() and not any("relaxed" in line for line in progress)
    assert sorted(p.name for p in cache.iterdir()) == [f"{plan['key']}.lock"]


def test_the_python_download_is_tried_first_and_fails_fast_or_is_used(
    only_host_python: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    """Where uv can download Python 3.8 it is used and nothing is relaxed; where it cannot (no route to
    the download host), the attempt costs seconds and the environment log says so."""
    monkeypatch.delenv("UV_PYTHON_DOWNLOADS")
    said: list[tuple[str, bool]] = []
    started = time.monotonic()
    got = interpreters.download_python("3.8", envs.find_uv(), lambda line, stream: said.append((line, stream)))
    if got is None:
        assert time.monotonic() - started < 15, said
        assert any("python 3.8: uv could not download it" in line and stream for line, stream in said), said
    else:
        assert got[1].startswith("3.8.")

    plan = plan_environment({"image": "python:3.8", "conda_file": {"dependencies": ["python=3.8", {"pip": ["markupsafe==2.0.1"]}]}})
    log, progress = tmp_path / "b.log", Progress()
    bin_dir = materialise(plan, cache_root=tmp_path / "envs", progress=progress, build_log=log)
    version = run_python(bin_dir, "import sys, markupsafe; print('%d.%d' % sys.version_info[:2], markupsafe.__version__)")
    if got is not None:  # downloaded: the exact build, nothing relaxed
        assert version == "3.8 2.0.1" and bin_dir.parent.name == plan["key"]
        assert "has no wheel" not in log.read_text()
    else:
        assert "uv could not download it" in log.read_text()
        assert version.split()[1] != "2.0.1" or HOST_MINOR <= 10  # markupsafe 2.0.1 has wheels up to cp310


class _Index(http.server.BaseHTTPRequestHandler):
    """A PEP 503 (HTML) index with one project."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = (b'<html><body><a href="../../f/oldc-0.1-cp38-cp38-manylinux2014_x86_64.whl" '
                b'data-requires-python="&gt;=3.8">oldc-0.1-cp38-cp38-manylinux2014_x86_64.whl</a>'
                b'<a href="../../f/oldc-0.2-py3-none-any.whl" data-yanked="">oldc-0.2-py3-none-any.whl</a>'
                b'<a href="../../f/oldc-0.3-py3-none-any.whl">oldc-0.3-py3-none-any.whl</a></body></html>')
        self.server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        self.send_response(200 if self.path == "/simple/oldc/" else 404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_configured_index_is_asked_html_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://user:secret@127.0.0.1:{server.server_port}/simple"
        monkeypatch.setenv("UV_INDEX_URL", index)
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/never-asked")
        monkeypatch.delenv("UV_DEFAULT_INDEX", raising=False)
        assert node_pins.index_url() == index
        files = node_pins.project_files(index, "oldc")
        assert [(f["filename"], f["requires-python"], f["yanked"]) for f in files] == [
            ("oldc-0.1-cp38-cp38-manylinux2014_x86_64.whl", ">=3.8", False),
            ("oldc-0.2-py3-none-any.whl", None, True), ("oldc-0.3-py3-none-any.whl", None, False)]
        assert server.seen[0] == ("/simple/oldc/", "Basic dXNlcjpzZWNyZXQ=")  # the URL's credentials, as a header

        relaxation = node_pins.relax(["oldc==0.1", "absent==1.0", "six"], sys.executable)
        assert relaxation.requirements == ["oldc==0.3", "absent==1.0", "six"]
        assert relaxation.relaxed == [("oldc==0.1", "oldc==0.3")]
        assert any("could not read absent's files" in n and "secret" not in n for n in relaxation.notes)
    finally:
        server.shutdown()
