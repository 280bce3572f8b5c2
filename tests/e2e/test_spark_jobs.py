"""Spark jobs through the CLI against a real server, with a real Spark (pyspark's JVMs, Java 17):

- on `local`: Spark's local mode; a failing application fails the job with Spark's own reason;
- on an attached Spark (a standalone master and worker started here, attached as synapsespark with
  cible.master_url): the driver runs on local's slots against it; `job show` lists the Spark UI while it
  runs; a cancel ends the application at the master;
- serverless Spark: a standalone master and two workers on the job's two nodes, removed after (slow);
- a Spark pool of cible's own nodes (synapsespark without master_url) (slow).

The jobs run on the host's Python (CIBLE_SPARK_ENVIRONMENT=host), whose pyspark is cible's test
dependency; tests/e2e/test_spark_examples.py runs Azure's example in its curated runtime environment.
The scripts use the DataFrame API (the host's pandas 3 is newer than pandas API on Spark supports).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import pytest
from e2e_support import Workspace, wait_until, write_yaml

from cible.testing.spark import StandaloneSpark, spark_unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(spark_unavailable()), reason=str(spark_unavailable()))]

SCRIPT = """\
import argparse, time
from pyspark.sql import SparkSession

parser = argparse.ArgumentParser()
parser.add_argument("--data")
parser.add_argument("--out")
parser.add_argument("--sleep", type=float, default=0)
args = parser.parse_args()
spark = SparkSession.builder.getOrCreate()
people = spark.read.option("header", True).csv(args.data)
if args.sleep:
    spark.sparkContext.parallelize(range(2), 2).foreach(lambda _: time.sleep(args.sleep))
kept = people.na.fill({"cabin": "None"}).na.drop()
kept.repartition(2).write.mode("overwrite").option("header", True).csv(args.out)
print(f"kept {kept.count()} rows on {spark.sparkContext.master}")
"""
ROWS = "id,age,cabin\n1,22,C1\n2,,C2\n3,30,\n4,40,D4\n5,51,E5\n"
KEPT = {"1", "3", "4", "5"}


def job_yaml(compute: str, *, args: str = "--data ${{inputs.data}} --out ${{outputs.out}}", resources: str = "",
             data: str = "./data/people.csv", instances: int = 1) -> str:
    return f"""\
        type: spark
        code: ./src
        entry:
          file: wrangle.py
        conf:
          spark.driver.cores: 1
          spark.driver.memory: 512m
          spark.executor.cores: 1
          spark.executor.memory: 512m
          spark.executor.instances: {instances}
        inputs:
          data:
            type: uri_file
            path: {data}
            mode: direct
        outputs:
          out:
            type: uri_folder
            mode: direct
        args: {args}
        {compute}
        {resources}
        """


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    ws = Workspace(tmp_path_factory.mktemp("spark"))
    ws.env["CIBLE_SPARK_ENVIRONMENT"] = "host"
    (ws.cwd / "src").mkdir()
    (ws.cwd / "src" / "wrangle.py").write_text(SCRIPT)
    (ws.cwd / "data").mkdir()
    (ws.cwd / "data" / "people.csv").write_text(ROWS)
    yield ws
    ws.stop()


@pytest.fixture(scope="module")
def attached(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory):
    """A Spark cible does not own (one worker of 2 cores), attached as `ext`."""
    with StandaloneSpark(tmp_path_factory.mktemp("ext-spark"), workers=1, cores=2, memory="1g") as cluster:
        write_yaml(workspace.cwd, "ext.yml", f"""\
            name: ext
            type: synapsespark
            resource_id: /subscriptions/s/resourceGroups/g/providers/Microsoft.Synapse/workspaces/w/bigDataPools/p
            spark_version: "4.0"
            cible:
              master_url: {cluster.master_url}
            """)
        workspace.cible("compute", "attach", "-f", "ext.yml")
        yield cluster


def output_rows(workspace: Workspace, name: str) -> set[str]:
    folder = workspace.home / "datastores" / "workspaceblobstore" / "azureml" / name / "out"
    parts = sorted(folder.glob("part-*.csv"))
    assert parts, sorted(p.name for p in folder.iterdir()) if folder.exists() else f"no {folder}"
    return {row["id"] for part in parts for row in csv.DictReader(part.open())}


def run(workspace: Workspace, name: str, text: str, check: bool = True) -> dict:
    write_yaml(workspace.cwd, f"{name}.yml", text)
    proc = workspace.cible("job", "create", "-f", f"{name}.yml", "-n", name, "--stream", "-o", "json", check=False,
                           timeout=600)
    job = workspace.job(name)
    if check:
        assert job["status"] == "Completed", proc.stdout[-4000:] + proc.stderr[-4000:]
    return job


def test_a_spark_job_on_local_runs_in_spark_local_mode(workspace: Workspace) -> None:
    job = run(workspace, "spark_local", job_yaml("compute: local"))
    assert output_rows(workspace, "spark_local") == KEPT
    log = workspace.run_log("spark_local")
    assert "kept 4 rows on local[1]" in log and "Spark UI" in log
    assert job["type"] == "spark" and job["compute"] == "local"
    # Its staging folder is gone, its output is where the job says.
    assert not (workspace.home / "datastores" / "workspaceblobstore" / "azureml" / "spark_local" / ".spark").exists()


def test_a_failing_application_fails_the_job_with_sparks_own_reason(workspace: Workspace) -> None:
    job = run(workspace, "spark_missing", job_yaml(
        "compute: local", args="--data /nowhere/people.csv --out ${{outputs.out}}"), check=False)
    assert job["status"] == "Failed", job
    message = job["error"]["message"]
    assert message.startswith("the Spark application failed: ") and "PATH_NOT_FOUND" in message, message


def test_a_bad_spark_job_is_refused_at_submit_naming_its_field(workspace: Workspace) -> None:
    write_yaml(workspace.cwd, "bad.yml", job_yaml("compute: local", args="--data ${{inputs.nothing}}"))
    proc = workspace.cible("job", "create", "-f", "bad.yml", check=False)
    assert proc.returncode != 0 and "args:" in proc.stderr and "nothing" in proc.stderr, proc.stderr
    write_yaml(workspace.cwd, "big.yml", job_yaml("", resources="resources: {instance_type: Standard_DS2_v2}")
               .replace("spark.executor.cores: 1", "spark.executor.cores: 8"))
    proc = workspace.cible("job", "create", "-f", "big.yml", check=False)
    assert proc.returncode != 0 and "conf.spark.executor.cores" in proc.stderr, proc.stderr
    proc = workspace.cible("job", "validate", "-f", "big.yml", check=False)  # validate makes the same checks
    assert proc.returncode != 0 and "conf.spark.executor.cores" in proc.stderr, proc.stderr
    write_yaml(workspace.cwd, "typo.yml", job_yaml("compute: local").replace("spark.executor.memory:",
                                                                             "spark.executor.memroy:"))
    proc = workspace.cible("job", "validate", "-f", "typo.yml")
    assert "did you mean spark.executor.memory?" in proc.stderr and "valid" in proc.stdout, proc.stdout + proc.stderr


def test_an_attached_spark_runs_the_driver_here_against_its_master(workspace: Workspace,
                                                                   attached: StandaloneSpark) -> None:
    run(workspace, "spark_attached", job_yaml("compute: azureml:ext"))
    assert output_rows(workspace, "spark_attached") == KEPT
    assert f"on {attached.master_url}" in workspace.run_log("spark_attached")
    apps = {app["name"]: app["state"] for app in attached.applications()}
    assert apps.get("spark_attached") == "FINISHED", apps


def test_a_running_spark_job_shows_its_ui_and_a_cancel_ends_its_application(workspace: Workspace,
                                                                            attached: StandaloneSpark) -> None:
    write_yaml(workspace.cwd, "slow.yml", job_yaml(
        "compute: azureml:ext", args="--data ${{inputs.data}} --out ${{outputs.out}} --sleep 300"))
    workspace.cible("job", "create", "-f", "slow.yml", "-n", "spark_slow")

    def running_app() -> dict | None:
        return next((a for a in attached.applications() if a["name"] == "spark_slow" and a["state"] == "RUNNING"),
                    None)

    wait_until(running_app, 120, interval=0.5, message="the job's application to run at the master")
    job = workspace.job("spark_slow")
    assert job["status"] == "Running" and job["services"]["Spark UI"]["endpoint"].startswith("http://127.0.0.1:"), job
    workspace.cible("job", "cancel", "-n", "spark_slow")
    assert workspace.wait_status("spark_slow", timeout=60)["status"] == "Canceled"
    wait_until(lambda: running_app() is None, 30, interval=0.5, message="the application to end at the master")
    assert "services" not in workspace.job("spark_slow")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serverless_spark_runs_a_standalone_cluster_over_its_nodes(workspace: Workspace) -> None:
    # Two executors of one core on 2-vCPU nodes: the first node holds the driver and one, the second the other.
    text = job_yaml("", resources="resources: {instance_type: Standard_DS2_v2, runtime_version: '4.0'}",
                    instances=2)
    job = run(workspace, "spark_serverless", text)
    assert len(job["nodes"]) == 2 and job["compute"] == "serverless"
    assert output_rows(workspace, "spark_serverless") == KEPT
    log = workspace.run_log("spark_serverless")
    assert "2 worker(s) registered" in log and "kept 4 rows on spark://" in log, log[-3000:]
    logs = workspace.home / "runs" / "spark_serverless" / "artifacts"
    assert sorted(p.name for p in (logs / "user_logs" / "spark").glob("executor_*_stderr.txt")) == [
        "executor_0_stderr.txt", "executor_1_stderr.txt"]
    assert (logs / "system_logs" / "spark_master.txt").is_file()
    # The job's nodes go with it.
    wait_until(lambda: workspace.json("compute", "list") and not any(
        c["name"].startswith("serverless:spark_serverless") for c in workspace.json("compute", "list")), 120,
        message="the job's serverless nodes to go")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_spark_pool_of_cibles_nodes_runs_jobs_as_a_cluster(workspace: Workspace) -> None:
    write_yaml(workspace.cwd, "pool.yml", """\
        name: pool
        type: synapsespark
        node_size: Standard_DS2_v2
        spark_version: "4.0"
        scale_settings: {auto_scale_enabled: true, min_node_count: 0, max_node_count: 2}
        auto_pause_settings: {auto_pause_enabled: true, delay_in_minutes: 1}
        """)
    created = json.loads(workspace.cible("compute", "create", "-f", "pool.yml", "-o", "json").stdout)
    assert created["type"] == "synapsespark" and created["cible"]["provider"] == "local", created
    assert created["pool"] == {"size": "Standard_DS2_v2", "min_instances": 0, "max_instances": 2,
                               "idle_time_before_scale_down": 60}, created
    job = run(workspace, "spark_pool", job_yaml("compute: azureml:pool"))
    assert len(job["nodes"]) == 1 and output_rows(workspace, "spark_pool") == KEPT
    nodes = workspace.nodes("pool")
    assert [n["node_state"] for n in nodes] == ["idle"], nodes  # kept until its pause delay, like any cluster's


@pytest.mark.skipif(shutil.which("javac") is None or shutil.which("jar") is None, reason="no JDK (javac, jar)")
def test_a_jvm_application_runs_from_its_jar_with_its_class(workspace: Workspace) -> None:
    source = workspace.cwd / "jvm" / "src" / "hello" / "Main.java"
    source.parent.mkdir(parents=True)
    source.write_text('package hello;\npublic class Main { public static void main(String[] args) {\n'
                      '  System.out.println("hello from the JVM, " + String.join(" ", args)); } }\n')
    classes = workspace.cwd / "jvm" / "classes"
    subprocess.run(["javac", "-d", str(classes), str(source)], check=True, capture_output=True)
    (workspace.cwd / "jvm" / "code").mkdir()
    subprocess.run(["jar", "cf", str(workspace.cwd / "jvm" / "code" / "hello.jar"), "-C", str(classes), "."],
                   check=True, capture_output=True)
    run(workspace, "spark_jar", """\
        type: spark
        code: ./jvm/code
        jars: [hello.jar]
        entry:
          class_name: hello.Main
        args: one two
        compute: local
        """)
    assert "hello from the JVM, one two" in workspace.run_log("spark_jar")
