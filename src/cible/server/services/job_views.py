"""How a job is shown: `job show` (its nodes, queue reason, cost and status history) and the rows
of `job list`; the kinds of job a view tells apart."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cible.core.clock import Clock
from cible.core.lifecycle.jobs import JobStatus, is_terminal
from cible.core.lifecycle.nodes import LIVE
from cible.core.models.records import ClusterHandle, SlurmHandle
from cible.core.planning.scheduling import queued_reason
from cible.server.services.batch_runs import batch_view
from cible.server.services.costs import SERVERLESS_PREFIX, job_cost, jobs_cost
from cible.server.services.nodes import gpu_readings
from cible.server.services.spark_jobs import spark_services
from cible.server.store.rows import ComputeRow, JobRow, JobStatusRow, NodeRow, job_is_queued
from cible.workspace import WorkspacePaths

PARENT_TYPES = ("sweep", "pipeline", "automl")  # jobs whose work is child jobs, made by the orchestrator
CHILD_KIND = {"sweep": "trial", "pipeline": "step", "automl": "trial"}
REPLICA = "replica"  # a job that is an online deployment's replica (services/deployments.py)
BATCH = "batch"  # a job made by `batch-endpoint invoke` (services/batch_endpoints.py), listed among jobs
SERVERLESS = "serverless"
LIVE_STATES = {s.value for s in LIVE}


class JobViews:
    def __init__(self, paths: WorkspacePaths, parents, clock: Clock) -> None:  # noqa: ANN001 (a ParentJobs)
        self.paths = paths
        self.parents = parents  # a sweep's or pipeline's summary of its trials or steps
        self.clock = clock

    def resource(self, session: Session, row: JobRow, history: bool = True,
                 live_nodes: dict[str, int] | None = None) -> dict[str, Any]:
        """The job as `az ml job show` prints it, plus cible's own fields. `history` False: a listing's
        row (no cost, no status history); `live_nodes`: the page's serverless nodes, counted once."""
        resource = {
            **row.spec,
            "name": row.name,
            "type": row.job_type,
            "display_name": row.display_name,
            "experiment_name": row.experiment_name,
            "status": row.status,
            "compute": row.compute if row.compute is not None else (
                SERVERLESS if row.target.startswith(SERVERLESS_PREFIX) else row.target),
            "created_by": row.created_by,
            "creation_context": {"created_at": row.created_at.isoformat()},
            "start_time": row.started_at.isoformat() if row.started_at else None,
            "end_time": row.ended_at.isoformat() if row.ended_at else None,
            "error": row.error.model_dump(mode="json") if row.error is not None else None,
            "warnings": row.warnings,
            "target": row.target,
            "is_archived": bool(row.archived),  # Azure's isArchived
        }
        run = row.run
        if row.status == JobStatus.QUEUED.value:  # why it waits, as the pass that left it queued decided
            resource["queue_reason"] = run.queue_reason or cluster_queue_reason(session, row)
        if isinstance(run.handle, ClusterHandle):  # where it runs: the nodes, by node rank
            resource["nodes"] = list(run.handle.nodes)
            resource["attempt"] = run.handle.attempt
            if history and row.status == JobStatus.RUNNING.value and (
                    readings := gpu_readings(session, node_ids=list(run.handle.nodes))):
                resource["gpu_usage"] = readings  # `show`: its nodes' GPUs, as last read
        if isinstance(run.handle, SlurmHandle):  # the Slurm job that runs it, and as whom
            resource["slurm"] = {"job_id": run.handle.slurm_job_id, "user": run.handle.user,
                                 "run_dir": run.handle.run_dir}
            if run.handle.after_job:  # no sbatch of its own: the allocation that job's run left warm
                resource["slurm"]["kept_after_job"] = run.handle.after_job
            resource["attempt"] = run.handle.attempt
        if run.serverless is not None:  # the nodes made for it: size, tier, count, and whether they remain
            if live_nodes is None:
                live_nodes = live_serverless_nodes(session, [row.name])
            resource["serverless"] = {**run.serverless.model_dump(mode="json"),
                                      "live_nodes": live_nodes.get(row.target, 0)}
        if run.requeues:  # attempts that lost their node (preempted, node lost)
            resource["requeues"] = [{"attempt": r.attempt, "reason": r.reason, "at": r.at.isoformat()}
                                    for r in run.requeues]
        if run.plan.get("outputs"):
            resource["output_uris"] = {k: v["uri"] for k, v in run.plan["outputs"].items()}
        if row.parent_job_name is not None:
            resource["parent_job_name"] = row.parent_job_name
        if row.batch_of is not None:  # made by `batch-endpoint invoke`
            resource["batch_of"] = row.batch_of
        if row.job_type == "spark" and row.status == JobStatus.RUNNING.value:  # its Spark UI, while it runs
            if services := spark_services(self.paths.run_dir(row.name)):
                resource["services"] = services
        if row.job_type in PARENT_TYPES:
            resource.update(self.parents.summary(session, row, detailed=history))
        if row.job_type == BATCH and history:  # its mini-batches: done, failed, rows/s (services/batch_runs.py)
            resource["batch"] = batch_view(session, row.name, self.clock.now())
        if history:  # the show view: cost and history (a listing stays one query per page)
            resource["cost"] = self._cost(session, row)
            rows = session.scalars(select(JobStatusRow).where(JobStatusRow.job_name == row.name).order_by(JobStatusRow.id))
            resource["status_history"] = [
                {"status": h.to_status, "at": h.at.isoformat(), "reason": h.reason, **({"by": h.by} if h.by else {})}
                for h in rows
            ]
        return resource

    def _cost(self, session: Session, row: JobRow) -> dict[str, Any]:
        """The estimate made at submit, and what its nodes have cost so far (or in all, once it ended).
        A sweep's or pipeline's cost is its children's (nested ones' too)."""
        now = self.clock.now()
        spent = (jobs_cost(session, [c for c in descendants(session, row.name) if c.job_type not in PARENT_TYPES], now)
                 if row.job_type in PARENT_TYPES else job_cost(session, row, now))
        return {"estimate": row.run.cost_estimate, "actual" if is_terminal(row.status) else "so_far": spent}


def on_compute(compute: str):  # noqa: ANN201 (a SQL condition)
    """Jobs on `compute`, by the target they resolved to (indexed) or the compute they were given (a
    sweep's or pipeline's, whose target is its type)."""
    name = compute.strip()
    name = name[len("azureml:"):] if name.lower().startswith("azureml:") else name
    given = JobRow.compute.in_([name, f"azureml:{name}"])
    if name == SERVERLESS:
        return or_(JobRow.target.startswith(SERVERLESS_PREFIX, autoescape=True), given)
    return or_(JobRow.target == name, given)


def descendants(session: Session, name: str) -> list[JobRow]:
    """A parent's children, their children, and so on (a pipeline's sweep step's trials)."""
    found, parents = [], [name]
    while parents:
        children = list(session.scalars(select(JobRow).where(JobRow.parent_job_name.in_(parents))))
        found += children
        parents = [c.name for c in children]
    return found


def cluster_queue_reason(session: Session, row: JobRow) -> str:
    """Why a job queued on a compute with nodes waits, as the compute's last pass decided it
    (stored in the compute's status: see `queued_reason`)."""
    if row.job_type in PARENT_TYPES:
        return f"about to start its {CHILD_KIND[row.job_type]}s"
    if row.target == "local":
        return f"about to start on {row.target}"
    compute = session.get(ComputeRow, row.target)
    if compute is None:
        return f"compute '{row.target}' no longer exists; the job will fail"
    if compute.compute_type == "slurm":
        return f"about to be submitted to Slurm ({row.target})"
    pool = row.run.serverless

    def ahead() -> int:  # a job behind the head the pass stored: the queued jobs before it, FIFO
        return session.scalar(select(func.count()).where(
            job_is_queued(), JobRow.target == row.target,
            or_(JobRow.created_at < row.created_at, (JobRow.created_at == row.created_at) & (JobRow.name < row.name))))

    return queued_reason(row.target, compute.observed, row.name, row.instance_count or 1,
                         pool_size=pool.size if pool is not None else None, ahead=ahead)


def live_serverless_nodes(session: Session, names: list[str]) -> dict[str, int]:
    """Live nodes per serverless pool among these jobs' targets."""
    pools = select(JobRow.target).where(JobRow.name.in_(names),
                                        JobRow.target.startswith(SERVERLESS_PREFIX, autoescape=True))
    counted = session.execute(select(NodeRow.compute, func.count()).where(
        NodeRow.compute.in_(pools), NodeRow.state.in_(LIVE_STATES)).group_by(NodeRow.compute))
    return {compute: count for compute, count in counted}
