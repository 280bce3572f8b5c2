"""The studio's sign-in codes and browser sessions, kept by digest so that both survive a restart
(a code stays one-use; sign-out holds) while no secret is stored.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studio_grants",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_studio_grants_expires_at", "studio_grants", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_studio_grants_expires_at", table_name="studio_grants")
    op.drop_table("studio_grants")
