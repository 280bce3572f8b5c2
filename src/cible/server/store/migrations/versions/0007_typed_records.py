"""Typed, versioned records (cible.core.models.records) and writes that cannot collide.

- A compute's spec is the user's again: `target_node_count` and `provisioning_errors`, which the
  reconciler wrote into it, move to its status; an instance's runtime keys move under
  `status.instance`. Every status, run and node info gets its `schema_version`.
- A version column on jobs, computes and nodes (optimistic concurrency: an update of a row
  changed since it was read fails instead of overwriting).
- `lifecycle_history`: the moves of a compute's provisioning state, an instance's power and a
  quota request.

Each converted document is checked against its record (cible.core.models.records). One that does
not read is kept as converted and logged with its row's key, and the upgrade goes on: that row
then fails alone when loaded (UnreadableRecordError), and a job's failure keeps the document.

Revision ID: 0007
Revises: 0006
"""

import logging
import re
from typing import Any

import sqlalchemy as sa
from alembic import op
from pydantic import ValidationError

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OBSERVED = ("target_node_count", "provisioning_errors")  # written into the spec by the old reconciler
RUN_KEYS = ("plan", "handle", "attempts", "requeues", "queue_reason", "cost_estimate", "serverless")
INSTANCE_KEYS = ("power", "power_reason", "powered_on_at", "snoozed_until", "warned_for", "pending_stop",
                 "ever_ready", "schedule_checked_at", "idleness", "events")
NODE_KEYS = ("size", "family", "vcpus", "low_priority", "price_per_hour", "usage", "sessions", "last_activity_at",
             "disk")
VERSIONED = ("jobs", "computes", "nodes")
INSTANCE_TIMES = ("powered_on_at", "snoozed_until", "warned_for", "schedule_checked_at")
# A record writes a UTC time stamp with a `Z`; the previous release wrote `+00:00`, and its
# `datetime.fromisoformat` reads no `Z` on Python 3.10.
_RECORD_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
log = logging.getLogger("cible.server.migrations")


def _table(name: str, *columns: str) -> sa.Table:
    return sa.table(name, *(sa.column(c, sa.JSON() if c in ("spec", "status", "run", "info") else sa.String())
                            for c in columns))


def _compute_status(kind: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    new: dict[str, Any] = {"schema_version": 1}
    for key in OBSERVED:
        if spec.get(key) is not None:
            new[key] = spec[key]
    if status.get("quota_wait"):
        new["quota_wait"] = status["quota_wait"]
    if kind == "computeinstance":
        new["instance"] = {k: status[k] for k in INSTANCE_KEYS if status.get(k) is not None}
    return new


def upgrade() -> None:
    for name in VERSIONED:
        with op.batch_alter_table(name) as batch:
            batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "lifecycle_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lifecycle_history_entity_key", "lifecycle_history", ["entity", "key"])
    # The records of this release: imported here, as the conversion below is checked against them.
    from cible.core.models.records import ComputeStatus, JobError, NodeInfo, RunRecord

    bind = op.get_bind()
    computes = _table("computes", "name", "compute_type", "spec", "status")
    for name, kind, spec, status in bind.execute(sa.select(computes.c.name, computes.c.compute_type,
                                                           computes.c.spec, computes.c.status)).all():
        spec, status = dict(spec or {}), dict(status or {})
        new_status = _compute_status(kind, spec, status)
        user_spec = {k: v for k, v in spec.items() if k not in OBSERVED}
        _check(ComputeStatus, new_status, f"computes.status of compute {name!r}")
        bind.execute(computes.update().where(computes.c.name == name).values(spec=user_spec, status=new_status))
    jobs = _table("jobs", "name", "run", "error")
    for name, run, error in bind.execute(sa.select(jobs.c.name, jobs.c.run, jobs.c.error)).all():
        run = {"schema_version": 1, **{k: v for k, v in dict(run or {}).items() if k in RUN_KEYS and v is not None}}
        _check(RunRecord, run, f"jobs.run of job {name!r}")
        if error is not None:  # unchanged, but read as a record from now on
            _check(JobError, error, f"jobs.error of job {name!r}")
        bind.execute(jobs.update().where(jobs.c.name == name).values(run=run))
    nodes = _table("nodes", "node_id", "info")
    for node_id, info in bind.execute(sa.select(nodes.c.node_id, nodes.c.info)).all():
        info = {"schema_version": 1, **{k: v for k, v in dict(info or {}).items() if k in NODE_KEYS and v is not None}}
        _check(NodeInfo, info, f"nodes.info of node {node_id!r}")
        bind.execute(nodes.update().where(nodes.c.node_id == node_id).values(info=info))


def _check(model: Any, document: Any, where: str) -> None:
    """Log `document` (named by its row's key: `where`) when it does not read as `model`; the
    upgrade goes on, and that row fails alone when loaded."""
    try:
        model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"
                             for e in error.errors()[:5])
        log.warning("%s does not read as a %s after the upgrade (%s); kept as converted: it fails alone when "
                    "loaded, and the rest of the workspace is unaffected", where, model.__name__, problems)


def _old_time(value: Any) -> Any:
    return value[:-1] + "+00:00" if isinstance(value, str) and _RECORD_TIME.match(value) else value


def _old_instance(instance: dict[str, Any]) -> dict[str, Any]:
    old = {k: _old_time(v) if k in INSTANCE_TIMES else v for k, v in instance.items()}
    if old.get("events"):
        old["events"] = [{**event, "at": _old_time(event.get("at"))} for event in old["events"]]
    return old


def downgrade() -> None:
    """The shapes the previous release reads: observed fields back in the spec, an instance's keys at
    the top of its status, no schema_version, time stamps as it wrote them."""
    bind = op.get_bind()
    computes = _table("computes", "name", "spec", "status")
    for name, spec, status in bind.execute(sa.select(computes.c.name, computes.c.spec, computes.c.status)).all():
        status = dict(status or {})
        old_spec = {**dict(spec or {}), **{k: status[k] for k in OBSERVED if status.get(k) is not None}}
        old_status = {**_old_instance(status.get("instance") or {}),
                      **({"quota_wait": status["quota_wait"]} if status.get("quota_wait") else {})}
        bind.execute(computes.update().where(computes.c.name == name).values(spec=old_spec,
                                                                             status=old_status or None))
    jobs = _table("jobs", "name", "run")
    for name, run in bind.execute(sa.select(jobs.c.name, jobs.c.run)).all():
        old_run = {k: v for k, v in dict(run or {}).items() if k != "schema_version"}
        if old_run.get("requeues"):
            old_run["requeues"] = [{**r, "at": _old_time(r.get("at"))} for r in old_run["requeues"]]
        bind.execute(jobs.update().where(jobs.c.name == name).values(run=old_run))
    nodes = _table("nodes", "node_id", "info")
    for node_id, info in bind.execute(sa.select(nodes.c.node_id, nodes.c.info)).all():
        old_info = {k: _old_time(v) if k == "last_activity_at" else v
                    for k, v in dict(info or {}).items() if k != "schema_version"}
        bind.execute(nodes.update().where(nodes.c.node_id == node_id).values(info=old_info))
    op.drop_index("ix_lifecycle_history_entity_key", table_name="lifecycle_history")
    op.drop_table("lifecycle_history")
    for name in VERSIONED:
        with op.batch_alter_table(name) as batch:
            batch.drop_column("version")
