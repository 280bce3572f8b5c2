"""Sweeps and pipelines against a real server process: trials and steps are real jobs, their metrics
real MLflow runs, their data real files passed from step to step on a real cluster's nodes.

One workspace and server for the module (with a 2-node cluster on the local provider).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from integration_support import client_with_cluster, ended, tracked_workspace, wait_until, write_files

from cible import MLClient, load_job
from cible.core.errors import CibleError

TIMEOUT_S = 240

TRAIN_PY = textwrap.dedent(
    """
    import argparse, time
    import mlflow
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    for step in range(a.steps):
        loss = (a.lr - 0.3) ** 2 + a.layers * 0.01 + 1.0 / (step + 1)
        mlflow.log_metric("loss", loss, step=step)
        time.sleep(a.pause)
    print(f"trained lr={a.lr} layers={a.layers} loss={loss}")
    if a.out:
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
    p.add_argument("--times", type=int, default=1)
    p.add_argument("--fail", default="no")
    a = p.parse_args()
    if a.fail == "yes":
        print("this step fails on purpose"); sys.exit(4)
    text = open(os.path.join(a.src, "data.txt")).read() if a.src else ""
    line = text + (a.word + " ") * a.times
    print("step read:", repr(text), "wrote:", repr(line))
    if a.dst:
        with open(os.path.join(a.dst, "data.txt"), "w") as fh:
            fh.write(line)
    """
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    with tracked_workspace(tmp_path_factory.mktemp("parents_ws")) as home:
        yield home


@pytest.fixture(scope="module")
def client(home: Path):
    with client_with_cluster(home) as ml:
        yield ml


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    return write_files(root, {"src/train.py": TRAIN_PY, "steps/step.py": STEP_PY})


def _ended(client: MLClient, name: str) -> dict[str, Any]:
    return ended(client, name, TIMEOUT_S)


def _submit(client: MLClient, path: Path, *overrides: str) -> dict[str, Any]:
    return client.jobs.create_or_update(load_job(path, set_overrides=list(overrides)))


# -- sweeps ---------------------------------------------------------------------------------


def test_a_random_sweep_runs_its_trials_and_names_the_best(client: MLClient, project: Path):
    write_files(project, {"sweep.yml": """
        type: sweep
        compute: local
        trial:
          command: python train.py --lr ${{search_space.lr}} --layers ${{search_space.layers}} --out ${{outputs.model}}
          code: src
        sampling_algorithm: {type: random, seed: 7}
        search_space:
          lr: {type: uniform, min_value: 0.01, max_value: 0.9}
          layers: {type: choice, values: [1, 2, 3]}
        objective: {goal: minimize, primary_metric: loss}
        limits: {max_total_trials: 4, max_concurrent_trials: 2}
        outputs:
          model:
    """})
    sweep = _submit(client, project / "sweep.yml")
    assert sweep["type"] == "sweep"
    done = _ended(client, sweep["name"])
    assert done["status"] == "Completed", done.get("error")
    trials = done["trials"]
    assert [t["index"] for t in trials] == [0, 1, 2, 3]
    assert all(t["status"] == "Completed" and t["metric"] is not None for t in trials), trials
    assert all(0.01 <= t["parameters"]["lr"] <= 0.9 and t["parameters"]["layers"] in (1, 2, 3) for t in trials)
    best = min(trials, key=lambda t: t["metric"])
    assert done["best_trial"]["name"] == best["name"]
    listed = client.jobs.list(parent_job_name=sweep["name"])
    assert sorted(j["name"] for j in listed) == sorted(t["name"] for t in trials)
    assert all(j["parent_job_name"] == sweep["name"] for j in listed)
    assert sweep["name"] in {j["name"] for j in client.jobs.list()}  # trials are not top-level jobs
    assert not {t["name"] for t in trials} & {j["name"] for j in client.jobs.list()}
    # The sweep's outputs are its best trial's.
    assert done["output_uris"]["model"].startswith(f"azureml://datastores/workspaceblobstore/paths/azureml/{best['name']}/")


def test_a_bandit_policy_stops_a_trial_that_lags_the_best(client: MLClient, project: Path):
    write_files(project, {"bandit.yml": """
        type: sweep
        compute: local
        trial:
          command: python train.py --lr ${{search_space.lr}} --steps ${{search_space.steps}} --pause ${{search_space.pause}}
          code: src
        sampling_algorithm: grid
        search_space:
          lr: {type: choice, values: [0.3]}
          steps: {type: choice, values: [4]}
          pause: {type: choice, values: [0.0]}
        objective: {goal: minimize, primary_metric: loss}
        limits: {max_total_trials: 1, max_concurrent_trials: 1}
    """})
    # One fast good trial first: its values at each interval are the best a later trial is held to.
    good = _ended(client, _submit(client, project / "bandit.yml")["name"])
    assert good["status"] == "Completed", good.get("error")
    write_files(project, {"bandit2.yml": """
        type: sweep
        compute: local
        trial:
          command: python train.py --lr ${{search_space.lr}} --steps 60 --pause ${{search_space.pause}}
          code: src
        sampling_algorithm: grid
        search_space:
          lr: {type: choice, values: [0.3, 3.0]}
          pause: {type: choice, values: [0.5]}
        objective: {goal: minimize, primary_metric: loss}
        early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 1, delay_evaluation: 2}
        limits: {max_total_trials: 2, max_concurrent_trials: 2}
    """})
    sweep = _ended(client, _submit(client, project / "bandit2.yml")["name"])
    trials = {t["parameters"]["lr"]: t for t in sweep["trials"]}
    lagging = trials[3.0]
    assert lagging["status"] == "Canceled", lagging
    assert "bandit" in lagging["terminated"]
    child = client.jobs.get(lagging["name"])
    assert child["error"]["code"] == "EarlyTerminated" and "bandit" in child["error"]["message"]
    assert sweep["best_trial"]["parameters"]["lr"] == 0.3


def test_canceling_a_sweep_cancels_its_running_trials(client: MLClient, project: Path):
    write_files(project, {"slow-sweep.yml": """
        type: sweep
        compute: local
        trial:
          command: python train.py --lr ${{search_space.lr}} --steps 600 --pause 0.5
          code: src
        sampling_algorithm: random
        search_space:
          lr: {type: uniform, min_value: 0.1, max_value: 0.2}
        objective: {goal: minimize, primary_metric: loss}
        limits: {max_total_trials: 10, max_concurrent_trials: 2}
    """})
    name = _submit(client, project / "slow-sweep.yml")["name"]
    wait_until(lambda: sum(t["status"] == "Running" for t in client.jobs.get(name).get("trials") or []) == 2,
               timeout=TIMEOUT_S, message="two running trials")
    client.jobs.begin_cancel(name)
    done = _ended(client, name)
    assert done["status"] == "Canceled"
    assert done["trials"] and all(t["status"] == "Canceled" for t in done["trials"])
    assert len(done["trials"]) == 2  # none started after the cancel


def test_a_sweep_whose_trial_cannot_run_is_refused_at_submit(client: MLClient, project: Path):
    write_files(project, {"bad-sweep.yml": """
        type: sweep
        compute: nowhere
        trial:
          command: python train.py --lr ${{search_space.lr}}
          code: src
        sampling_algorithm: random
        search_space:
          lr: {type: uniform, min_value: 0.1, max_value: 0.2}
        objective: {goal: minimize, primary_metric: loss}
    """})
    with pytest.raises(CibleError) as refused:
        _submit(client, project / "bad-sweep.yml")
    assert "nowhere" in refused.value.message


# -- pipelines ------------------------------------------------------------------------------

PIPELINE = """
    type: pipeline
    settings:
      default_compute: azureml:cpu-cluster
      continue_on_step_failure: false
    inputs:
      word: hello
    outputs:
      final:
    jobs:
      first:
        type: command
        component: ./component.yml
        inputs:
          word: ${{parent.inputs.word}}
      second:
        type: command
        component: file:./component.yml
        inputs:
          src: ${{parent.jobs.first.outputs.dst}}
          word: world
          times: 2
        outputs:
          dst: ${{parent.outputs.final}}
      aside:
        type: command
        code: ../steps
        command: python step.py --word aside > /dev/null && mkdir -p outputs && echo aside > outputs/aside.txt
        outputs:
          artifacts:
      reader:
        type: command
        code: ../steps
        command: cat ${{inputs.seen}}/outputs/aside.txt
        inputs:
          seen: ${{parent.jobs.aside.outputs.artifacts}}
"""

COMPONENT = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
    type: command
    name: word_step
    version: 1
    inputs:
      src: {type: uri_folder, optional: true}
      word: {type: string}
      times: {type: integer, default: 1, min: 1, max: 5}
    outputs:
      dst: {type: uri_folder}
    code: ../steps
    command: >-
      python step.py --word ${{inputs.word}} --times ${{inputs.times}} --dst ${{outputs.dst}}
      $[[--src ${{inputs.src}}]]
"""


def test_a_pipeline_passes_data_from_step_to_step_and_reuses_unchanged_steps(client: MLClient, project: Path):
    write_files(project, {"pipe/pipeline.yml": PIPELINE, "pipe/component.yml": COMPONENT})
    first = _ended(client, _submit(client, project / "pipe" / "pipeline.yml")["name"])
    assert first["status"] == "Completed", first.get("error")
    steps = {s["name"]: s for s in first["steps"]}
    assert {s: steps[s]["status"] for s in steps} == dict.fromkeys(("first", "second", "aside", "reader"), "Completed")
    assert all(steps[s]["compute"].endswith("cpu-cluster") for s in steps)
    second_log = client.jobs.get(steps["second"]["job"])
    assert second_log["status"] == "Completed"
    out = project / "dl"
    client.jobs.download(first["name"], download_path=out, output_name="final")
    assert (out / "named-outputs" / "final" / "data.txt").read_text() == "hello world world "
    reader = steps["reader"]["job"]
    client.jobs.download(reader, download_path=project / "dl-reader", all=True)
    assert "aside" in (project / "dl-reader" / "artifacts" / "user_logs" / "std_log.txt").read_text()

    again = _ended(client, _submit(client, project / "pipe" / "pipeline.yml")["name"])
    assert again["status"] == "Completed", again.get("error")
    reused = {s["name"]: s for s in again["steps"]}
    assert {s: reused[s]["status"] for s in reused} == dict.fromkeys(("first", "second", "aside", "reader"), "Reused")
    assert reused["second"]["job"] == steps["second"]["job"]
    forced = _ended(client, _submit(client, project / "pipe" / "pipeline.yml", "settings.force_rerun=true")["name"])
    assert {s["status"] for s in forced["steps"]} == {"Completed"}


def test_a_failed_step_fails_its_pipeline_and_cancels_the_running_one(client: MLClient, project: Path):
    write_files(project, {"fail/pipeline.yml": """
        type: pipeline
        settings: {default_compute: azureml:cpu-cluster, continue_on_step_failure: false}
        jobs:
          breaks:
            type: command
            code: ../steps
            command: sleep 3 && python step.py --fail yes
          slow:
            type: command
            code: ../steps
            command: sleep 600
          after:
            type: command
            code: ../steps
            command: python step.py --src ${{inputs.x}}
            inputs:
              x: ${{parent.jobs.breaks.outputs.artifacts}}
    """})
    done = _ended(client, _submit(client, project / "fail" / "pipeline.yml")["name"])
    assert done["status"] == "Failed"
    assert "breaks" in done["error"]["message"]
    steps = {s["name"]: s for s in done["steps"]}
    assert steps["breaks"]["status"] == "Failed"
    # The running step was told to stop as the pipeline failed; it ends Canceled.
    assert _ended(client, steps["slow"]["job"])["status"] == "Canceled"
    assert steps["after"]["status"] in ("NotStarted", "Skipped")


def test_canceling_a_pipeline_cancels_its_running_steps(client: MLClient, project: Path):
    write_files(project, {"cancel/pipeline.yml": """
        type: pipeline
        settings: {default_compute: azureml:cpu-cluster}
        jobs:
          slow:
            type: command
            command: sleep 600
    """})
    name = _submit(client, project / "cancel" / "pipeline.yml")["name"]
    wait_until(lambda: [s for s in client.jobs.get(name)["steps"] if s["status"] == "Running"],
               timeout=TIMEOUT_S, message="a running step")
    client.jobs.begin_cancel(name)
    done = _ended(client, name)
    assert done["status"] == "Canceled"
    assert done["steps"][0]["status"] == "Canceled"
