"""A `type: spark` job at submit: where it runs, on how many nodes, and the command job that runs it
(spark-submit; core/planning/spark.py decides, the job service plans and stores it as any job)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cible.core import catalog
from cible.core.errors import CibleError, InvalidRequestError, InvalidSpecError
from cible.core.models.computes import SynapseSparkCompute
from cible.core.models.jobs import CommandJob
from cible.core.models.spark import SparkJob
from cible.core.planning import spark
from cible.core.specs.azureml.expressions import check_command
from cible.core.specs.azureml.refs import parse_compute_ref
from cible.server.services.compute_spec import attached_spark_names, compute_spec
from cible.server.services.computes import LOCAL, ComputeService
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow

SERVERLESS = "serverless"
HOST = "host"  # CIBLE_SPARK_ENVIRONMENT=host: the launcher's own Python (which has pyspark)


@dataclass(frozen=True)
class SparkSubmission:
    command: CommandJob  # what the job service plans and runs
    block: dict[str, Any]  # the launch plan's `spark` block (how the launcher gives spark-submit its master)
    notes: list[str] = field(default_factory=list)


def spark_submission(job: SparkJob, computes: ComputeService, *, default_compute: str,
                     environment: str | None = None) -> SparkSubmission:
    """How `job` runs; a 4xx naming the field when it cannot. `environment` (the workspace's
    CIBLE_SPARK_ENVIRONMENT) replaces the Spark runtime's curated environment for every Spark job."""
    try:
        check_command(job.args or "", inputs=job.inputs.keys(), outputs=job.outputs.keys())
    except InvalidSpecError as exc:
        raise InvalidSpecError(f"args: {exc.message}", details={"field": "args"}) from None
    runtime = job.resources.runtime_version if job.resources else None
    instance_type = job.resources.instance_type if job.resources else None
    if job.compute is not None:
        compute = parse_compute_ref(job.compute)
    else:  # Azure: a Spark job with resources and no compute is a serverless Spark job
        compute = SERVERLESS if instance_type else default_compute
    notes = spark.conf_notes(job)
    try:
        if compute == SERVERLESS:
            size = _serverless_size(computes, instance_type)
            mode, master, nodes = "standalone", None, spark.layout(job, size.vcpus, size.memory_gb, size.name)
        else:
            kind, pool, size = spark_target(computes, compute)
            if pool is not None and pool.spark_version:  # a Spark compute's jobs run its Spark
                runtime = pool.spark_version
            if kind == "slurm":
                raise InvalidRequestError(f"compute: '{compute}' is a Slurm cluster; Spark jobs run on local, "
                                          "serverless, a Spark compute (synapsespark) or a cluster or instance of "
                                          "cible's", details={"field": "compute"})
            if kind == LOCAL:
                mode, master, nodes = "local", None, None
            elif pool is not None and pool.master_url:
                mode, master, nodes = "attached", pool.master_url, None
            else:
                assert size is not None  # every other compute jobs run on has nodes of a size
                mode, master, nodes = "standalone", None, spark.layout(job, size.vcpus, size.memory_gb, size.name)
        line, retired = spark.runtime_line(runtime)
    except spark.SparkPlanError as exc:
        raise InvalidRequestError(str(exc), details={"field": exc.field}) from None
    notes += [retired] if retired else []
    if job.environment is not None and environment is None:
        notes.append("environment: a Spark job runs in its Spark runtime's environment "
                     f"({spark.environment_for(line).removeprefix('azureml:')}); the one given is not used")
    if nodes is not None:
        notes += nodes.notes
    if mode != "standalone" and instance_type:
        notes.append(f"resources.instance_type sizes serverless Spark only; compute {compute} has its own")
    chosen = None if environment == HOST else environment or spark.environment_for(line)
    command = spark.as_command_job(job, mode=mode, compute=compute, instance_count=nodes.nodes if nodes else 1,
                                   environment=chosen)
    block = spark.plan_block(mode, job, master=master, vcpus=size.vcpus if mode == "standalone" else None,
                             memory_gb=size.memory_gb if mode == "standalone" else None)
    return SparkSubmission(command, {**block, "runtime": line}, notes)


def _serverless_size(computes: ComputeService, instance_type: str | None) -> catalog.VmSize:
    """The size of a serverless Spark job's nodes (checked again, with the provider, when its pool is made)."""
    if instance_type is None:
        size = computes.node_providers.default_serverless_size()
        if size is None:
            raise InvalidRequestError("resources.instance_type: no serverless size fits this machine; use compute: local",
                                      details={"field": "resources.instance_type"})
        return size
    try:
        return catalog.get_size(instance_type)
    except CibleError as exc:
        raise InvalidRequestError(f"resources.instance_type: {exc.message}",
                                  details={"field": "resources.instance_type"}) from None


def spark_services(run_dir: Path) -> dict[str, Any] | None:
    """A running Spark job's services as Azure's `job show` lists them (the Spark UI its driver serves),
    from what its first launcher wrote (system_logs/spark_ui.json, shipped from a node like any log)."""
    try:
        found = json.loads((run_dir / "artifacts" / "system_logs" / "spark_ui.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    return {name: {"endpoint": url, "job_service_type": name.replace(" ", "")}
            for name, url in found.items() if isinstance(name, str) and isinstance(url, str)}


def spark_target(computes: ComputeService, name: str) -> tuple[str, SynapseSparkCompute | None, catalog.VmSize | None]:
    """(the compute's type, its spec when it is a Spark compute, the size of its nodes: None where it has none,
    as local, an attached Spark or Slurm). Refused as any job's compute is (ComputeService.require_runnable)."""
    if name == LOCAL:
        return LOCAL, None, None
    size = computes.require_runnable(name)
    with computes.store.session() as session:
        row = session.get(ComputeRow, name)
        kind = row.compute_type
        spec = compute_spec(row) if kind == "synapsespark" else None
    return kind, spec, size


def spark_masters(store: Store) -> set[str]:
    """The attached Spark computes (a master cible does not own): their jobs' drivers run on local's slots."""
    with store.session() as session:
        return attached_spark_names(session)
