"""The batch endpoint example (examples/endpoints/batch: Azure's sample layout, a cluster, an endpoint and a
model deployment with a scoring script) driven with the `cible` CLI against a real server, as a user of
`az ml batch-endpoint` would: invoke on a local folder makes a job on the cluster's two nodes x two
workers; `job download --output-name score` gives named-outputs/score/predictions.csv with one line per
input row, in Azure's append_row format; `list-jobs` lists it; a typo in the deployment's YAML and an
input folder that does not exist are clear errors that create nothing.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from e2e_support import REPO, Workspace

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "endpoints" / "batch"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("example") / "batch"
    shutil.copytree(EXAMPLE, root)
    return root


def expected_lines(example: Path) -> list[str]:
    """What the example's batch_driver.py gives for each row of each file, in file order."""
    model = json.loads((example / "model" / "linear.json").read_text())
    lines = []
    for path in sorted((example / "data").glob("*.csv")):
        with path.open() as fh:
            for row in list(csv.reader(fh))[1:]:
                value = round(sum(float(x) * c for x, c in zip(row, model["coefficients"])) + model["intercept"], 4)
                lines.append(f"{path.name} {value}")
    return lines


def test_invoke_scores_every_row_on_the_cluster_and_the_output_downloads(workspace: Workspace, example: Path):
    workspace.cible("compute", "create", "-f", example / "compute.yml")
    workspace.cible("batch-endpoint", "create", "-f", example / "endpoint.yml")
    created = workspace.json("batch-deployment", "create", "-f", example / "deployment.yml", "--set-default")
    assert created["provisioning_state"] == "Succeeded"
    assert workspace.json("batch-endpoint", "show", "-n", "my-batch-endpoint")["defaults"]["deployment_name"] == "linear"

    job = workspace.json("batch-endpoint", "invoke", "-n", "my-batch-endpoint", "--input", example / "data")
    done = workspace.wait_status(job["name"], timeout=170)
    assert done["status"] == "Completed", done.get("error")
    batch = done["batch"]
    assert (batch["total"], batch["done"], batch["failed"]) == (3, 3, 0)  # 5 files in mini-batches of 2
    assert batch["rows"] == 20

    dest = workspace.root / "download"
    workspace.cible("job", "download", "-n", job["name"], "--output-name", "score", "--download-path", dest)
    lines = (dest / "named-outputs" / "score" / "predictions.csv").read_text().splitlines()
    assert sorted(lines) == sorted(expected_lines(example))
    assert lines == expected_lines(example)  # joined in mini-batch order, whichever worker scored each

    listed = workspace.json("batch-endpoint", "list-jobs", "-n", "my-batch-endpoint")
    assert [j["name"] for j in listed] == [job["name"]]
    shown = workspace.cible("job", "show", "-n", job["name"]).stdout
    assert "3/3" in shown  # the progress line: mini-batches done of total


def test_a_typo_in_the_deployment_yaml_names_its_line_and_stores_nothing(workspace: Workspace, example: Path):
    text = (example / "deployment.yml").read_text().replace("mini_batch_size: 2", "mini_batch_size: two")
    (example / "typo.yml").write_text(text.replace("name: linear", "name: typo"))
    proc = workspace.cible("batch-deployment", "create", "-f", example / "typo.yml", check=False)
    assert proc.returncode != 0
    line = text.splitlines().index("  mini_batch_size: two") + 1
    assert f"typo.yml:{line}" in proc.stderr and "mini_batch_size" in proc.stderr
    names = [d["name"] for d in workspace.json("batch-deployment", "list", "-e", "my-batch-endpoint")]
    assert "typo" not in names


def test_an_input_folder_that_does_not_exist_is_a_clear_error(workspace: Workspace, example: Path):
    before = workspace.json("batch-endpoint", "list-jobs", "-n", "my-batch-endpoint")
    proc = workspace.cible("batch-endpoint", "invoke", "-n", "my-batch-endpoint", "--input", example / "no-such-data",
                           check=False)
    assert proc.returncode != 0
    assert "no-such-data" in proc.stderr and "Traceback" not in proc.stderr
    assert workspace.json("batch-endpoint", "list-jobs", "-n", "my-batch-endpoint") == before
