"""Every sweep and pipeline example (examples/sweeps/*.yml, examples/pipelines/*.yml; the components
under examples/pipelines/components/ are not jobs), run with `cible job create -f X --stream -o json`
on the cluster the examples name (examples/clusters/cpu-cluster.yml), checked against EXPECTED.

A new example is picked up automatically; one with no entry in EXPECTED fails, so no example goes
unchecked. Trials and steps run on the host's Python (the examples name no environment), whose
MLflow and scikit-learn come with cible's own dependencies.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e_support import REPO, Workspace

pytestmark = pytest.mark.e2e

ROOT = REPO / "examples"
CLUSTER = ROOT / "clusters" / "cpu-cluster.yml"
ENDED_OK = ("Completed", "Reused")  # a step another example already ran unchanged is Reused


@dataclass(frozen=True)
class Sweep:
    trials: int
    parameters: tuple[str, ...]  # the search space's names, as each trial shows them
    goal: str  # minimize | maximize
    named_outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # output -> {file: content substring}


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[str, ...]
    named_outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # output -> {file: content substring}
    step_logs: dict[str, str] = field(default_factory=dict)  # step -> substring of its std_log.txt
    nested: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pipeline step -> its own steps


EXPECTED: dict[str, Sweep | Pipeline] = {
    "sweeps/hello-sweep.yml": Sweep(trials=4, parameters=("greeting", "rate"), goal="minimize"),
    "sweeps/sklearn-sweep.yml": Sweep(
        trials=4, parameters=("C", "kernel"), goal="maximize",
        named_outputs={"model": {"model.txt": "SVC C="}},  # the best trial's
    ),
    "pipelines/hello-pipeline.yml": Pipeline(
        steps=("hello_step",), named_outputs={"message": {"message.txt": "hello from a component"}},
    ),
    "pipelines/data-pipeline.yml": Pipeline(
        steps=("prep", "train", "score"),
        named_outputs={"report": {"report.txt": "accuracy: 1.000"}, "model": {"model.pkl": ""}},
        step_logs={"prep": "prep: 120 training rows, 30 test rows"},
    ),
    "pipelines/default-artifacts.yml": Pipeline(
        steps=("hello_job", "world_job"), step_logs={"hello_job": "hello", "world_job": "world"},
    ),
    "pipelines/nested-pipeline.yml": Pipeline(
        steps=("prep", "small_c", "large_c", "compare"),
        named_outputs={"best_report": {"best.txt": "accuracy: 1.000"}},
        nested={"small_c": ("train", "score"), "large_c": ("train", "score")},
    ),
}

EXAMPLE_FILES = sorted([*ROOT.glob("sweeps/*.yml"), *ROOT.glob("pipelines/*.yml")])


def _key(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """One workspace with MLflow (a sweep reads its trials' metric there) and the examples' cluster."""
    ws = Workspace(tmp_path_factory.mktemp("parents"), tracking=True)
    ws.cible("compute", "create", "-f", CLUSTER)
    yield ws
    ws.stop()


def test_examples_exist():
    assert {p.parent.name for p in EXAMPLE_FILES} == {"sweeps", "pipelines"}, EXAMPLE_FILES


def test_every_table_entry_has_an_example():
    stale = sorted(set(EXPECTED) - {_key(p) for p in EXAMPLE_FILES})
    assert not stale, f"EXPECTED lists examples that no longer exist: {stale}"


def _run(ws: Workspace, example: Path, name: str) -> dict[str, Any]:
    proc = ws.cible("job", "create", "-f", example, "-n", name, "--stream", "-o", "json", check=False)
    where = f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"{_key(example)} did not complete (exit {proc.returncode}){where}"
    streamed = json.loads(proc.stdout)
    assert (streamed["name"], streamed["status"]) == (name, "Completed"), where
    job = ws.job(name)
    assert job["status"] == "Completed" and not job.get("error"), job
    return job


def _check_named_outputs(ws: Workspace, name: str, job: dict[str, Any], outputs: dict[str, dict[str, str]],
                         dest: Path) -> None:
    for output, contents in outputs.items():
        assert job.get("output_uris", {}).get(output), f"output_uris lacks {output}: {job.get('output_uris')}"
        ws.cible("job", "download", "-n", name, "--output-name", output, "-p", dest / output)
        for rel, text in contents.items():
            path = dest / output / "named-outputs" / output / rel
            assert path.is_file(), f"output {output} lacks {rel}: {sorted(p.name for p in path.parent.glob('*'))}"
            if text:
                assert text in path.read_text(), path.read_text()


def _check_sweep(ws: Workspace, name: str, job: dict[str, Any], expect: Sweep, dest: Path) -> None:
    assert job["type"] == "sweep"
    trials = job["trials"]
    assert len(trials) == expect.trials, trials
    for trial in trials:
        assert trial["status"] == "Completed" and trial["metric"] is not None, trial
        assert sorted(trial["parameters"]) == sorted(expect.parameters), trial
    pick = min if expect.goal == "minimize" else max
    assert job["best_trial"]["metric"] == pick(t["metric"] for t in trials), job["best_trial"]
    listed = ws.json("job", "list", "--parent-job-name", name)
    assert sorted(j["name"] for j in listed) == sorted(t["name"] for t in trials)
    _check_named_outputs(ws, name, job, expect.named_outputs, dest)
    for output in expect.named_outputs:  # the sweep's outputs are its best trial's
        assert f"/{job['best_trial']['name']}/" in job["output_uris"][output], job["output_uris"]


def _steps(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in job["steps"]}


def _check_pipeline(ws: Workspace, name: str, job: dict[str, Any], expect: Pipeline, dest: Path) -> None:
    assert job["type"] == "pipeline"
    steps = _steps(job)
    assert list(steps) == list(expect.steps), steps
    assert all(s["status"] in ENDED_OK for s in steps.values()), steps
    for step, inner in expect.nested.items():
        nested = ws.job(steps[step]["job"])
        assert nested["type"] == "pipeline" and nested["status"] == "Completed", nested
        assert {s: v["status"] in ENDED_OK for s, v in _steps(nested).items()} == dict.fromkeys(inner, True), nested
    for step, text in expect.step_logs.items():
        log = ws.downloaded_log(steps[step]["job"], dest / f"step-{step}")
        assert text in log, f"step {step}'s log lacks {text!r}:\n{log}"
    _check_named_outputs(ws, name, job, expect.named_outputs, dest)


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=[_key(p) for p in EXAMPLE_FILES])
def test_example(example: Path, workspace: Workspace, tmp_path: Path):
    expect = EXPECTED.get(_key(example))
    if expect is None:
        pytest.fail(f"{_key(example)} has no entry in EXPECTED in {Path(__file__).name}; add what it must do")
    name = f"e2e-{example.stem}-{uuid.uuid4().hex[:8]}"
    job = _run(workspace, example, name)
    if isinstance(expect, Sweep):
        _check_sweep(workspace, name, job, expect, tmp_path)
    else:
        _check_pipeline(workspace, name, job, expect, tmp_path)


def test_an_unchanged_pipeline_rerun_reuses_every_step(workspace: Workspace, tmp_path: Path):
    example = ROOT / "pipelines" / "data-pipeline.yml"
    first = _run(workspace, example, f"e2e-reuse-a-{uuid.uuid4().hex[:8]}")
    name = f"e2e-reuse-b-{uuid.uuid4().hex[:8]}"
    _run(workspace, example, name)
    again = workspace.job(name)  # as `cible job show -n X -o json` shows it
    assert {s: v["status"] for s, v in _steps(again).items()} == dict.fromkeys(("prep", "train", "score"), "Reused")
    # A reused step is the earlier run's job; the rerun's outputs are that job's.
    assert {s: v["job"] for s, v in _steps(again).items()} == {s: v["job"] for s, v in _steps(first).items()}
    _check_named_outputs(workspace, name, again, {"report": {"report.txt": "accuracy: 1.000"}}, tmp_path)
