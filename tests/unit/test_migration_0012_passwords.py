"""Migration 0012 removes the password an attached machine was stored with before cible refused
passwords: no secret stays in the database (on SQLite, not even in its free pages)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from cible.server.store.db import MIGRATIONS_DIR, Store, migrate

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
PASSWORD = "correct-horse-battery-staple-0012"


def test_a_stored_password_is_removed_and_the_rest_kept(db_url):
    store = Store(db_url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with store.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0011")
        text, json, when = sa.String(), sa.JSON(), sa.DateTime(timezone=True)
        computes = sa.table("computes", *(sa.column(c, t) for c, t in (
            ("name", text), ("compute_type", text), ("spec", json), ("spec_version", sa.Integer()),
            ("provisioning_state", text), ("created_at", when), ("updated_at", when))))
        spec = {"name": "box", "type": "virtualmachine", "resource_id": "10.0.0.4",
                "ssh_settings": {"admin_username": "azureuser", "admin_password": PASSWORD, "ssh_port": 22}}
        with store.engine.begin() as conn:
            conn.execute(computes.insert().values(name="box", compute_type="virtualmachine", spec=spec, spec_version=1,
                                                  provisioning_state="Succeeded", created_at=NOW, updated_at=NOW))
        migrate(store.engine)
        with store.engine.connect() as conn:
            stored = conn.execute(sa.select(computes.c.spec).where(computes.c.name == "box")).scalar_one()
        assert stored["ssh_settings"] == {"admin_username": "azureuser", "ssh_port": 22}
        assert stored["resource_id"] == "10.0.0.4"
    finally:
        store.close()
    if db_url.startswith("sqlite:///"):
        assert PASSWORD.encode() not in Path(db_url.removeprefix("sqlite:///")).read_bytes()
