"""Compute instances, quotas and cost: an instance's runtime state (power, snooze, events) and
who created a compute or job (cost by user, the instance's owner); which job a node ran in each
state change (cost per job from the node history); workspace vCPU quotas and increase requests.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("computes") as batch:
        batch.add_column(sa.Column("status", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(255), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("created_by", sa.String(255), nullable=True))
    with op.batch_alter_table("node_state_history") as batch:
        batch.add_column(sa.Column("job_name", sa.String(255), nullable=True))
    op.create_index("ix_node_state_history_job_name", "node_state_history", ["job_name"])  # a job's nodes
    op.create_table(
        "quotas",
        sa.Column("scope", sa.String(64), primary_key=True),  # a VM family, "total" or "low_priority"
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "quota_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("current_vcpus", sa.Integer(), nullable=True),
        sa.Column("requested_vcpus", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("quota_requests")
    op.drop_table("quotas")
    op.drop_index("ix_node_state_history_job_name", "node_state_history")
    with op.batch_alter_table("node_state_history") as batch:
        batch.drop_column("job_name")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("created_by")
    with op.batch_alter_table("computes") as batch:
        batch.drop_column("created_by")
        batch.drop_column("status")
