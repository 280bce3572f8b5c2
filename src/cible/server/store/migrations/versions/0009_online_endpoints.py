"""Online endpoints and their deployments.

- `online_endpoints`: keyed by (name, local): a `--local` endpoint is apart from a workspace one of
  the same name, as on Azure. `keys` holds the salts of its keys, never a key.
- `online_deployments`: keyed by (endpoint, local, name); `generation` counts the changes of what
  its replicas run; `status` holds its replicas (jobs of type `replica`) and its scaling state.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "online_endpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("local", sa.Boolean(), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("traffic", sa.JSON(), nullable=False),
        sa.Column("mirror_traffic", sa.JSON(), nullable=False),
        sa.Column("provisioning_state", sa.String(32), nullable=False),
        sa.Column("keys", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_table(
        "online_deployments",
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("local", sa.Boolean(), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("provisioning_state", sa.String(32), nullable=False),
        sa.Column("status", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    )


def downgrade() -> None:
    op.drop_table("online_deployments")
    op.drop_table("online_endpoints")
