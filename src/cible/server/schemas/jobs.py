"""Jobs: a job as `az ml job show` prints it plus cible's fields, its listing and its validation."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, IsoTime, Number, Page


class CreationContext(Envelope):
    created_at: IsoTime = Field(description="when it was created (ISO 8601)")


class StatusChange(Envelope):
    """One step of a job's status history, oldest first."""

    status: str = Field(description="the status it moved to (Azure's job statuses)")
    at: IsoTime = Field(description="when (ISO 8601)")
    reason: str | None = Field(None, description="why, when known")
    by: str | None = Field(None, description="the user who made the move (absent: cible's own)")


class CostEstimate(Envelope):
    """What a job may cost, worked out at submit from its compute's size."""

    currency: str = Field(description="USD")
    per_hour: Number = Field(description="the price of its nodes per hour")
    max: Number | None = Field(None, description="at most, over its timeout; null without a timeout")
    note: str | None = Field(None, description="where the prices come from")


class JobCost(Envelope):
    """The job's cost: the estimate, and `so_far` while it runs or `actual` once it ended."""

    estimate: CostEstimate | None = Field(None, description="the estimate at submit; null on local compute")
    so_far: Number | None = Field(None, description="what its nodes cost so far (a job not ended)")
    actual: Number | None = Field(None, description="what its nodes cost (a job that ended)")


class ServerlessNodes(Envelope):
    """A serverless job's own nodes."""

    size: str = Field(description="their VM size")
    tier: str = Field(description="dedicated or low_priority")
    max_instances: int = Field(description="how many")
    live_nodes: int = Field(description="how many remain now")


class Requeue(Envelope):
    """An attempt that lost its node (preempted, node lost) and was queued again."""

    attempt: int | None = Field(None, description="the attempt that lost its node")
    reason: str | None = Field(None, description="why")
    at: IsoTime | None = Field(None, description="when (ISO 8601)")


class Job(Envelope):
    """A job: its spec as submitted (Azure ML command job YAML fields, passed through), then
    the server's fields. `cost` and `status_history` are in the show view, not in a listing;
    `mlflow_run_id`, `metrics` and `params` in the show view once the job has an MLflow run."""

    name: str = Field(description="the job's name (its id in the workspace)")
    type: str = Field(description="the job type: command, sweep or pipeline")
    display_name: str = Field(description="its display name (one is made from the name when none is given)")
    experiment_name: str = Field(description="its experiment (Default when none is given)")
    status: str = Field(description="Azure's job status: NotStarted, Queued, Preparing, Running, Completed, ...")
    command: str | None = Field(None, description="the command it runs")
    description: str | None = Field(None, description="its description")
    tags: dict[str, Any] | None = Field(None, description="its tags")
    compute: str | None = Field(None, description="the compute it was submitted to (serverless for its own nodes)")
    created_by: str | None = Field(None, description="who submitted it, as the client said")
    creation_context: CreationContext | None = Field(None, description="when it was created")
    start_time: IsoTime | None = Field(None, description="when it started running (ISO 8601)")
    end_time: IsoTime | None = Field(None, description="when it ended (ISO 8601)")
    error: dict[str, Any] | None = Field(None, description="why it failed: {code, message}")
    warnings: list[Any] | None = Field(None, description="what the submit warned of")
    target: str | None = Field(None, description="the compute it runs on (serverless:<job> for its own nodes)")
    is_archived: bool | None = Field(None, description="hidden from `job list` (Azure's isArchived)")
    queue_reason: str | None = Field(None, description="why it waits (a queued job)")
    nodes: list[str] | None = Field(None, description="the nodes it runs on, by node rank (a cluster job)")
    gpu_usage: dict[str, list[dict[str, Any]]] | None = Field(
        None, description="while it runs (show): its nodes' GPUs as their agents last read them, by node id")
    attempt: int | None = Field(None, description="its attempt on the nodes (a cluster job)")
    serverless: ServerlessNodes | None = Field(None, description="its own nodes (a serverless job)")
    requeues: list[Requeue] | None = Field(None, description="attempts that lost their node")
    batch: dict[str, Any] | None = Field(None, description="a batch job's mini-batches in the show view: total, done, "
                                                           "failed, rows, rows_per_second, failed_mini_batches "
                                                           "(schema BatchProgress); null until its runner starts")
    output_uris: dict[str, str] | None = Field(None, description="where each named output is written")
    cost: JobCost | None = Field(None, description="its cost (show view)")
    status_history: list[StatusChange] | None = Field(None, description="its statuses, oldest first (show view)")
    mlflow_run_id: str | None = Field(None, description="its MLflow run (show view)")
    metrics: dict[str, Any] | None = Field(None, description="its MLflow run's latest metrics (show view)")
    params: dict[str, Any] | None = Field(None, description="its MLflow run's params (show view)")
    metrics_unavailable: str | None = Field(None, description="why the metrics could not be read (MLflow down)")
    parent_job_name: str | None = Field(None, description="the sweep or pipeline this trial or step belongs to")
    batch_of: str | None = Field(None, description="a job made by `batch-endpoint invoke`: <endpoint>/<deployment>")
    best_trial: dict[str, Any] | None = Field(None, description="a sweep's best trial so far: name, metric, parameters")
    trial_counts: dict[str, int] | None = Field(None, description="a sweep's trials by status")
    trials: list[dict[str, Any]] | None = Field(None, description="a sweep's trials: index, name, status, parameters, "
                                                                "metric, why a policy stopped it (show view)")
    steps: list[dict[str, Any]] | None = Field(None, description="a pipeline's steps: name, status (Reused for a "
                                                               "step whose earlier result serves), job, compute")


JobPage = Page[Job]


class JobValidation(Envelope):
    """`az ml job validate`: the submit's checks passed; where the job would run and what it would warn of."""

    passed: bool = Field(description="true: a submit would be accepted (a refusal is an error answer)")
    name: str = Field(description="the job's name")
    exists: bool = Field(description="a job of this name exists: the submit would answer it (or update its tags)")
    target: str = Field(description="the compute it runs (or would run) on")
    instance_count: int | None = Field(None, description="its nodes (a new job)")
    cost_estimate: CostEstimate | None = Field(None, description="what it may cost (a new job; null on local)")
    warnings: list[Any] = Field(description="what the submit would warn of")


class SubmittedJob(Envelope):
    name: str = Field(description="the job's name")
    status: str = Field(description="Queued for a job this request made; a stored job's status otherwise")
    target: str | None = Field(None, description="the compute it runs on")
    created: bool = Field(description="false: a job of this name was already stored, and is answered as it is")
    warnings: list[Any] = Field(description="what its submit warned of")


class JobBatch(Envelope):
    value: list[SubmittedJob] = Field(description="each job, in the order sent")
