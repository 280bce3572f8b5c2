"""The warm agents' lifetimes (`CIBLE_WARM_NODES`): the cost report bills the pool kept ahead of need.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "warm_spans",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("size", sa.String(64), nullable=False),
        sa.Column("price_per_hour", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alive_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_warm_spans_ended_at", "warm_spans", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_warm_spans_ended_at", "warm_spans")
    op.drop_table("warm_spans")
