"""Pipelines beyond the basics against a real server process: registered components, nested pipeline
components, sweep steps, serverless and input-bound compute, non-deterministic steps, a failure that
the other branch outlives, and what `cible job show` and `job list --parent-job-name` say of them.

One workspace and server for the module (MLflow tracking on: the sweep step reads its trials'
metric), with a 2-node cluster `cpu-cluster` on the local provider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from integration_support import client_with_cluster, ended, tracked_workspace, write_files

from cible import MLClient, load_job

TIMEOUT_S = 240

TRAIN_PY = textwrap.dedent(
    """
    import argparse
    import mlflow
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args()
    for step in range(a.steps):
        mlflow.log_metric("loss", (a.lr - 0.3) ** 2 + 1.0 / (step + 1), step=step)
    with open(a.out + "/model.txt", "w") as fh:
        fh.write(f"model lr={a.lr}")
    """
)

STEP_PY = textwrap.dedent(
    """
    import argparse, os, sys
    p = argparse.ArgumentParser()
    p.add_argument("--src", default=None)
    p.add_argument("--dst", default=None)
    p.add_argument("--word", default="none")
    p.add_argument("--fail", default="no")
    a = p.parse_args()
    if a.fail == "yes":
        print("this step fails on purpose"); sys.exit(4)
    text = open(os.path.join(a.src, "data.txt")).read() if a.src else ""
    line = text + a.word + " "
    print("step read:", repr(text), "wrote:", repr(line))
    if a.dst:
        with open(os.path.join(a.dst, "data.txt"), "w") as fh:
            fh.write(line)
    """
)

# A command component that appends a word to the text it reads (if any) and writes it out.
WORD_COMPONENT = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
    type: command
    name: adv_word
    version: 1
    inputs:
      src: {type: uri_folder, optional: true}
      word: {type: string}
    outputs:
      dst: {type: uri_folder}
    code: ../steps
    command: >-
      python step.py --word ${{inputs.word}} --dst ${{outputs.dst}} $[[--src ${{inputs.src}}]]
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    with tracked_workspace(tmp_path_factory.mktemp("adv_pipes_ws")) as home:
        yield home


@pytest.fixture(scope="module")
def client(home: Path):
    with client_with_cluster(home) as ml:
        yield ml


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adv_project")
    return write_files(root, {"src/train.py": TRAIN_PY, "steps/step.py": STEP_PY, "pipes/component.yml": WORD_COMPONENT})


def _ended(client: MLClient, name: str) -> dict[str, Any]:
    return ended(client, name, TIMEOUT_S)


def _run(client: MLClient, path: Path, *overrides: str) -> dict[str, Any]:
    """Submit the job at `path` and wait for its end."""
    return _ended(client, client.jobs.create_or_update(load_job(path, set_overrides=list(overrides)))["name"])


def _steps(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in job["steps"]}


def _output_text(client: MLClient, job: str, output: str, where: Path) -> str:
    client.jobs.download(job, download_path=where, output_name=output)
    return (where / "named-outputs" / output / "data.txt").read_text()


def _log(client: MLClient, job: str, where: Path) -> str:
    client.jobs.download(job, download_path=where, all=True)
    return (where / "artifacts" / "user_logs" / "std_log.txt").read_text()


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "cible", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CIBLE_HOME": str(home), "COLUMNS": "250", "NO_COLOR": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_steps_run_registered_components_by_version_and_by_latest(client: MLClient, project: Path, home: Path):
    registered = client.components.create_or_update(project / "pipes" / "component.yml")
    assert (registered["name"], str(registered["version"])) == ("adv_word", "1")
    write_files(project, {"pipes/registered.yml": """
        type: pipeline
        settings: {default_compute: azureml:cpu-cluster}
        outputs:
          final:
        jobs:
          pinned:
            type: command
            component: azureml:adv_word:1
            inputs: {word: registered}
          latest:
            type: command
            component: azureml:adv_word@latest
            inputs:
              src: ${{parent.jobs.pinned.outputs.dst}}
              word: latest
            outputs:
              dst: ${{parent.outputs.final}}
    """})
    done = _run(client, project / "pipes" / "registered.yml")
    assert done["status"] == "Completed", done.get("error")
    assert {s["status"] for s in done["steps"]} == {"Completed"}
    assert _output_text(client, done["name"], "final", project / "dl-registered") == "registered latest "

    # cible job show: the pipeline's steps, each with its status, job and compute.
    shown = _cli(home, "job", "show", "-n", done["name"])
    table = shown[shown.index("steps"):].splitlines()
    for step in done["steps"]:
        assert any(step["name"] in line and "Completed" in line and step["job"] in line and "cpu-cluster" in line
                   for line in table), shown
    # cible job list --parent-job-name: the pipeline's steps, as JSON.
    listed = json.loads(_cli(home, "job", "list", "--parent-job-name", done["name"], "-o", "json"))
    assert sorted(j["name"] for j in listed) == sorted(s["job"] for s in done["steps"])
    assert {j["parent_job_name"] for j in listed} == {done["name"]}
    assert {j["status"] for j in listed} == {"Completed"}


def test_a_nested_pipeline_component_takes_data_in_and_gives_data_to_a_later_step(client: MLClient, project: Path):
    write_files(project, {
        "nest/pipeline.yml": """
            type: pipeline
            settings: {default_compute: azureml:cpu-cluster}
            outputs:
              final:
            jobs:
              make:
                type: command
                component: ../pipes/component.yml
                inputs: {word: nested-in}
              inner:
                type: pipeline
                component: ./sub/pipeline-component.yml
                inputs:
                  data: ${{parent.jobs.make.outputs.dst}}
                  word: inner
              after:
                type: command
                component: ../pipes/component.yml
                inputs:
                  src: ${{parent.jobs.inner.outputs.result}}
                  word: out
                outputs:
                  dst: ${{parent.outputs.final}}
        """,
        "nest/sub/pipeline-component.yml": """
            $schema: https://azuremlschemas.azureedge.net/latest/pipelineComponent.schema.json
            type: pipeline
            name: adv_inner
            inputs:
              data: {type: uri_folder}
              word: {type: string}
            outputs:
              result: {type: uri_folder}
            jobs:
              one:
                type: command
                component: ../../pipes/component.yml
                inputs:
                  src: ${{parent.inputs.data}}
                  word: ${{parent.inputs.word}}
              two:
                type: command
                component: ../../pipes/component.yml
                inputs:
                  src: ${{parent.jobs.one.outputs.dst}}
                  word: two
                outputs:
                  dst: ${{parent.outputs.result}}
        """,
    })
    done = _run(client, project / "nest" / "pipeline.yml")
    assert done["status"] == "Completed", done.get("error")
    steps = _steps(done)
    assert steps["inner"]["type"] == "pipeline" and steps["inner"]["status"] == "Completed"
    inner = client.jobs.get(steps["inner"]["job"])
    assert inner["parent_job_name"] == done["name"]
    assert {s["name"]: s["status"] for s in inner["steps"]} == {"one": "Completed", "two": "Completed"}
    assert _output_text(client, done["name"], "final", project / "dl-nested") == "nested-in inner two out "

    # Run again unchanged: every command step, inside the nested pipeline and after it, is reused.
    again = _run(client, project / "nest" / "pipeline.yml")
    assert again["status"] == "Completed", again.get("error")
    steps_again = _steps(again)
    assert (steps_again["make"]["status"], steps_again["after"]["status"]) == ("Reused", "Reused"), again["steps"]
    assert steps_again["after"]["job"] == steps["after"]["job"]
    inner_again = client.jobs.get(steps_again["inner"]["job"])
    assert {s["name"]: s["status"] for s in inner_again["steps"]} == {"one": "Reused", "two": "Reused"}
    assert _output_text(client, again["name"], "final", project / "dl-nested-again") == "nested-in inner two out "


def test_a_sweep_step_feeds_its_best_trials_model_to_a_later_step(client: MLClient, project: Path):
    write_files(project, {
        "sweep/train-component.yml": """
            type: command
            name: adv_train
            inputs:
              lr: {type: number, default: 0.5}
              steps: {type: integer, default: 2}
            outputs:
              model: {type: uri_folder}
            code: ../src
            command: python train.py --lr ${{inputs.lr}} --steps ${{inputs.steps}} --out ${{outputs.model}}
        """,
        "sweep/pipeline.yml": """
            type: pipeline
            settings: {default_compute: azureml:cpu-cluster}
            jobs:
              sweep_step:
                type: sweep
                trial: ./train-component.yml
                inputs: {steps: 2}
                sampling_algorithm: grid
                search_space:
                  lr: {type: choice, values: [0.9, 0.3]}
                objective: {goal: minimize, primary_metric: loss}
                limits: {max_total_trials: 2, max_concurrent_trials: 2}
              predict:
                type: command
                command: cat ${{inputs.model}}/model.txt
                inputs:
                  model: ${{parent.jobs.sweep_step.outputs.model}}
        """,
    })
    done = _run(client, project / "sweep" / "pipeline.yml")
    assert done["status"] == "Completed", done.get("error")
    steps = _steps(done)
    sweep = client.jobs.get(steps["sweep_step"]["job"])
    assert sweep["type"] == "sweep" and sweep["status"] == "Completed"
    assert sorted(t["parameters"]["lr"] for t in sweep["trials"]) == [0.3, 0.9]
    assert all(client.jobs.get(t["name"])["target"] == "cpu-cluster" for t in sweep["trials"])
    assert sweep["best_trial"]["parameters"] == {"lr": 0.3}
    assert "model lr=0.3" in _log(client, steps["predict"]["job"], project / "dl-predict")


def test_job_show_draws_a_sweeps_trials_and_best_trial(client: MLClient, project: Path, home: Path):
    write_files(project, {"show/sweep.yml": """
        type: sweep
        compute: local
        trial:
          command: python train.py --lr ${{search_space.lr}} --out ${{outputs.model}}
          code: ../src
        sampling_algorithm: grid
        search_space:
          lr: {type: choice, values: [0.9, 0.3]}
        objective: {goal: minimize, primary_metric: loss}
        limits: {max_total_trials: 2, max_concurrent_trials: 2}
        outputs:
          model:
    """})
    sweep = _run(client, project / "show" / "sweep.yml")
    assert sweep["status"] == "Completed", sweep.get("error")
    shown = _cli(home, "job", "show", "-n", sweep["name"])
    trials = shown[shown.index("trials"):].splitlines()
    assert any("loss" in line for line in trials[:4]), shown  # the metric's column, named as logged
    for trial in sweep["trials"]:
        assert any(trial["name"] in line and "Completed" in line and f"lr={trial['parameters']['lr']}" in line
                   for line in trials), shown
    best = sweep["best_trial"]
    assert best["parameters"] == {"lr": 0.3}
    assert f"best trial  {best['name']}" in shown and "(lr=0.3)" in shown


def test_serverless_default_compute_and_a_step_compute_bound_from_an_input(client: MLClient, project: Path):
    write_files(project, {"compute/pipeline.yml": """
        type: pipeline
        settings: {default_compute: azureml:serverless}
        inputs:
          compute_name: cpu-cluster
        jobs:
          own_nodes:
            type: command
            command: echo on its own serverless nodes
          bound:
            type: command
            compute: ${{parent.inputs.compute_name}}
            command: echo on the cluster the input names
    """})
    done = _run(client, project / "compute" / "pipeline.yml")
    assert done["status"] == "Completed", done.get("error")
    steps = _steps(done)
    own = client.jobs.get(steps["own_nodes"]["job"])
    assert own["status"] == "Completed"
    assert own["target"] == f"serverless:{own['name']}", own
    bound = client.jobs.get(steps["bound"]["job"])
    assert bound["status"] == "Completed"
    assert bound["target"] == "cpu-cluster" and bound["compute"].endswith("cpu-cluster"), bound


def test_a_rerun_reuses_the_deterministic_step_and_runs_the_non_deterministic_one_again(
        client: MLClient, project: Path):
    write_files(project, {
        "nondet/pipeline.yml": """
            type: pipeline
            settings: {default_compute: azureml:cpu-cluster}
            jobs:
              stable:
                type: command
                component: ./stable.yml
              fresh:
                type: command
                component: ./fresh.yml
        """,
        "nondet/stable.yml": """
            type: command
            name: adv_stable
            command: echo the same each time
        """,
        "nondet/fresh.yml": """
            type: command
            name: adv_fresh
            is_deterministic: false
            command: echo different each time
        """,
    })
    first = _run(client, project / "nondet" / "pipeline.yml")
    assert first["status"] == "Completed", first.get("error")
    before = _steps(first)
    again = _run(client, project / "nondet" / "pipeline.yml")
    assert again["status"] == "Completed", again.get("error")
    after = _steps(again)
    assert (after["stable"]["status"], after["stable"]["job"]) == ("Reused", before["stable"]["job"])
    assert after["fresh"]["status"] == "Completed"
    assert after["fresh"]["job"] != before["fresh"]["job"]
    assert after["fresh"]["job"].startswith(again["name"])


def test_with_continue_on_step_failure_the_other_branch_completes_and_the_pipeline_fails(
        client: MLClient, project: Path):
    write_files(project, {"continue/pipeline.yml": """
        type: pipeline
        settings: {default_compute: azureml:cpu-cluster, continue_on_step_failure: true}
        jobs:
          breaks:
            type: command
            code: ../steps
            command: python step.py --fail yes
          after_break:
            type: command
            code: ../steps
            command: python step.py --src ${{inputs.x}}
            inputs:
              x: ${{parent.jobs.breaks.outputs.artifacts}}
          slow:
            type: command
            code: ../steps
            command: sleep 3 && mkdir -p outputs && python step.py --word slow --dst outputs
          after_slow:
            type: command
            code: ../steps
            command: python step.py --src ${{inputs.x}}/outputs --word continued
            inputs:
              x: ${{parent.jobs.slow.outputs.artifacts}}
    """})
    done = _run(client, project / "continue" / "pipeline.yml")
    assert done["status"] == "Failed"
    assert done["error"]["message"].startswith("step 'breaks' failed"), done["error"]
    steps = {name: step["status"] for name, step in _steps(done).items()}
    assert steps == {"breaks": "Failed", "after_break": "Skipped", "slow": "Completed", "after_slow": "Completed"}
