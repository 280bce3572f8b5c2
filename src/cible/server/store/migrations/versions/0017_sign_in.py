"""Sign-in from outside: a user's e-mail (how an OIDC sign-in finds them), the user a studio session acts
as, when a personal token was last used, and the CLI's pending device logins (by the digest of their
device code only).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
        batch.create_index("ix_users_email", ["email"], unique=True)
    with op.batch_alter_table("user_tokens") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("studio_grants") as batch:
        batch.add_column(sa.Column("user", sa.String(64), nullable=True))
    op.create_table(
        "device_logins",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("user_code", sa.String(16), nullable=False, unique=True),
        sa.Column("client", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=True),
        sa.Column("denied", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("device_logins")
    with op.batch_alter_table("studio_grants") as batch:
        batch.drop_column("user")
    with op.batch_alter_table("user_tokens") as batch:
        batch.drop_column("last_used_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_email")
        batch.drop_column("email")
