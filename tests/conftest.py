"""Shared fixtures: store URLs for SQLite and, when CIBLE_TEST_POSTGRES_URL is set, PostgreSQL; and a
migrated SQLite store for the tests that drive the reconcilers on their own."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

POSTGRES_URL = os.environ.get("CIBLE_TEST_POSTGRES_URL")
# Servers the tests start skip MLflow's tracking server (~15 s of CPU each) unless a test turns it on.
os.environ.setdefault("CIBLE_TRACKING", "0")
# A job that names no compute runs on serverless nodes made for it (the installation default);
# the tests of other features run such jobs on `local`, and the serverless tests say so.
os.environ.setdefault("CIBLE_DEFAULT_COMPUTE", "local")


def _postgres_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    import psycopg

    name = f"cible_test_{secrets.token_hex(4)}"
    admin = POSTGRES_URL
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # noqa: ANN001
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cible.db'}"
        return
    if not POSTGRES_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the store tests on PostgreSQL: CIBLE_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set CIBLE_TEST_POSTGRES_URL (scripts/test.sh starts one)")
    yield from _postgres_database()


@pytest.fixture
def store(tmp_path):  # noqa: ANN001, ANN201 (a cible.server.store.db.Store)
    """A migrated SQLite store in the test's folder (a module that needs PostgreSQL too defines its own)."""
    from cible.server.store.db import Store  # imported here: the e2e tests never load the server in-process

    store = Store(f"sqlite:///{tmp_path / 'cible.db'}")
    store.migrate()
    yield store
    store.close()
