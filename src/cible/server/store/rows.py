"""ORM rows. Specs and results are JSON documents with a schema version, never pickles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cible.core.lifecycle.jobs import TERMINAL
from cible.core.models.endpoint_records import DeploymentStatus, EndpointKeys
from cible.core.models.records import ChildrenRecord, ComputeStatus, JobError, NodeInfo, RunRecord
from cible.server.store.columns import RecordJSON, UTCDateTime


class Base(DeclarativeBase):
    # Every timestamp is stored in UTC and read back aware, on SQLite as on PostgreSQL (see columns.py).
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


# The passes read the jobs still to end among every job ever run. ix_jobs_live holds those alone (a
# partial index), and `job_is_live` says the same condition with the same literals, so that SQLite and
# PostgreSQL match the query to the index (a bound list of statuses hides it from both): a pass then
# costs the live jobs, not the workspace's history. It is in FIFO order (created_at, name), and holds the
# status and target, by which the job reconciler skips a cluster's queued jobs without reading their rows.
# ix_jobs_queue, the queued jobs by target in FIFO order, makes a cluster's queue head a range (`job_is_queued`).
ENDED_STATUSES = tuple(sorted(s.value for s in TERMINAL))
_LIVE_PREDICATE = f"status NOT IN ({', '.join(repr(s) for s in ENDED_STATUSES)})"
_QUEUED_PREDICATE = "status = 'Queued'"


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_live", "created_at", "name", "status", "target",
              sqlite_where=text(_LIVE_PREDICATE), postgresql_where=text(_LIVE_PREDICATE)),
        Index("ix_jobs_queue", "target", "created_at", "name",
              sqlite_where=text(_QUEUED_PREDICATE), postgresql_where=text(_QUEUED_PREDICATE)),
    )

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_type: Mapped[str] = mapped_column(String(32), default="command")
    display_name: Mapped[str] = mapped_column(String(255))
    experiment_name: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    # The compute as the user wrote it, and the target it resolved to.
    compute: Mapped[str | None] = mapped_column(String(255), nullable=True)
    target: Mapped[str] = mapped_column(String(255), index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # resources.instance_count
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[JobError | None] = mapped_column(RecordJSON(JobError, optional=True), nullable=True)
    # Where and how the run happens (plan, handle, attempts, wait reason): written by the server.
    run: Mapped[RunRecord] = mapped_column(RecordJSON(RunRecord), nullable=True, default=RunRecord)
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)  # who submitted it
    # Hidden from `job list` (Azure's isArchived); only an ended job is archived.
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A sweep's trial or a pipeline's step: its parent job, and which trial (its index) or step it is.
    parent_job_name: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    parent_step: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # A pipeline step's result identity: a later step with the same key reuses this job's outputs.
    reuse_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # A sweep's or pipeline's own state beyond its children (ChildrenRecord); None for other jobs.
    children: Mapped[ChildrenRecord | None] = mapped_column(RecordJSON(ChildrenRecord, optional=True), nullable=True)
    # A job made by `batch-endpoint invoke`: "<endpoint>/<deployment>" (`batch-deployment list-jobs`).
    batch_of: Mapped[str | None] = mapped_column(String(130), nullable=True, index=True)
    # Optimistic concurrency: every update checks and bumps it, so two writers never lose each other's write.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


def job_is_live() -> ColumnElement[bool]:
    """A job not ended yet, as ix_jobs_live's predicate says it (the statuses rendered as literals)."""
    return JobRow.status.not_in(bindparam("ended_statuses", list(ENDED_STATUSES), expanding=True, literal_execute=True))


def job_is_queued() -> ColumnElement[bool]:
    """A job waiting in its compute's queue, as ix_jobs_queue's predicate says it."""
    return JobRow.status == bindparam("queued_status", "Queued", literal_execute=True)


class JobStatusRow(Base):
    """Status history; also the audit log of every job."""

    __tablename__ = "job_status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime]
    by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the user who made the move; None: cible


class ComputeRow(Base):
    __tablename__ = "computes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    compute_type: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    provisioning_state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # What the server observed and decided (target node count, start failures, an instance's power):
    # the spec stays exactly as the user wrote it.
    # (Named `observed` in the code: `status` is the word the lifecycle test reserves for state moves.)
    observed: Mapped[ComputeStatus] = mapped_column("status", RecordJSON(ComputeStatus), nullable=True,
                                                    default=ComputeStatus)
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class CredentialRow(Base):
    """A user's own login to a Slurm cluster's login host (`cible compute set-credential`): jobs they
    submit there run as that Slurm identity. The key stays a file on the server's machine: its
    path is stored, never its content. `user` is the X-Cible-User the client sent ("" without one)."""

    __tablename__ = "compute_credentials"

    compute: Mapped[str] = mapped_column(ForeignKey("computes.name", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    username: Mapped[str] = mapped_column(String(255))  # the Unix (and Slurm) user on the login host
    ssh_private_key_file: Mapped[str | None] = mapped_column(Text, nullable=True)  # None: the server's ssh-agent
    use_ssh_agent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime]


class AssetRow(Base):
    """A version of a registered asset: environment, data or model (Azure's versioned assets)."""

    __tablename__ = "assets"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(index=True)
    # Insertion order: `@latest` is the most recently created version, as on Azure.
    sequence: Mapped[int] = mapped_column(Integer, index=True)
    # This version archived (Azure's isArchived): hidden from lists and from `latest`, still got by version.
    archived: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ArchivedAssetRow(Base):
    """A whole asset archived (Azure archives the container: every version, present and future), kept
    apart from each version's own flag so that restoring the asset leaves archived versions archived."""

    __tablename__ = "archived_assets"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    archived_at: Mapped[datetime]


class NodeRow(Base):
    """A node of a compute cluster. Its state changes only through the cluster reconciler."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    compute: Mapped[str] = mapped_column(String(255), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32), index=True)
    job_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What the node is (size, tier, price) and what its agent last reported (usage, sessions, disk).
    info: Mapped[NodeInfo] = mapped_column(RecordJSON(NodeInfo), default=NodeInfo)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    idle_since: Mapped[datetime | None] = mapped_column(nullable=True)
    last_heartbeat: Mapped[datetime | None] = mapped_column(nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class NodeStateRow(Base):
    __tablename__ = "node_state_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.node_id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime]
    job_name: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)  # the job it runs (cost)


class QuotaRow(Base):
    """A workspace vCPU quota: per VM family (dedicated), "total" (dedicated) or "low_priority"."""

    __tablename__ = "quotas"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class QuotaRequestRow(Base):
    """A request to raise a quota, approved or denied by an admin."""

    __tablename__ = "quota_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(64))
    current_vcpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    requested_vcpus: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class LifecycleRow(Base):
    """Status history of the entities that are not jobs or nodes (a compute's provisioning state, an
    instance's power, a quota request): one row per move, written by their transition function."""

    __tablename__ = "lifecycle_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(32))  # compute, instance_power, quota_request
    key: Mapped[str] = mapped_column(String(255))  # the compute's name, the request's id
    from_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime]
    by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the user who made the move; None: cible
    __table_args__ = (Index("ix_lifecycle_history_entity_key", "entity", "key"),)


class OnlineEndpointRow(Base):
    """An online endpoint. A local one (`--local`) is apart: the same name may exist both ways, as on Azure."""

    __tablename__ = "online_endpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    local: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # as the user wrote it, but traffic and mirror_traffic
    traffic: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mirror_traffic: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provisioning_state: Mapped[str] = mapped_column(String(32))
    keys: Mapped[EndpointKeys] = mapped_column(RecordJSON(EndpointKeys))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class OnlineDeploymentRow(Base):
    """A deployment of an online endpoint: its spec (the user's) and its replicas (the server's)."""

    __tablename__ = "online_deployments"

    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    local: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Bumped by every change of what a replica runs (model, code, environment ...): replicas of an
    # older generation are replaced one at a time.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    provisioning_state: Mapped[str] = mapped_column(String(32))
    observed: Mapped[DeploymentStatus] = mapped_column("status", RecordJSON(DeploymentStatus), nullable=True,
                                                       default=DeploymentStatus)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class BatchEndpointRow(Base):
    """A batch endpoint: the user's spec (its `defaults.deployment_name` says which deployment `invoke` uses)."""

    __tablename__ = "batch_endpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    provisioning_state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class BatchDeploymentRow(Base):
    """A deployment of a batch endpoint: what each invocation's job runs, and with which settings."""

    __tablename__ = "batch_deployments"

    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    provisioning_state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class BatchRunRow(Base):
    """A batch job's split, recorded once (by its first runner to list the input), and its outcome."""

    __tablename__ = "batch_runs"

    job_name: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"), primary_key=True)
    total: Mapped[int] = mapped_column(Integer)  # mini-batches
    files: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)  # None while running
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class MiniBatchRow(Base):
    """One mini-batch of a batch job: its files (relative to the input), state, tries and result."""

    __tablename__ = "mini_batches"
    __table_args__ = (Index("ix_mini_batches_state", "job_name", "state"),)

    job_name: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    files: Mapped[list[Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | failed
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # failed tries so far
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failed_files: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    __mapper_args__ = {"version_id_col": version}


class StudioGrantRow(Base):
    """A studio sign-in code (one use, minutes) or a browser session (hours), by the SHA-256 of its
    secret: the secret itself lives only in the link printed or the browser's cookie."""

    __tablename__ = "studio_grants"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # code | session
    created_at: Mapped[datetime]
    user: Mapped[str | None] = mapped_column(String(64), nullable=True)  # whom it acts as (None: the first Owner)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class WarmSpanRow(Base):
    """One warm agent's time in the local provider's pool (cible.backends.local.warm): billed from its
    start until it became a node or was stopped. `alive_at`: when the pool last said it still ran,
    where a span left open by a crash is closed at the next start."""

    __tablename__ = "warm_spans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[str] = mapped_column(String(64))
    price_per_hour: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime]
    alive_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)


class UserRow(Base):
    """A workspace user and their role (cible.core.roles)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True, unique=True, index=True)  # OIDC sign-in


class UserTokenRow(Base):
    """A user's personal token, by the SHA-256 of its secret: the secret is shown once, when it is made."""

    __tablename__ = "user_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # what list and revoke name it by
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)  # to the minute (users.py)


class DeviceLoginRow(Base):
    """A CLI's pending `cible login` (RFC 8628's device flow): the CLI holds the device code (stored by
    its SHA-256 only) and polls; a signed-in browser approves the user code; the token is made, shown
    once, at the poll that follows, and the row goes."""

    __tablename__ = "device_logins"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client: Mapped[str] = mapped_column(String(100))  # what the CLI said it runs on (shown to the approver)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    denied: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    polled_at: Mapped[datetime | None] = mapped_column(nullable=True)  # RFC 8628's slow_down
