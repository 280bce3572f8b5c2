"""A pipeline with a Spark step, through the CLI against a real server, with a real Spark (pyspark's JVMs,
Java 17): the step's spark component (Azure's sparkComponent shape) comes from a component file, its
input is a local CSV file uploaded with the pipeline, and `resources.instance_type` with no compute
makes it serverless Spark (a standalone master and worker on a node of its own), whatever the
pipeline's default compute. The job runs on the host's Python (CIBLE_SPARK_ENVIRONMENT=host), whose
pyspark is cible's test dependency; the script uses the DataFrame API (the host's pandas 3 is newer
than pandas API on Spark supports).
"""

from __future__ import annotations

import csv

import pytest
from e2e_support import Workspace, write_yaml

from cible.testing.spark import spark_unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(bool(spark_unavailable()), reason=str(spark_unavailable()))]

SCRIPT = """\
import argparse
from pyspark.sql import SparkSession

parser = argparse.ArgumentParser()
parser.add_argument("--titanic_data")
parser.add_argument("--wrangled_data")
args = parser.parse_args()
spark = SparkSession.builder.getOrCreate()
people = spark.read.option("header", True).csv(args.titanic_data)
kept = people.na.fill({"cabin": "None"}).na.drop()
kept.coalesce(1).write.mode("overwrite").option("header", True).csv(args.wrangled_data)
print(f"wrangled {kept.count()} rows on {spark.sparkContext.master}")
"""
ROWS = "id,age,cabin\n1,22,C1\n2,,C2\n3,30,\n4,40,D4\n5,51,E5\n"

COMPONENT = """\
$schema: https://azuremlschemas.azureedge.net/latest/sparkComponent.schema.json
name: titanic_spark_component
type: spark
version: 1
display_name: Titanic-Spark-Component
code: ./src
entry:
  file: titanic.py
inputs:
  titanic_data:
    type: uri_file
    mode: direct
outputs:
  wrangled_data:
    type: uri_folder
    mode: direct
args: >-
  --titanic_data ${{inputs.titanic_data}} --wrangled_data ${{outputs.wrangled_data}}
conf:
  spark.driver.cores: 1
  spark.driver.memory: 512m
  spark.executor.cores: 1
  spark.executor.memory: 512m
  spark.executor.instances: 1
"""

PIPELINE = """\
$schema: http://azureml/sdk-2-0/PipelineJob.json
type: pipeline
display_name: Titanic-Spark-CLI-Pipeline
settings:
  default_compute: azureml:local-default
inputs:
  titanic:
    type: uri_file
    path: ./data/titanic.csv
    mode: direct
jobs:
  spark_job:
    type: spark
    component: ./components/spark-job-component.yml
    inputs:
      titanic_data: ${{parent.inputs.titanic}}
    outputs:
      wrangled_data:
        type: uri_folder
        mode: direct
    resources:
      instance_type: Standard_DS2_v2
"""


@pytest.fixture
def workspace(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.env["CIBLE_SPARK_ENVIRONMENT"] = "host"
    write_yaml(ws.cwd, "components/src/titanic.py", SCRIPT)
    write_yaml(ws.cwd, "components/spark-job-component.yml", COMPONENT)
    (ws.cwd / "data").mkdir()
    (ws.cwd / "data" / "titanic.csv").write_text(ROWS)
    yield ws
    ws.stop()


@pytest.mark.timeout(600)
def test_a_pipelines_spark_step_from_a_component_file_runs_as_serverless_spark(workspace: Workspace) -> None:
    # No compute named `local-default` exists: a serverless Spark step never takes the pipeline's default.
    write_yaml(workspace.cwd, "pipeline.yml", PIPELINE)
    proc = workspace.cible("job", "create", "-f", "pipeline.yml", "-n", "titanic", "--stream", "-o", "json",
                           check=False, timeout=600)
    pipeline = workspace.job("titanic")
    child = "titanic_spark_job"
    assert pipeline["status"] == "Completed", (proc.stdout[-3000:], proc.stderr[-3000:],
                                               workspace.run_log(child)[-4000:])
    steps = {s["name"]: s for s in pipeline["steps"]}
    assert steps["spark_job"]["job"] == child and steps["spark_job"]["status"] == "Completed"

    job = workspace.job(child)
    assert job["type"] == "spark" and job["compute"] == "serverless" and len(job["nodes"]) == 1, job
    assert job["conf"]["spark.executor.memory"] == "512m"
    assert "wrangled 4 rows on spark://" in workspace.run_log(child)
    folder = workspace.home / "datastores" / "workspaceblobstore" / "azureml" / child / "wrangled_data"
    parts = sorted(folder.glob("part-*.csv"))
    assert len(parts) == 1, sorted(p.name for p in folder.iterdir()) if folder.exists() else f"no {folder}"
    rows = list(csv.DictReader(parts[0].open()))
    assert [(r["id"], r["age"], r["cabin"]) for r in rows] == [
        ("1", "22", "C1"), ("3", "30", "None"), ("4", "40", "D4"), ("5", "51", "E5")]

    # The same component registered (`cible component create`) and named by a pipeline: the same program on
    # the same data, so the step is the earlier run's (Reused), without running Spark again.
    registered = workspace.json("component", "create", "-f", "components/spark-job-component.yml")
    assert (registered["name"], registered["version"], registered["type"]) == ("titanic_spark_component", "1", "spark")
    write_yaml(workspace.cwd, "registered.yml", PIPELINE.replace(
        "./components/spark-job-component.yml", "azureml:titanic_spark_component:1"))
    workspace.cible("job", "create", "-f", "registered.yml", "-n", "titanic_again", "--stream", timeout=300)
    again = workspace.job("titanic_again")
    assert again["status"] == "Completed" and [(s["name"], s["status"], s["job"]) for s in again["steps"]] == [
        ("spark_job", "Reused", child)], again
