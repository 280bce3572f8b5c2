"""No secret in the database: an attached machine (`type: virtualmachine`) registered before
attach logged in was stored as given, `ssh_settings.admin_password` included. cible now logs in
with keys only and refuses passwords; a stored one is removed (zeroed on SQLite).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

computes = sa.table("computes", sa.column("name", sa.String), sa.column("compute_type", sa.String),
                    sa.column("spec", sa.JSON))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("PRAGMA secure_delete = ON")  # the old bytes are zeroed, not left in free pages
    rows = bind.execute(sa.select(computes.c.name, computes.c.spec)
                        .where(computes.c.compute_type == "virtualmachine")).all()
    for name, spec in rows:
        settings = (spec or {}).get("ssh_settings")
        if isinstance(settings, dict) and "admin_password" in settings:
            kept = {k: v for k, v in settings.items() if k != "admin_password"}
            bind.execute(computes.update().where(computes.c.name == name).values(spec={**spec, "ssh_settings": kept}))


def downgrade() -> None:
    pass  # the password is not put back
