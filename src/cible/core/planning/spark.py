"""How a `type: spark` job runs: pure decisions, made at submit.

A Spark job runs as a command job whose command is `spark-submit` (client deploy mode: the driver runs
in the job's first launcher, so its output is the job's std_log and its exit is the job's), with a
`spark` block in the launch plan telling the launcher which master to give it:

- `local`: on `compute: local`, Spark's own local mode, `local[N]` (N: the executors' cores);
- `standalone`: on cible's nodes (serverless Spark, a Spark pool, any cluster or instance), the
  launchers start a Spark standalone master on the first node and a worker on each node, holding the
  node's cores and memory, for this job alone; the driver runs on the first node;
- `attached`: an attached Spark (synapsespark with `cible.master_url`): the driver runs here, on the
  workspace's machine, against that master.

Azure's runtime versions name Spark lines; each runs in the curated environment of its line
(`AzureML-Spark-<line>`, a uv environment with that pyspark). Azure's retired runtimes run on the
oldest line cible keeps, with a warning.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from cible.core.models.computes import (
    MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S,
    AmlCompute,
    CibleClusterSettings,
    SynapseSparkCompute,
)
from cible.core.models.jobs import CommandJob, JobResources
from cible.core.models.spark import (
    CORES_KEYS,
    COUNT_KEYS,
    DYNAMIC,
    MEMORY_KEYS,
    SparkJob,
    memory_mb,
)

SUPPORTED_RUNTIMES = ("3.4", "3.5", "4.0")  # and every later 4.x line (curated.yaml's Spark-4.x family)
RETIRED_RUNTIMES = ("3.1", "3.2", "3.3")  # Azure's retired Spark runtimes: run on the oldest supported line
DEFAULT_RUNTIME = "3.4"
# Memory a node keeps for its OS, the worker daemon and the driver's overhead, off what its executors get.
NODE_RESERVED_MB = 1024
MASTER_READY_S = 300  # how long the first node waits for every worker to register
SPARK_MASTER_ENV = "CIBLE_SPARK_MASTER"  # set by the launcher (cible.launch.spark): the master URL spark-submit gets
SPARK_PROPERTIES_ENV = "CIBLE_SPARK_PROPERTIES"  # set by the launcher: its properties file (driver host, ports)


class SparkPlanError(ValueError):
    """The job cannot run as asked; the message names the field (the job service's 4xx)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SparkLayout:
    """How many nodes a Spark job takes and what its executors hold."""

    nodes: int
    executors: int  # at most, with dynamic allocation
    executor_cores: int
    notes: list[str] = field(default_factory=list)


def runtime_line(version: str | None) -> tuple[str, str | None]:
    """(the Spark line a runtime_version runs on, a warning or None)."""
    if version is None:
        return DEFAULT_RUNTIME, None
    text = version.strip()
    parts = text.split(".")
    line = ".".join(parts[:2]) if len(parts) >= 2 else text
    if line in SUPPORTED_RUNTIMES or re.fullmatch(r"4\.\d+", line):
        return line, None
    if line in RETIRED_RUNTIMES:
        oldest = SUPPORTED_RUNTIMES[0]
        return oldest, (f"resources.runtime_version {text}: Azure retired this Spark runtime; the job runs on "
                        f"Spark {oldest}")
    raise SparkPlanError(f"resources.runtime_version {text!r} is not a Spark runtime cible runs; use one of "
                         f"{', '.join(SUPPORTED_RUNTIMES)} or a later 4.x", "resources.runtime_version")


def environment_for(line: str) -> str:
    """The curated environment a Spark line runs in."""
    return f"azureml:AzureML-Spark-{line}@latest"


# Spark properties a job's conf often sets: a key close to one of these (and not one) is likely a typo, which
# Spark itself would ignore without a word.
KNOWN_CONF = (*CORES_KEYS, *MEMORY_KEYS, *COUNT_KEYS, DYNAMIC, "spark.executor.memoryOverhead",
              "spark.driver.memoryOverhead", "spark.driver.maxResultSize", "spark.cores.max", "spark.app.name",
              "spark.sql.shuffle.partitions", "spark.default.parallelism", "spark.serializer",
              "spark.dynamicAllocation.initialExecutors", "spark.dynamicAllocation.executorIdleTimeout",
              "spark.dynamicAllocation.shuffleTracking.enabled", "spark.sql.adaptive.enabled",
              "spark.executor.extraJavaOptions", "spark.driver.extraJavaOptions", "spark.jars.packages")


def conf_notes(job: SparkJob) -> list[str]:
    """A warning for each conf key that looks like a typo of a Spark property (Spark ignores unknown ones)."""
    notes = []
    for key in job.conf:
        if key not in KNOWN_CONF and (close := difflib.get_close_matches(key, KNOWN_CONF, n=1, cutoff=0.85)):
            notes.append(f"conf.{key}: not a Spark property cible knows; did you mean {close[0]}? (given to Spark as "
                         "written, which ignores a property it does not know)")
    return notes


def executor_count(job: SparkJob) -> int:
    """The executors a job asks for: spark.executor.instances, or maxExecutors with dynamic allocation."""
    if job.conf.get(DYNAMIC):
        return max(int(job.conf["spark.dynamicAllocation.maxExecutors"]), 1)
    return max(int(job.conf_value("spark.executor.instances")), 1)


def layout(job: SparkJob, vcpus: int, memory_gb: float, size_name: str) -> SparkLayout:
    """The nodes of size `size_name` a job takes: its executors spread over them, the driver on the first.

    Each executor's and the driver's cores and memory must fit one node (a 4xx naming the conf key).
    """
    node_mb = int(memory_gb * 1024) - NODE_RESERVED_MB
    executor_cores = int(job.conf_value("spark.executor.cores"))
    executor_mb = memory_mb(str(job.conf_value("spark.executor.memory")))
    driver_cores = int(job.conf_value("spark.driver.cores"))
    driver_mb = memory_mb(str(job.conf_value("spark.driver.memory")))
    for key, cores in (("spark.executor.cores", executor_cores), ("spark.driver.cores", driver_cores)):
        if cores > vcpus:
            raise SparkPlanError(f"conf.{key}: {cores} cores do not fit a node of {size_name} ({vcpus} vCPUs); "
                                 "ask for fewer, or a larger resources.instance_type", f"conf.{key}")
    for key, mb in (("spark.executor.memory", executor_mb), ("spark.driver.memory", driver_mb)):
        if mb > node_mb:
            raise SparkPlanError(f"conf.{key}: {mb} MiB do not fit a node of {size_name} ({memory_gb:g} GiB, "
                                 f"{node_mb} MiB of it for Spark); ask for less, or a larger resources.instance_type",
                                 f"conf.{key}")
    per_node = max(1, min(vcpus // executor_cores, node_mb // executor_mb))
    # The first node also holds the driver: the executors it has room for beside it.
    first = max(0, min((vcpus - driver_cores) // executor_cores, (node_mb - driver_mb) // executor_mb))
    executors = executor_count(job)
    nodes = 1 + math.ceil(max(0, executors - first) / per_node)
    notes = []
    if nodes > 1:
        notes.append(f"the job's {executors} executor(s) of {executor_cores} core(s) take {nodes} nodes of "
                     f"{size_name}; the driver runs on the first")
    return SparkLayout(nodes=nodes, executors=executors, executor_cores=executor_cores, notes=notes)


def submit_conf(job: SparkJob, mode: str) -> dict[str, str]:
    """The Spark properties spark-submit gets: the job's conf, its defaults, and what the mode needs."""
    conf: dict[str, Any] = {key: job.conf_value(key) for key in ("spark.driver.cores", "spark.driver.memory",
                                                                 "spark.executor.cores", "spark.executor.memory")}
    conf.update(job.conf)
    conf.setdefault("spark.app.name", job.name or "cible-spark-job")  # the job's name: its application in Spark's UI
    if job.conf.get(DYNAMIC):
        # No external shuffle service on cible's workers: executors are released once their shuffle data is not needed.
        conf.setdefault("spark.dynamicAllocation.shuffleTracking.enabled", "true")
    elif mode == "standalone" or mode == "attached":
        # A standalone master sizes an application by its cores: the executors asked for, no more.
        conf.setdefault("spark.cores.max", executor_count(job) * int(job.conf_value("spark.executor.cores")))
    conf.setdefault("spark.executor.instances", job.conf_value("spark.executor.instances"))
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in conf.items()}


def submit_command(job: SparkJob, mode: str) -> str:
    """The `spark-submit` line the job runs (its master and cible's properties come from the launcher)."""
    parts = ["spark-submit", "--master", f'"${SPARK_MASTER_ENV}"', "--deploy-mode", "client",
             "--properties-file", f'"${SPARK_PROPERTIES_ENV}"']
    for key, value in submit_conf(job, mode).items():
        parts += ["--conf", shlex.quote(f"{key}={value}")]
    jars = list(job.jars)
    primary = None
    if job.entry.class_name is not None:  # a JVM application: its JAR is the first of jars
        primary = jars.pop(0)
    for flag, items in (("--py-files", job.py_files), ("--jars", jars), ("--files", job.files),
                        ("--archives", job.archives)):
        if items:
            parts += [flag, shlex.quote(",".join(items))]
    if job.entry.class_name is not None:
        parts += ["--class", shlex.quote(job.entry.class_name), shlex.quote(primary)]
    else:
        parts.append(shlex.quote(job.entry.file))
    command = " ".join(parts)
    # The args as written: their ${{inputs.x}} / ${{outputs.y}} are rendered by the launcher, as a command's.
    return f"{command} {job.args.strip()}" if job.args and job.args.strip() else command


def as_command_job(job: SparkJob, *, mode: str, compute: str | None, instance_count: int,
                   environment: Any) -> CommandJob:
    """The command job that runs `job`: its code, inputs, outputs and environment, spark-submit as its command."""
    instance_type = job.resources.instance_type if job.resources else None
    return CommandJob(
        name=job.name, display_name=job.display_name, experiment_name=job.experiment_name,
        description=job.description, tags=job.tags, code=job.code, command=submit_command(job, mode),
        environment=environment, environment_variables=job.environment_variables, compute=compute,
        resources=JobResources(instance_count=instance_count, instance_type=instance_type),
        inputs=job.inputs, outputs=job.outputs,
    )


def plan_block(mode: str, job: SparkJob, *, master: str | None = None, vcpus: int | None = None,
               memory_gb: float | None = None) -> dict[str, Any]:
    """The launch plan's `spark` block: how the launcher gives spark-submit its master."""
    block: dict[str, Any] = {"mode": mode, "ready_timeout_s": MASTER_READY_S}
    if mode == "attached":
        block["master"] = master
    elif mode == "local":
        block["local_cores"] = executor_count(job) * int(job.conf_value("spark.executor.cores"))
    else:  # standalone: each node's worker holds the node (the launcher runs under its limits too)
        block["worker_cores"] = vcpus
        block["worker_memory_mb"] = max(512, int((memory_gb or 1) * 1024) - NODE_RESERVED_MB)
    return block


# -- Spark pools cible makes of its own nodes (synapsespark without cible.master_url) -----------------------

# Synapse's memory-optimized node sizes, as the VM sizes of the same cores and memory.
SYNAPSE_NODE_SIZES = {"small": "Standard_E4s_v3", "medium": "Standard_E8s_v3", "large": "Standard_E16s_v3",
                      "xlarge": "Standard_E32s_v3", "xxlarge": "Standard_E64s_v3"}
DEFAULT_POOL_NODES = 3  # Synapse's smallest pool
DEFAULT_POOL_PAUSE_S = 15 * 60  # Synapse's default auto-pause delay


def pool_size(spec: SynapseSparkCompute) -> str:
    """A pool's node size as a VM size: Synapse's Small ... XXLarge, or a VM size given as it is."""
    given = spec.node_size or "Small"
    return SYNAPSE_NODE_SIZES.get(given.lower(), given)


def pool_cluster(spec: SynapseSparkCompute) -> AmlCompute:
    """The cluster a Spark pool is to the cluster reconciler: its node size, between min and max nodes
    (scale_settings when auto scale is on, else up to node_count), paused (scaled to none) after its delay."""
    scale, pause = spec.scale_settings, spec.auto_pause_settings
    if scale is not None and scale.auto_scale_enabled is not False and scale.max_node_count is not None:
        low, high = scale.min_node_count or 0, scale.max_node_count
    else:
        low, high = 0, spec.node_count or DEFAULT_POOL_NODES
    if pause is not None and pause.auto_pause_enabled is False:
        idle = MAX_IDLE_TIME_BEFORE_SCALE_DOWN_S  # never paused: its nodes stay as long as a cluster's can
    else:
        idle = pause.delay_in_minutes * 60 if pause is not None and pause.delay_in_minutes else DEFAULT_POOL_PAUSE_S
    settings = spec.cible
    return AmlCompute(name=spec.name, size=pool_size(spec), min_instances=min(low, high), max_instances=high,
                      idle_time_before_scale_down=idle,
                      cible=CibleClusterSettings(provider=settings.provider if settings else None,
                                                 overcommit=settings.overcommit if settings else False))


def pool_view(spec: SynapseSparkCompute) -> dict[str, Any]:
    """What `compute show` says of a pool: the cluster cible makes of it."""
    cluster = pool_cluster(spec)
    return {"size": cluster.size, "min_instances": cluster.min_instances, "max_instances": cluster.max_instances,
            "idle_time_before_scale_down": cluster.idle_time_before_scale_down}
