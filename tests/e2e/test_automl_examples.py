"""Every AutoML example (examples/automl/*.yml), run with `cible job create -f X --stream -o json` on the
cluster the examples name, its best model registered with `cible model create` from the job's output;
and a typo in one (a target column the data lacks, a metric of another task) as a user meets it.

The searches run on the host's Python (CIBLE_AUTOML_ENVIRONMENT=host), which has FLAML through cible's
test dependencies; by default they run in the curated AzureML-AutoML environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_support import REPO, Workspace

pytestmark = pytest.mark.e2e
pytest.importorskip("flaml")

ROOT = REPO / "examples"
EXAMPLES = {"classification.yml": ("accuracy", 0.8), "regression.yml": ("normalized_root_mean_squared_error", 0.3),
            "forecasting.yml": ("normalized_root_mean_squared_error", 0.2)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    ws = Workspace(tmp_path_factory.mktemp("automl"), tracking=True)
    ws.env["CIBLE_AUTOML_ENVIRONMENT"] = "host"
    ws.cible("compute", "create", "-f", ROOT / "clusters" / "cpu-cluster.yml")
    yield ws
    ws.stop()


def test_every_example_has_an_entry() -> None:
    assert sorted(p.name for p in (ROOT / "automl").glob("*.yml")) == sorted(EXAMPLES)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_an_automl_example_completes_and_its_best_model_registers(workspace: Workspace, example: str,
                                                                 tmp_path: Path) -> None:
    metric, bound = EXAMPLES[example]
    name = f"automl_{example.split('.')[0]}"
    proc = workspace.cible("job", "create", "-f", ROOT / "automl" / example, "-n", name, "--stream", "-o", "json",
                           check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "Completed"
    job = workspace.job(name)
    assert job["primary_metric"] == metric and len(job["trials"]) == 2, job
    assert all(t["status"] == "Completed" and t["algorithm"] for t in job["trials"]), job["trials"]
    best = job["best_trial"]["metric"]
    assert (best >= bound) if metric == "accuracy" else (best <= bound), job["best_trial"]
    shown = workspace.cible("job", "show", "-n", name).stdout
    assert "best trial" in shown and "best models" in shown and metric in shown
    workspace.cible("model", "create", "--name", name, "--version", "1", "--type", "mlflow_model", "--path",
                    f"azureml://jobs/{name}/outputs/best_model")
    workspace.cible("model", "download", "--name", name, "--version", "1", "--download-path", tmp_path)
    assert list(tmp_path.rglob("MLmodel")), sorted(p.name for p in tmp_path.rglob("*"))


def test_a_metric_of_another_task_is_refused_at_submit_pointing_at_its_line(workspace: Workspace,
                                                                            tmp_path: Path) -> None:
    source = (ROOT / "automl" / "classification.yml").read_text()
    typo = tmp_path / "typo.yml"
    typo.write_text(source.replace("primary_metric: accuracy", "primary_metric: r2_score"))
    for data in ("iris-train", "iris-test"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / data).symlink_to(ROOT / "automl" / "data" / data)
    proc = workspace.cible("job", "create", "-f", typo, check=False)
    assert proc.returncode != 0
    line = 1 + source.splitlines().index("primary_metric: accuracy")
    assert f"typo.yml:{line}:17: primary_metric: 'r2_score' is not a primary metric of a classification task" \
        in proc.stderr, proc.stderr
