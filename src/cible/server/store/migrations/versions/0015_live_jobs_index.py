"""Partial indexes of the jobs still to end (ix_jobs_live) and of the queued ones by target (ix_jobs_queue):
the reconcilers' passes read those among every job ever run, and without them each pass scanned the
whole jobs table.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# As cible.server.store.rows._LIVE_PREDICATE and _QUEUED_PREDICATE (literal here: a migration does not follow later code).
LIVE = "status NOT IN ('Canceled', 'Completed', 'Failed')"
QUEUED = "status = 'Queued'"


def upgrade() -> None:
    op.create_index("ix_jobs_live", "jobs", ["created_at", "name", "status", "target"],
                    sqlite_where=sa.text(LIVE), postgresql_where=sa.text(LIVE))
    op.create_index("ix_jobs_queue", "jobs", ["target", "created_at", "name"],
                    sqlite_where=sa.text(QUEUED), postgresql_where=sa.text(QUEUED))


def downgrade() -> None:
    op.drop_index("ix_jobs_queue", "jobs")
    op.drop_index("ix_jobs_live", "jobs")
