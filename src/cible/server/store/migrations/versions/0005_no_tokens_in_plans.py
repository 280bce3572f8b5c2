"""No secret in the database: job plans stored before scoped tokens held the workspace token
(run.plan.tracking.token); it is removed. Launchers are now handed a run token of their own.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

jobs = sa.table("jobs", sa.column("name", sa.String), sa.column("run", sa.JSON))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("PRAGMA secure_delete = ON")  # the old bytes are zeroed, not left in free pages
    for name, run in bind.execute(sa.select(jobs.c.name, jobs.c.run)).all():
        tracking = ((run or {}).get("plan") or {}).get("tracking")
        if isinstance(tracking, dict) and "token" in tracking:
            plan = {**run["plan"], "tracking": {k: v for k, v in tracking.items() if k != "token"}}
            bind.execute(jobs.update().where(jobs.c.name == name).values(run={**run, "plan": plan}))


def downgrade() -> None:
    pass  # the token is not put back
