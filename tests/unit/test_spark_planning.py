"""A Spark job's spec and its pure planning: Azure's YAML checked field by field, the runtime it runs on, the
nodes its executors take, the spark-submit line; and the launcher's own pure parts (Spark's failure reason,
executor logs, outputs published in place)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from cible.core.errors import InvalidSpecError
from cible.core.models.computes import SynapseSparkCompute
from cible.core.models.spark import SparkJob, memory_mb
from cible.core.planning import spark
from cible.core.specs.azureml.loader import load_spec
from cible.launch.spark import collect_executor_logs, failure_reason
from cible.launch.spark_files import publish_spark_outputs

AZURE_JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/sparkJob.schema.json
type: spark
code: ./src
entry:
  file: titanic.py
conf:
  spark.driver.cores: 1
  spark.driver.memory: 2g
  spark.executor.cores: 2
  spark.executor.memory: 2g
  spark.executor.instances: 2
inputs:
  titanic_data:
    type: uri_file
    path: azureml://datastores/workspaceblobstore/paths/data/titanic.csv
    mode: direct
outputs:
  wrangled_data:
    type: uri_folder
    path: azureml://datastores/workspaceblobstore/paths/data/wrangled/
    mode: direct
args: >-
  --titanic_data ${{inputs.titanic_data}}
  --wrangled_data ${{outputs.wrangled_data}}
identity:
  type: user_identity
resources:
  instance_type: standard_e4s_v3
  runtime_version: "3.3"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "titanic.py").write_text("print('hi')\n")
    return tmp_path


def load(folder: Path, text: str) -> SparkJob:
    path = folder / "job.yml"
    path.write_text(text)
    return load_spec(path, "job").entity


def load_error(folder: Path, text: str) -> InvalidSpecError:
    path = folder / "job.yml"
    path.write_text(text)
    with pytest.raises(InvalidSpecError) as caught:
        load_spec(path, "job")
    return caught.value


def test_azures_serverless_example_loads_with_identity_warned(folder: Path) -> None:
    path = folder / "job.yml"
    path.write_text(AZURE_JOB)
    loaded = load_spec(path, "job")
    job = loaded.entity
    assert isinstance(job, SparkJob) and job.entry.file == "titanic.py"
    assert job.code == str(folder / "src") and job.conf["spark.executor.instances"] == 2
    assert loaded.warnings == ["'identity' is accepted but not acted on by cible yet"]


@pytest.mark.parametrize(("change", "where", "says"), [
    (("file: titanic.py", "file: titanc.py"), "job.yml:5:9: entry.file", "'titanc.py' not found in the code folder"),
    (("spark.executor.cores: 2", "spark.executor.cores: two"), "conf", "not a whole number"),
    (("spark.driver.memory: 2g", "spark.driver.memory: lots"), "conf", "not a size like '2g'"),
    (("spark.executor.instances: 2", "spark.executor.instances: 2\n  executor.cores: 2"), "conf",
     "Spark properties start with 'spark.'"),
    (("entry:\n  file: titanic.py", "entry:\n  class_name: com.example.Main"), "entry.class_name",
     "list the JAR that holds it in jars"),
])
def test_a_typo_is_named_where_it_is(folder: Path, change: tuple[str, str], where: str, says: str) -> None:
    error = load_error(folder, AZURE_JOB.replace(*change))
    assert where in error.message and says in error.message, error.message


def test_dynamic_allocation_needs_its_bounds_and_instances_between_them(folder: Path) -> None:
    base = AZURE_JOB.replace("spark.executor.instances: 2", "spark.dynamicAllocation.enabled: True\n"
                             "  spark.dynamicAllocation.minExecutors: 1\n  spark.executor.instances: 5\n"
                             "  spark.dynamicAllocation.maxExecutors: 4")
    assert "between minExecutors (1) and maxExecutors (4)" in load_error(folder, base).message
    missing = base.replace("  spark.dynamicAllocation.maxExecutors: 4", "")
    assert "give spark.dynamicAllocation.minExecutors and spark.dynamicAllocation.maxExecutors" in \
        load_error(folder, missing).message


def test_runtime_versions_map_to_spark_lines_retired_ones_with_a_warning() -> None:
    assert spark.runtime_line("3.4") == ("3.4", None)
    assert spark.runtime_line("3.5.1") == ("3.5", None)
    assert spark.runtime_line("4.1") == ("4.1", None)
    assert spark.runtime_line(None) == (spark.DEFAULT_RUNTIME, None)
    line, warning = spark.runtime_line("3.3")
    assert line == "3.4" and "Azure retired this Spark runtime" in warning
    with pytest.raises(spark.SparkPlanError) as caught:
        spark.runtime_line("2.4")
    assert caught.value.field == "resources.runtime_version" and "3.4, 3.5, 4.0" in str(caught.value)
    assert spark.environment_for("3.4") == "azureml:AzureML-Spark-3.4@latest"


def test_executors_spread_over_nodes_with_the_driver_on_the_first(folder: Path) -> None:
    job = load(folder, AZURE_JOB)
    # 4 vCPUs: the driver's core leaves room for one 2-core executor beside it; the second takes a node.
    assert spark.layout(job, 4, 32, "Standard_E4s_v3").nodes == 2
    assert spark.layout(job, 8, 64, "Standard_E8s_v3").nodes == 1
    small = load(folder, AZURE_JOB.replace("spark.executor.cores: 2", "spark.executor.cores: 1")
                 .replace("spark.executor.memory: 2g", "spark.executor.memory: 512m"))
    assert spark.layout(small, 2, 7, "Standard_DS2_v2").nodes == 2


def test_an_executor_larger_than_a_node_is_refused_naming_its_key(folder: Path) -> None:
    job = load(folder, AZURE_JOB.replace("spark.executor.cores: 2", "spark.executor.cores: 8"))
    with pytest.raises(spark.SparkPlanError) as caught:
        spark.layout(job, 4, 32, "Standard_E4s_v3")
    assert caught.value.field == "conf.spark.executor.cores" and "do not fit a node of Standard_E4s_v3" in str(caught.value)
    job = load(folder, AZURE_JOB.replace("spark.executor.memory: 2g", "spark.executor.memory: 64g"))
    with pytest.raises(spark.SparkPlanError) as caught:
        spark.layout(job, 4, 32, "Standard_E4s_v3")
    assert caught.value.field == "conf.spark.executor.memory"


def test_the_submit_line_carries_conf_files_and_args(folder: Path) -> None:
    for name in ("lib.zip", "a.txt", "env.zip"):
        (folder / "src" / name).write_text("x")
    job = load(folder, AZURE_JOB.replace("entry:", "py_files: [lib.zip]\nfiles: [a.txt]\narchives: [env.zip#env]\n"
                                         "entry:"))
    words = shlex.split(spark.submit_command(job, "standalone"))
    assert words[:8] == ["spark-submit", "--master", f"${spark.SPARK_MASTER_ENV}", "--deploy-mode", "client",
                         "--properties-file", f"${spark.SPARK_PROPERTIES_ENV}", "--conf"]
    confs = {words[i + 1] for i, w in enumerate(words) if w == "--conf"}
    # A standalone master sizes the application by its cores: the executors asked for, no more.
    assert {"spark.executor.memory=2g", "spark.executor.instances=2", "spark.cores.max=4"} <= confs
    assert words[words.index("--py-files") + 1] == "lib.zip" and words[words.index("--archives") + 1] == "env.zip#env"
    tail = words[words.index("titanic.py"):]
    assert tail == ["titanic.py", "--titanic_data", "${{inputs.titanic_data}}", "--wrangled_data",
                    "${{outputs.wrangled_data}}"]


def test_dynamic_allocation_tracks_shuffles_and_sets_no_core_cap(folder: Path) -> None:
    job = load(folder, AZURE_JOB.replace("spark.executor.instances: 2", "spark.dynamicAllocation.enabled: true\n"
                                         "  spark.dynamicAllocation.minExecutors: 1\n"
                                         "  spark.dynamicAllocation.maxExecutors: 3"))
    conf = spark.submit_conf(job, "standalone")
    assert conf["spark.dynamicAllocation.shuffleTracking.enabled"] == "true" and "spark.cores.max" not in conf
    assert spark.executor_count(job) == 3


def test_a_jvm_entry_runs_the_first_jar_with_its_class(folder: Path) -> None:
    (folder / "src" / "app.jar").write_text("x")
    (folder / "src" / "dep.jar").write_text("x")
    job = load(folder, AZURE_JOB.replace("entry:\n  file: titanic.py", "jars: [app.jar, dep.jar]\n"
                                         "entry:\n  class_name: com.example.Main"))
    words = shlex.split(spark.submit_command(job, "local"))
    assert words[words.index("--jars") + 1] == "dep.jar"
    assert words[words.index("--class"):words.index("--class") + 3] == ["--class", "com.example.Main", "app.jar"]


def test_a_spark_pool_is_a_cluster_of_its_node_size_paused_after_its_delay() -> None:
    pool = SynapseSparkCompute.model_validate({
        "name": "pool", "type": "synapsespark", "node_size": "Medium",
        "scale_settings": {"auto_scale_enabled": True, "min_node_count": 1, "max_node_count": 4},
        "auto_pause_settings": {"auto_pause_enabled": True, "delay_in_minutes": 5}})
    cluster = spark.pool_cluster(pool)
    assert (cluster.size, cluster.min_instances, cluster.max_instances, cluster.idle_time_before_scale_down) == \
        ("Standard_E8s_v3", 1, 4, 300)
    fixed = spark.pool_cluster(SynapseSparkCompute.model_validate({"name": "p", "type": "synapsespark",
                                                                   "node_size": "Standard_DS2_v2", "node_count": 2}))
    assert (fixed.size, fixed.min_instances, fixed.max_instances, fixed.idle_time_before_scale_down) == \
        ("Standard_DS2_v2", 0, 2, spark.DEFAULT_POOL_PAUSE_S)


def test_a_master_url_is_a_spark_url() -> None:
    ok = SynapseSparkCompute.model_validate({"name": "x", "type": "synapsespark",
                                            "cible": {"master_url": "spark://h1:7077,h2:7077"}})
    assert ok.master_url == "spark://h1:7077,h2:7077"
    with pytest.raises(ValueError, match="is not a Spark standalone master URL"):
        SynapseSparkCompute.model_validate({"name": "x", "type": "synapsespark", "cible": {"master_url": "http://h"}})


def test_memory_sizes() -> None:
    assert [memory_mb(v) for v in ("2g", "512m", "1024k", "2gb", "1t")] == [2048, 512, 1, 2048, 1024 * 1024]


@pytest.mark.parametrize(("log", "reason"), [
    ("Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad row 3\n", "ValueError: bad row 3"),
    ("pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/x.\n"
     + "26/12/07 INFO ShutdownHookManager: Shutdown hook called\n",
     "pyspark.errors.exceptions.captured.AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/x."),
    ('Exception in thread "main" java.lang.ClassNotFoundException: com.example.Main\n\tat x\n',
     "java.lang.ClassNotFoundException: com.example.Main"),
    ("all went well\n", None),
])
def test_the_failure_reason_is_sparks_own_last_exception(tmp_path: Path, log: str, reason: str | None) -> None:
    path = tmp_path / "std_log.txt"
    path.write_text(log)
    assert failure_reason(path) == reason


def test_executor_logs_are_copied_into_user_logs(tmp_path: Path) -> None:
    for executor in ("0", "1"):
        folder = tmp_path / "work" / "app-1" / executor
        folder.mkdir(parents=True)
        (folder / "stderr").write_text(f"executor {executor}")
        (folder / "stdout").write_text("")
        (folder / "titanic.py").write_text("the job's code, not a log")
    assert collect_executor_logs(tmp_path / "work", tmp_path / "user_logs") == 4
    assert (tmp_path / "user_logs" / "spark" / "executor_1_stderr.txt").read_text() == "executor 1"
    assert sorted(p.name for p in (tmp_path / "user_logs" / "spark").iterdir()) == [
        "executor_0_stderr.txt", "executor_0_stdout.txt", "executor_1_stderr.txt", "executor_1_stdout.txt"]


def test_staged_outputs_replace_their_folders_on_the_first_node_only(tmp_path: Path) -> None:
    root, destination = tmp_path / "staging", tmp_path / "datastore" / "wrangled"
    (root / "outputs" / "out").mkdir(parents=True)
    (root / "outputs" / "out" / "part-0.csv").write_text("new")
    destination.mkdir(parents=True)
    (destination / "part-9.csv").write_text("an earlier run's")
    plan = {"spark": {"root": str(root)}, "outputs": {"out": {"mode": "direct", "local_path": str(destination)}}}
    publish_spark_outputs({**plan, "node_rank": 1})
    assert (destination / "part-9.csv").exists()  # another node: nothing moves
    publish_spark_outputs(plan)
    assert sorted(p.name for p in destination.iterdir()) == ["part-0.csv"] and not root.exists()


def test_a_conf_key_close_to_a_spark_property_is_warned_of(folder: Path) -> None:
    job = load(folder, AZURE_JOB.replace("spark.executor.memory: 2g", "spark.executor.memroy: 2g\n"
                                         "  spark.sql.shuffle.partitions: 8"))
    assert spark.conf_notes(job) == [
        "conf.spark.executor.memroy: not a Spark property cible knows; did you mean spark.executor.memory? (given to "
        "Spark as written, which ignores a property it does not know)"]


def test_links_a_job_leaves_are_not_followed_out_of_its_folders(tmp_path: Path) -> None:
    secret = tmp_path / "workspace" / "token"
    secret.parent.mkdir()
    secret.write_text("not the job's")
    executor = tmp_path / "work" / "app-1" / "0"
    executor.mkdir(parents=True)
    (executor / "stderr").symlink_to(secret)
    (tmp_path / "work" / "app-2").symlink_to(secret.parent, target_is_directory=True)
    assert collect_executor_logs(tmp_path / "work", tmp_path / "user_logs") == 0
    (secret.parent / "keys").mkdir()
    (secret.parent / "keys" / "key").write_text("the workspace's")
    root, destination = tmp_path / "staging", tmp_path / "datastore" / "out"
    root.mkdir()
    (root / "outputs").symlink_to(secret.parent, target_is_directory=True)  # outputs/keys: the workspace's keys/
    plan = {"spark": {"root": str(root)}, "outputs": {"keys": {"mode": "direct", "local_path": str(destination)}}}
    publish_spark_outputs(plan)
    assert (secret.parent / "keys" / "key").is_file() and not (destination / "key").exists()


def test_a_conf_key_set_with_dots_is_the_spark_property(folder: Path) -> None:
    path = folder / "job.yml"
    path.write_text(AZURE_JOB)
    job = load_spec(path, "job", set_overrides=["conf.spark.executor.cores=4"]).entity
    assert job.conf["spark.executor.cores"] == 4 and "spark" not in job.conf
