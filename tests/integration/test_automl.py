"""AutoML jobs against a real server process: Azure's `type: automl` YAML with an MLTable folder, its
searches real child jobs (FLAML in the launcher's Python: CIBLE_AUTOML_ENVIRONMENT=host) on `local`
and on a real 2-node cluster, their metrics real MLflow runs, the best model a real MLflow model that
is registered from the job's output and loads without cible.

Iterations, not seconds, bound each search (limits.max_trials), so the tests do not depend on the
machine's speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from integration_support import client_with_cluster, ended, served_workspace, write_files

pytest.importorskip("flaml")

from cible import MLClient, load_job  # noqa: E402
from cible.core.errors import CibleError  # noqa: E402

TIMEOUT_S = 300


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("automl_ws")
    with served_workspace(home, CIBLE_DEFAULT_COMPUTE="local", CIBLE_TRACKING="1", CIBLE_AUTOML_ENVIRONMENT="host"), \
            client_with_cluster(home) as ml:
        yield ml


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_iris

    root = tmp_path_factory.mktemp("automl_project")
    frame = load_iris(as_frame=True).frame.sample(frac=1, random_state=0)
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]
    frame["species"] = frame["species"].map({0: "setosa", 1: "versicolor", 2: "virginica"})
    for name, part in (("train", frame[:120]), ("test", frame[120:])):
        (root / name).mkdir()
        part.to_csv(root / name / "rows.csv", index=False)
        (root / name / "MLTable").write_text("paths:\n  - file: ./rows.csv\ntransformations:\n  - read_delimited:\n"
                                             "      delimiter: ','\n      header: all_files_same_headers\n")
    return root


def automl_yaml(compute: str, **extra: str) -> str:
    lines = {"type": "automl", "experiment_name": "iris-automl", "task": "classification",
             "primary_metric": "accuracy", "target_column_name": "species", "compute": compute, **extra}
    return "\n".join(f"{k}: {v}" for k, v in lines.items()) + """
training_data: {type: mltable, path: ./train}
test_data: {type: mltable, path: ./test}
n_cross_validations: 3
limits: {max_trials: 4, max_concurrent_trials: 2, timeout_minutes: 10}
training: {allowed_training_algorithms: [LightGBM, RandomForest]}
"""


def test_an_automl_job_searches_in_child_jobs_and_its_best_model_registers_and_loads(client: MLClient,
                                                                                    project: Path) -> None:
    write_files(project, {"local.yml": automl_yaml("azureml:local")})
    job = client.jobs.create_or_update(load_job(project / "local.yml"))
    assert job["type"] == "automl"
    done = ended(client, job["name"], TIMEOUT_S)
    assert done["status"] == "Completed", done.get("error")
    trials = done["trials"]
    assert sorted(t["algorithm"] for t in trials) == ["LightGBM", "RandomForest"]  # one learner a search
    assert all(t["status"] == "Completed" and 0.8 <= t["metric"] <= 1 and t["iterations"] == 2 for t in trials)
    best = max(trials, key=lambda t: (t["metric"], -t["index"]))
    assert done["best_trial"]["name"] == best["name"] and done["best_trial"]["test_metrics"]["accuracy"] > 0.8
    assert done["primary_metric"] == "accuracy" and len(done["models"]) == 4
    assert done["output_uris"]["best_model"].startswith(
        f"azureml://datastores/workspaceblobstore/paths/azureml/{best['name']}/")
    child = client.jobs.get(best["name"])  # each search logs its best metric to its own MLflow run
    assert child["metrics"]["accuracy"] == pytest.approx(best["metric"])

    model = client.models.create_or_update({"name": "iris-best", "version": "1", "type": "mlflow_model",
                                            "path": f"azureml://jobs/{job['name']}/outputs/best_model"})
    assert model["type"] == "mlflow_model"
    folder = client.jobs.download(job["name"], download_path=project / "dl", output_name="best_model")
    assert folder
    model_dir = project / "dl" / "named-outputs" / "best_model"
    loaded = subprocess.run([sys.executable, "-c", (
        "import sys, mlflow.pyfunc, pandas as pd; sys.modules['cible'] = None; "
        f"m = mlflow.pyfunc.load_model({str(model_dir)!r}); "
        f"print(sorted(set(m.predict(pd.read_csv({str(project / 'test' / 'rows.csv')!r}).drop(columns='species')))))")],
        capture_output=True, text=True, timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert "setosa" in loaded.stdout


def test_an_automl_job_runs_its_searches_on_a_cluster(client: MLClient, project: Path) -> None:
    write_files(project, {"cluster.yml": automl_yaml("azureml:cpu-cluster")})
    job = client.jobs.create_or_update(load_job(project / "cluster.yml"))
    done = ended(client, job["name"], TIMEOUT_S)
    assert done["status"] == "Completed", done.get("error")
    assert {client.jobs.get(t["name"])["compute"] for t in done["trials"]} == {"azureml:cpu-cluster"}


def test_a_target_column_the_data_lacks_fails_the_job_naming_the_field(client: MLClient, project: Path) -> None:
    write_files(project, {"typo.yml": automl_yaml("azureml:local").replace("target_column_name: species",
                                                                           "target_column_name: specie")})
    try:
        job = client.jobs.create_or_update(load_job(project / "typo.yml"))
    except CibleError as refused:  # refused at submit
        message = refused.message
    else:  # or failed by its search, which says why
        done = ended(client, job["name"], TIMEOUT_S)
        assert done["status"] == "Failed"
        message = done["error"]["message"]
    assert "target_column_name: no column 'specie'" in message and "species" in message


def test_canceling_an_automl_job_cancels_its_searches(client: MLClient, project: Path) -> None:
    slow = automl_yaml("azureml:local").replace("max_trials: 4", "max_trials: 1000")
    write_files(project, {"slow.yml": slow})
    job = client.jobs.create_or_update(load_job(project / "slow.yml"))
    from integration_support import wait_until

    wait_until(lambda: any(t["status"] == "Running" for t in client.jobs.get(job["name"]).get("trials") or []),
               timeout=TIMEOUT_S, message="a search running")
    client.jobs.begin_cancel(job["name"])
    done = ended(client, job["name"], TIMEOUT_S)
    assert done["status"] == "Canceled"
    assert all(t["status"] in ("Canceled", "Completed") for t in done["trials"])
