"""Archiving (`az ml job|model|data|environment archive`): a flag on jobs and on asset versions, and
a table of whole assets archived (Azure's archived container: all its versions, later ones too).
Rows stored before are not archived.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("assets") as batch:
        batch.add_column(sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "archived_assets",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("archived_assets")
    with op.batch_alter_table("assets") as batch:
        batch.drop_column("archived")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("archived")
