"""Spark examples (examples/spark) as a user runs them, unchanged, in their curated Spark runtime environment
(AzureML-Spark-3.4, built by uv on first use): Azure's serverless titanic job after its data is put at the
datastore path it reads (`cible datastore upload`, as Azure's setup script's `az storage blob upload`), the
same job on an attached Spark of that version, and the Spark pool's compute file."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from e2e_support import REPO, Workspace

from cible.testing.spark import StandaloneSpark, spark_unavailable
from cible.workspace import env_cache_root

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(spark_unavailable()), reason=str(spark_unavailable()))]
ROOT = REPO / "examples" / "spark"
WRANGLED = Path("datastores") / "workspaceblobstore" / "data" / "wrangled"


def expected_passengers() -> set[str]:
    """The pandas-on-Spark job's result: no cabin is filled in, any other gap drops the row."""
    with open(ROOT / "data" / "titanic.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r["PassengerId"] for r in rows if all(v != "" for k, v in r.items() if k != "Cabin")}


def wrangled(workspace: Workspace) -> set[str]:
    parts = sorted((workspace.home / WRANGLED).glob("part-*.csv"))
    assert parts, sorted(p.name for p in (workspace.home / WRANGLED).iterdir())
    return {row["PassengerId"] for part in parts for row in csv.DictReader(part.open())}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    ws = Workspace(tmp_path_factory.mktemp("spark-examples"))
    ws.env.pop("CIBLE_DEFAULT_COMPUTE")  # as a user's workspace: a job that names no compute is serverless
    ws.cible("datastore", "upload", "--name", "workspaceblobstore", "--src", ROOT / "data" / "titanic.csv",
             "--dest", "data/titanic.csv")
    yield ws
    ws.stop()


def test_every_example_has_a_test() -> None:
    assert sorted(p.name for p in ROOT.glob("*.yml")) == [
        "attached-spark-standalone.yml", "attached-spark.yml", "serverless-spark-standalone.yml", "spark-pool.yml"]


@pytest.mark.timeout(900)  # the first builds AzureML-Spark-3.4 (pyspark 3.4 from source, pandas 1, pyarrow)
def test_azures_serverless_titanic_job_runs_unchanged(workspace: Workspace) -> None:
    proc = workspace.cible("job", "create", "-f", ROOT / "serverless-spark-standalone.yml", "-n", "titanic",
                           "--stream", "-o", "json", check=False, timeout=900)
    job = workspace.job("titanic")
    assert job["status"] == "Completed", proc.stdout[-4000:] + proc.stderr[-4000:]
    assert job["compute"] == "serverless" and len(job["nodes"]) == 2, job
    assert wrangled(workspace) == expected_passengers()
    log = workspace.run_log("titanic")
    assert "AzureML-Spark-3.4" in log and f"wrangled {len(expected_passengers())} passengers" in log, log[-3000:]


@pytest.mark.timeout(600)
def test_the_same_job_runs_on_an_attached_spark_of_its_version(workspace: Workspace, tmp_path: Path) -> None:
    # The attached Spark runs the runtime's own Spark (the environment the serverless job built). Either of
    # the job's two nodes may build it ("building … (key K)"), the other then waits ("another run is building it
    # (K)"), and on a warm cache it says "cached (K)".
    key = re.search(r"AzureML-Spark-3\.4:1: [^\n]*?\((?:key )?([0-9a-f]{12})[:)]", workspace.run_log("titanic"))
    assert key, workspace.run_log("titanic")[:3000]
    python = next(env_cache_root().glob(f"{key.group(1)}*/bin/python"))
    with StandaloneSpark(tmp_path / "spark", workers=1, cores=2, memory="2g", python=python) as cluster:
        workspace.cible("compute", "attach", "-f", ROOT / "attached-spark.yml", "--set",
                        f"cible.master_url={cluster.master_url}")
        (workspace.home / WRANGLED).rename(tmp_path / "first-run")  # what this run writes, alone
        proc = workspace.cible("job", "create", "-f", ROOT / "attached-spark-standalone.yml", "-n", "titanic_attached",
                               "--stream", check=False, timeout=600)
        assert workspace.job("titanic_attached")["status"] == "Completed", proc.stdout[-4000:] + proc.stderr[-4000:]
        # (pandas API on Spark names its application itself: "pandas-on-Spark".)
        assert [a["state"] for a in cluster.applications()] == ["FINISHED"], cluster.applications()
    assert wrangled(workspace) == expected_passengers()


def test_the_spark_pool_example_makes_a_pool_of_cibles_nodes(workspace: Workspace) -> None:
    pool = json.loads(workspace.cible("compute", "create", "-f", ROOT / "spark-pool.yml", "-o", "json").stdout)
    assert pool["pool"] == {"size": "Standard_E4s_v3", "min_instances": 0, "max_instances": 3,
                            "idle_time_before_scale_down": 900}, pool
    assert workspace.nodes("spark-pool") == []  # none until a job asks
