"""Per-user credentials of Slurm clusters (`cible compute set-credential`): a job submitted to a
Slurm compute with a login host runs as its submitter's own Slurm identity. Only the key's path
on the server's machine is stored, never a key. Deleting the compute deletes its credentials.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compute_credentials",
        sa.Column("compute", sa.String(255), sa.ForeignKey("computes.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("ssh_private_key_file", sa.Text(), nullable=True),
        sa.Column("use_ssh_agent", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("compute_credentials")
