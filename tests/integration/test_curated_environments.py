"""Every curated environment does what Azure's examples do with it, as a real job through a workspace.

A job whose `environment:` is the curated environment runs curated_jobs/mlflow_flavour.py with the
environment's flavour (the word after `AzureML-` in its name): an MLflow model saved, loaded, saved
again and served through pyfunc, then models logged by mlflow.autolog() to the job's run and served
back from the workspace's tracking server. Parametrised over the curated table, so a new curated
environment is tested here without an edit to this file (its flavour needs models in the script,
whose failure says so).

Each environment is one build: into CIBLE_TEST_ENV_CACHE when set, shared with
test_environments.py's curated build, else into a directory of this module's.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cible.core.environments import curated_environments

# A cold build of a curated environment downloads a few hundred MB of wheels.
JOB_TIMEOUT_S = 900
SCRIPTS = Path(__file__).parent / "curated_jobs"
FLAVOUR = re.compile(r"AzureML-(?P<flavour>[A-Za-z]+)-.+")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    from cible import MLClient

    home = tmp_path_factory.mktemp("ws")
    cache = os.environ.get("CIBLE_TEST_ENV_CACHE") or str(tmp_path_factory.mktemp("envs"))
    # The server reads both when it starts; tracking is on because autolog logs to the job's run.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIBLE_ENV_CACHE", cache)
        mp.setenv("CIBLE_TRACKING", "1")
        ml = MLClient(home=home)
    yield ml
    os.kill(json.loads((home / "server.json").read_text())["pid"], signal.SIGTERM)


def reference(entry: dict) -> str:
    """The spelling Azure's examples use: the azureml registry's name where the entry has it."""
    aliases = entry.get("aliases") or []
    return f"azureml://registries/azureml/environments/{aliases[0]}/labels/latest" if aliases else entry["name"]


@pytest.mark.timeout(JOB_TIMEOUT_S + 120)
# The AutoML environment has no MLflow flavour of its own: an AutoML job's searches run in it (its
# requirements resolve to wheels in test_environments.py; its search is tested in the host's Python).
@pytest.mark.parametrize("entry", [e for e in curated_environments() if FLAVOUR.fullmatch(e["name"])],
                         ids=lambda e: e["name"])
def test_a_job_in_the_curated_environment_saves_loads_and_serves_an_mlflow_model(client, entry: dict):  # noqa: ANN001
    from cible import command

    flavour = FLAVOUR.fullmatch(entry["name"])["flavour"].lower()
    job = client.jobs.create_or_update(command(
        code=SCRIPTS, command=f"python mlflow_flavour.py {flavour}", environment=reference(entry), compute="local"))
    done = client.jobs.wait(job.name, timeout=JOB_TIMEOUT_S)
    log = client._client.request("GET", f"/jobs/{job.name}/logs").content.decode()
    assert done.status == "Completed", (done.get("error"), log[-6000:])
    result = json.loads(next(line for line in log.splitlines() if line.startswith("RESULT "))[len("RESULT "):])

    # The MLflow the table pins (where Azure's azureml-mlflow caps it), not whatever PyPI has newest.
    pin = next(Requirement(r) for r in entry["requirements"] if Requirement(r).name == "mlflow-skinny")
    assert pin.specifier.contains(result["mlflow"]), (str(pin), result["mlflow"])
    round_trip = result["round_trip"]
    assert round_trip and all(kind["same_predictions"] for kind in round_trip.values()), round_trip
    if flavour == "sklearn":
        # MLflow's default, safe format: the one that needs skops in the environment.
        assert round_trip["LogisticRegression"]["files"] == ["model.skops"]
    if flavour == "lightgbm":
        assert round_trip["Booster"]["files"] == ["model.lgb"]
        assert round_trip["LGBMClassifier"]["files"] == ["model.skops"]
    autolog = result["autolog"]
    assert autolog["models"] == autolog["trained"] and autolog["all_serve"], autolog
