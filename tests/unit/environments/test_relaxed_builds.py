"""A build on another Python than the planned one: its cache key, its logs and uv's flags
(cible.launch.environments with a stand-in uv; the real build is tests/integration/test_old_pins.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cible.core.environments import plan_environment
from cible.launch import environments as envs
from cible.launch import pins as node_pins
from cible.launch.interpreters import Interpreter

FAKE_UV = """#!/bin/sh
echo "$@" >> "{calls}"
if [ "$1" = venv ]; then
  for last; do :; done
  mkdir -p "$last/bin" "$last/lib/python3.11/site-packages"
  ln -s "{python}" "$last/bin/python"
fi
exit 0
"""
DEVIATION = "scikit-learn==1.1.2 has no wheel for CPython 3.11 (linux x86_64); using 1.1.3"


@pytest.fixture()
def fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls.txt"
    uv = tmp_path / "fake-uv"
    uv.write_text(FAKE_UV.format(calls=calls, python=sys.executable))
    uv.chmod(0o755)
    monkeypatch.setattr(envs, "find_uv", lambda: str(uv))
    monkeypatch.setattr(envs, "find_interpreter", lambda requested, uv=None: None)

    def choose(requested, strict, uv, say):
        say("python 3.8 not available here; using 3.11.7", True)
        return Interpreter(sys.executable, "3.11.7", False)

    def relax(requirements, interpreter):
        return node_pins.Relaxation(
            ["scikit-learn==1.1.3", "oldc==0.1", "six"], deviations=[DEVIATION], notes=["oldc==0.1 has no wheel ..."],
            no_build=["oldc"], relaxed=[("scikit-learn==1.1.2", "scikit-learn==1.1.3")])

    monkeypatch.setattr(envs, "choose_interpreter", choose)
    monkeypatch.setattr(envs, "relax_pins", relax)
    return calls


def plan() -> dict:
    conda = {"dependencies": ["python=3.8.5", {"pip": ["scikit-learn==1.1.2", "oldc==0.1", "six"]}]}
    return plan_environment({"image": "python:3.8", "conda_file": conda})


def test_a_relaxed_build_has_its_own_key_and_says_what_moved(fallback: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    env, cache, log, lines = plan(), tmp_path / "envs", tmp_path / "b.log", []
    bin_dir = envs.materialise(env, cache_root=cache, progress=lines.append, build_log=log)
    relaxed = ["oldc==0.1", "scikit-learn==1.1.3", "six"]
    assert bin_dir == cache / envs.fallback_key(env["key"], "3.11.7", relaxed) / "bin"
    assert envs.fallback_key(env["key"], "3.11.7", relaxed) != envs.fallback_key(env["key"], "3.11.7", env["requirements"])
    assert not (cache / env["key"]).exists()
    install = next(c for c in fallback.read_text().splitlines() if c.startswith("pip install"))
    assert "--only-binary oldc" in install  # no wheel at any version: never built from source unasked
    assert (bin_dir.parent / envs.REQUIREMENTS_FILE).read_text().split() == ["scikit-learn==1.1.3", "oldc==0.1", "six"]
    assert DEVIATION in log.read_text().splitlines() and "oldc==0.1 has no wheel ..." in log.read_text()
    summaries = [line for line in lines if "relaxed to the nearest version" in line]
    assert summaries == ["inline environment: 1 pin(s) with no wheel for Python 3.11 relaxed to the nearest version "
                         "with one: scikit-learn==1.1.2 -> scikit-learn==1.1.3 (see the environment build log)"]
    pointer = json.loads((cache / f"{env['key']}{envs.FALLBACK_POINTER}").read_text())
    assert pointer["key"] == bin_dir.parent.name and pointer["deviations"] == [DEVIATION]

    # warm: the pointer is followed, nothing runs, this job's log gets the deviations too
    def no_build(*a, **k):
        raise AssertionError("the warm path built")

    monkeypatch.setattr(envs, "_build", no_build)
    warm, warm_log = [], tmp_path / "warm.log"
    assert envs.materialise(env, cache_root=cache, progress=warm.append, build_log=warm_log) == bin_dir
    assert warm[0].startswith(f"inline environment: cached ({bin_dir.parent.name[:12]}: python 3.8 built on Python 3.11.7)")
    assert warm[1] == summaries[0] and DEVIATION in warm_log.read_text()

    # strict: never the relaxed build (here the stand-in choice would build again, which is refused above)
    with pytest.raises(AssertionError, match="the warm path built"):
        envs.materialise(env, cache_root=cache, progress=[].append, build_log=warm_log, strict_python=True)


def test_the_relaxed_build_is_not_reused_once_the_requested_python_is_here(fallback: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    env, cache = plan(), tmp_path / "envs"
    relaxed_bin = envs.materialise(env, cache_root=cache, progress=[].append, build_log=tmp_path / "b.log")
    monkeypatch.setattr(envs, "find_interpreter", lambda requested, uv=None: (sys.executable, "3.8.18"))
    monkeypatch.setattr(envs, "choose_interpreter",
                        lambda requested, strict, uv, say: Interpreter(sys.executable, "3.8.18", True))
    exact_bin = envs.materialise(env, cache_root=cache, progress=[].append, build_log=tmp_path / "b.log")
    assert exact_bin == cache / env["key"] / "bin" != relaxed_bin
    facts = json.loads((exact_bin.parent / envs.READY_MARKER).read_text())
    assert facts["requirements"] == env["requirements"] and "relaxed" not in facts and facts["python"]["exact"] is True


def test_the_index_is_the_one_uv_installs_from():
    assert node_pins.index_url({}) == "https://pypi.org/simple"
    assert node_pins.index_url({"PIP_INDEX_URL": "https://p/simple"}) == "https://p/simple"
    assert node_pins.index_url({"PIP_INDEX_URL": "https://p", "UV_INDEX_URL": "https://u"}) == "https://u"
    assert node_pins.index_url({"UV_INDEX_URL": "https://u", "UV_DEFAULT_INDEX": "https://d"}) == "https://d"
    assert node_pins.index_url({"UV_DEFAULT_INDEX": "https://d"}, ["six", "--index-url https://r/simple"]) == "https://r/simple"
    assert node_pins.shown_url("https://user:tok@host.example:8443/simple") == "https://host.example:8443/simple"
