"""Child jobs: a sweep's trials and a pipeline's steps are jobs with a parent.

- `parent_job_name` (indexed: `job list --parent-job-name`) and `parent_step` (the trial's index or
  the step's name) on jobs;
- `reuse_key` (indexed): a pipeline step's result identity, looked up when a later pipeline runs the
  same step;
- `children`: a sweep's or pipeline's own record (best trial, reused and skipped steps ...).
Jobs stored before are top-level command jobs: every new column is NULL for them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("parent_job_name", sa.String(255), nullable=True))
        batch.add_column(sa.Column("parent_step", sa.String(255), nullable=True))
        batch.add_column(sa.Column("reuse_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("children", sa.JSON(), nullable=True))
        batch.create_index("ix_jobs_parent_job_name", ["parent_job_name"])
        batch.create_index("ix_jobs_reuse_key", ["reuse_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_reuse_key")
        batch.drop_index("ix_jobs_parent_job_name")
        batch.drop_column("children")
        batch.drop_column("reuse_key")
        batch.drop_column("parent_step")
        batch.drop_column("parent_job_name")
