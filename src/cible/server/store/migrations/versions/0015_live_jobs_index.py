"""A partial index of the jobs still to end (ix_jobs_live): the reconcilers' passes read those among
every job ever run, and without it each pass scanned the whole jobs table.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# As cible.server.store.rows._LIVE_PREDICATE (kept literal here: a migration does not follow later code).
LIVE = "status NOT IN ('Canceled', 'Completed', 'Failed')"


def upgrade() -> None:
    op.create_index("ix_jobs_live", "jobs", ["created_at", "name"],
                    sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))


def downgrade() -> None:
    op.drop_index("ix_jobs_live", "jobs")
