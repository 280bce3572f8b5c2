"""Migration 0013 adds the Slurm clusters' per-user credentials (`compute_credentials`): a key's
path, never a key; a compute's credentials go with it; and it comes down again cleanly."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from cible.server.store.db import MIGRATIONS_DIR, Store

NOW = datetime(2026, 12, 6, tzinfo=timezone.utc)
TEXT, WHEN = sa.String(), sa.DateTime(timezone=True)
COMPUTES = sa.table("computes", *(sa.column(c, t) for c, t in (
    ("name", TEXT), ("compute_type", TEXT), ("spec", sa.JSON()), ("spec_version", sa.Integer()),
    ("provisioning_state", TEXT), ("created_at", WHEN), ("updated_at", WHEN))))
CREDENTIALS = sa.table("compute_credentials", *(sa.column(c, t) for c, t in (
    ("compute", TEXT), ("user", TEXT), ("username", TEXT), ("ssh_private_key_file", TEXT),
    ("use_ssh_agent", sa.Boolean()), ("created_at", WHEN))))


def _to(store: Store, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.connect() as conn:  # the migrations' env commits
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _tables(store: Store) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def test_credentials_come_with_0013_go_with_their_compute_and_go_down_with_it(db_url: str):
    store = Store(db_url)
    try:
        _to(store, "0012")
        assert "compute_credentials" not in _tables(store)
        spec = {"name": "hpc", "type": "slurm", "login": "login.example.com",
                "ssh_settings": {"admin_username": "alice", "ssh_private_key_file": "/keys/alice"}}
        with store.engine.begin() as conn:  # a compute made before 0013 keeps its row
            conn.execute(COMPUTES.insert().values(name="hpc", compute_type="slurm", spec=spec, spec_version=1,
                                                  provisioning_state="Succeeded", created_at=NOW, updated_at=NOW))
        _to(store, "0013")
        columns = {c["name"]: c for c in sa.inspect(store.engine).get_columns("compute_credentials")}
        assert set(columns) == {"compute", "user", "username", "ssh_private_key_file", "use_ssh_agent", "created_at"}
        assert columns["ssh_private_key_file"]["nullable"] and not columns["username"]["nullable"]
        with store.engine.begin() as conn:
            conn.execute(CREDENTIALS.insert().values(compute="hpc", user="alice", username="alice",
                                                     ssh_private_key_file="/keys/alice", created_at=NOW))
            conn.execute(CREDENTIALS.insert().values(compute="hpc", user="", username="svc",  # no X-Cible-User
                                                     ssh_private_key_file=None, use_ssh_agent=True, created_at=NOW))
        with store.engine.connect() as conn:
            agent = conn.execute(sa.select(CREDENTIALS.c.use_ssh_agent).where(CREDENTIALS.c.user == "")).scalar_one()
            assert agent is True
        # One credential per user and compute; and only a compute's, not one that does not exist.
        for compute, username in (("hpc", "other"), ("nope", "alice")):
            with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
                conn.execute(CREDENTIALS.insert().values(compute=compute, user="alice", username=username,
                                                         created_at=NOW))
        with store.engine.begin() as conn:  # the compute deleted: its credentials with it
            conn.execute(COMPUTES.delete().where(COMPUTES.c.name == "hpc"))
            assert conn.execute(sa.select(sa.func.count()).select_from(CREDENTIALS)).scalar_one() == 0
        _to(store, "0012", down=True)
        assert "compute_credentials" not in _tables(store) and "computes" in _tables(store)
        _to(store, "head")
        assert "compute_credentials" in _tables(store)
    finally:
        store.close()
