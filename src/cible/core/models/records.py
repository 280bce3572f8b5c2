"""What the server keeps about a job's run and a compute's observed state: typed, versioned records.

Each is stored as JSON in its row and parsed once when the row is loaded (see
`cible.server.store.columns.Record`). They are frozen: a change is a new record
(`record.model_copy(update=...)`) assigned back to the row, so the store sees every write.
`schema_version` says which shape a stored document has; the migrations convert older ones.

The user's spec is never written by the server: what it observes (a cluster's target node
count, why its nodes fail to start, an instance's power) lives here, in the compute's status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from cible.core.lifecycle.instance_power import Power

RUN_RECORD_VERSION = 1
COMPUTE_STATUS_VERSION = 1
MAX_EVENTS = 50  # an instance keeps its latest events


class Record(BaseModel):
    """A stored record: frozen, and extra keys refused so a typo in the code is an error, not data."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# -- a job's run -------------------------------------------------------------------------


class LocalHandle(Record):
    """A launcher started by the server's own process runner (the `local` compute)."""

    runner: Literal["local"] = "local"
    run_dir: str
    pid: int
    create_time: float | None = None  # with the pid, tells the launcher from a later process


class ClusterHandle(Record):
    """A job placed on a cluster's nodes: one launcher per node, started by each node's agent."""

    runner: Literal["cluster"] = "cluster"
    job_name: str
    compute: str
    attempt: int
    nodes: list[str]  # node ids, by node rank
    node_addrs: list[str]
    master_port: int


PILOT_NODE_PREFIX = "slurm-job-"


def pilot_node_id(slurm_job_id: str, rank: int) -> str:
    """The node id of the pilot of node rank `rank` of Slurm job `slurm_job_id` (both sides derive it)."""
    return f"{PILOT_NODE_PREFIX}{slurm_job_id}-{rank}"


class SlurmHandle(Record):
    """A job submitted to a Slurm cluster: one Slurm job, whose tasks (one per node) each run a
    pilot (cible.agent.pilot) that runs the job's launcher there. `nodes` are the pilots' ids,
    by node rank (`pilot_node_id`), as their agent routes name them."""

    runner: Literal["slurm"] = "slurm"
    job_name: str
    compute: str
    attempt: int
    user: str  # the Unix user the Slurm job runs as
    run_dir: str  # the attempt's folder on the cluster's shared filesystem (script, token, Slurm's output)
    master_port: int
    slurm_job_id: str | None = None  # None: sbatch refused it (`refused` says why)
    nodes: list[str] = Field(default_factory=list)
    refused: str | None = None
    # The Slurm job outlives this run: once it Completed, its pilots wait for the next job of the
    # same user and request (backends/slurm/allocations.py).
    keeps_allocation: bool = False
    after_job: str | None = None  # this run took the allocation that job's run left (no sbatch of its own)


RunHandle = Annotated[Union[LocalHandle, ClusterHandle, SlurmHandle], Field(discriminator="runner")]


class Requeue(Record):
    """An attempt that lost its node (preempted, node lost) and went back to the queue."""

    attempt: int | None = None
    reason: str
    at: datetime


class ServerlessPool(Record):
    """The nodes made for a serverless job: their size, tier and count."""

    size: str
    tier: str
    max_instances: int


class RunRecord(Record):
    """Where and how a job runs, written by the server as it submits, places and follows it."""

    schema_version: Literal[1] = RUN_RECORD_VERSION
    plan: dict[str, Any] = Field(default_factory=dict)  # the launch plan: the launcher's own format
    handle: RunHandle | None = None  # set once launched or placed; None while it waits
    attempts: int = 0
    requeues: list[Requeue] = Field(default_factory=list)
    queue_reason: str | None = None  # why it waits, as decided by the pass that left it queued
    cost_estimate: dict[str, Any] | None = None
    serverless: ServerlessPool | None = None

    @property
    def launched(self) -> bool:
        return self.handle is not None

    def cluster_nodes(self) -> list[str]:
        return list(self.handle.nodes) if isinstance(self.handle, ClusterHandle) else []


# -- a compute's observed state ----------------------------------------------------------


class ProvisioningError(Record):
    """Azure's provisioning_errors item: why a compute's nodes cannot start, or its pass failed."""

    code: str
    message: str


class StartFailures(Record):
    """Nodes that died before they were ready, in a row: kept so the back-off survives a restart."""

    count: int = 0
    retry_at: datetime | None = None  # no node is started before this
    last_node: str | None = None
    last_reason: str | None = None


class DecidedQueue(Record):
    """A compute's queue as its last pass decided it, so `job show` says why each queued job waits
    without the pass writing every queued job's row (their positions all move when the head starts)."""

    jobs: list[str] = Field(default_factory=list)  # the waiting jobs, head first
    head: str | None = None  # the head's unmet condition: "waiting for 2 nodes: 1 idle, 1 starting, max 2"
    # Every waiting job's reason alike, said instead of a queue position: a stopped instance, a
    # serverless pool's own nodes.
    reason_for_all: str | None = None
    notes: list[str] = Field(default_factory=list)  # said after each job's reason: the engine has no room
    # The pass read the queue's head only (what it can place, and enough to size the cluster): more
    # jobs wait behind `jobs`, and one of them counts the jobs ahead of it to say its position.
    more: bool = False


class InstanceEvent(Record):
    at: datetime
    kind: str
    message: str




class InstanceState(Record):
    """A compute instance's runtime state: what its user asked of its power, and what its pass saw."""

    power: Power = Power.ON
    power_reason: str | None = None
    powered_on_at: datetime | None = None
    snoozed_until: datetime | None = None
    warned_for: datetime | None = None  # the idle-shutdown time a warning was given for
    pending_stop: str | None = None  # a schedule's stop, waiting for the running job to end
    ever_ready: bool = False
    schedule_checked_at: datetime | None = None
    idleness: dict[str, Any] | None = None  # the last verdict of the idle-shutdown planner, as shown
    events: list[InstanceEvent] = Field(default_factory=list)


class ComputeStatus(Record):
    """What the server observed and decided about a compute; the spec stays the user's."""

    schema_version: Literal[1] = COMPUTE_STATUS_VERSION
    target_node_count: int | None = None
    provisioning_errors: list[ProvisioningError] | None = None
    quota_wait: str | None = None  # why nodes wait for quota (the jobs' wait reason says it too)
    start_failures: StartFailures | None = None
    instance: InstanceState | None = None  # compute instances only
    queue: DecidedQueue | None = None  # None until the compute's first pass


# -- a node ----------------------------------------------------------------------------


class NodeInfo(Record):
    """What a node is (its size, tier and price, fixed at start) and what its agent last reported."""

    schema_version: Literal[1] = 1
    size: str | None = None
    family: str | None = None
    vcpus: int | None = None
    low_priority: bool = False
    price_per_hour: float = 0.0
    usage: dict[str, Any] | None = None  # the agent's last resource use (cpu, memory, gpus)
    sessions: list[str] = Field(default_factory=list)  # an instance's open sessions
    last_activity_at: datetime | None = None
    disk: dict[str, Any] | None = None  # an instance's disk use against its OS disk


# -- a sweep's or pipeline's children ------------------------------------------------------


class ChildrenRecord(Record):
    """What the orchestrator keeps about a sweep's trials or a pipeline's steps beyond the child jobs
    themselves (which are the source of truth: their rows carry parent_job_name and parent_step)."""

    schema_version: Literal[1] = 1
    best_trial: str | None = None  # a sweep's best trial so far
    terminated: dict[str, str] = Field(default_factory=dict)  # trial -> why its policy stopped it
    reused: dict[str, str] = Field(default_factory=dict)  # step -> the earlier job whose outputs it reuses
    skipped: list[str] = Field(default_factory=list)  # steps that never run (an upstream step failed)
    components: dict[str, dict[str, Any]] = Field(default_factory=dict)  # registered refs, resolved at submit
    metrics: dict[str, list[float]] = Field(default_factory=dict)  # trial -> its primary metric, as logged
    # An AutoML job's: its searches' code (a snapshot URI fixed at submit) and environment (None: the
    # launcher's own Python), and each ended search's result.json, summarised (child -> result).
    trial_code: str | None = None
    trial_environment: str | None = None
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)


# -- a job's end -----------------------------------------------------------------------


class JobError(Record):
    """Why a job failed or was canceled: Azure's error object."""

    model_config = ConfigDict(frozen=True, extra="allow")  # a launcher's error may carry more (details, target)

    code: str
    message: str
