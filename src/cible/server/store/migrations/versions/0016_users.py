"""Workspace users with their roles, and their personal tokens (kept by the SHA-256 of the secret only);
the history tables name the user who made each move (`by`: none for cible's own moves).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None
HISTORIES = ("job_status_history", "lifecycle_history")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
    )
    op.create_table(
        "user_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("user", sa.String(64), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_user_tokens_user", "user_tokens", ["user"])
    for table in HISTORIES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("by", sa.String(64), nullable=True))


def downgrade() -> None:
    for table in HISTORIES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("by")
    op.drop_index("ix_user_tokens_user", table_name="user_tokens")
    op.drop_table("user_tokens")
    op.drop_table("users")
