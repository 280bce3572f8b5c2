"""Batch endpoints, their deployments, and the mini-batches of the jobs they run.

- `batch_endpoints`, `batch_deployments`: the user's specs (Azure's batch endpoints have no `--local`).
- `jobs.batch_of`: "<endpoint>/<deployment>" for a job made by `batch-endpoint invoke`
  (`batch-deployment list-jobs` reads it).
- `batch_runs`: one per batch job once its runner has listed the input (the split is recorded once).
- `mini_batches`: one row per mini-batch: its files, state, tries, rows written and last error; the
  claims of workers (worker, the job attempt, lease) so a dead worker's mini-batch is redone.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_endpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("provisioning_state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_table(
        "batch_deployments",
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("provisioning_state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_of", sa.String(130), nullable=True))
        batch.create_index("ix_jobs_batch_of", ["batch_of"])
    op.create_table(
        "batch_runs",
        sa.Column("job_name", sa.String(255), sa.ForeignKey("jobs.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_table(
        "mini_batches",
        sa.Column("job_name", sa.String(255), sa.ForeignKey("jobs.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("failed_files", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(64), nullable=True),
        sa.Column("run_attempt", sa.Integer(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_index("ix_mini_batches_state", "mini_batches", ["job_name", "state"])


def downgrade() -> None:
    op.drop_index("ix_mini_batches_state", "mini_batches")
    op.drop_table("mini_batches")
    op.drop_table("batch_runs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_batch_of")
        batch.drop_column("batch_of")
    op.drop_table("batch_deployments")
    op.drop_table("batch_endpoints")
