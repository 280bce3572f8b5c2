"""Shared fixtures: store URLs for SQLite and, when CIBLE_TEST_POSTGRES_URL is set, PostgreSQL; and a
migrated SQLite store for the tests that drive the reconcilers on their own."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

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


def _need_postgres() -> None:
    if not POSTGRES_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the store tests on PostgreSQL: CIBLE_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set CIBLE_TEST_POSTGRES_URL (scripts/test.sh starts one)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # noqa: ANN001
    """An empty database of each kind, for the tests of the migrations and of the store itself."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cible.db'}"
        return
    _need_postgres()
    yield from _postgres_database()


class MigratedDatabases:
    """Databases at the newest schema without migrating each: the API tests start an app on a store of
    their own, and Alembic's 17 migrations (~70 ms on SQLite, ~150 ms on PostgreSQL) were a third of their
    time, a new PostgreSQL database another ~250 ms. So SQLite gets a copy of a file migrated once per test
    process, and PostgreSQL one database per process, migrated once and emptied before each test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sqlite: Path | None = None
        self.postgres: str | None = None

    def sqlite_copy(self, path: Path) -> str:
        if self.sqlite is None:
            self.sqlite = self.folder / "template.db"
            _migrated(f"sqlite:///{self.sqlite}")  # (closed: nothing is left in a -wal beside it)
        shutil.copyfile(self.sqlite, path)
        path.chmod(0o600)
        return f"sqlite:///{path}"

    def emptied_postgres(self) -> str:
        import psycopg

        base = POSTGRES_URL.rsplit("/", 1)[0]
        if self.postgres is None:
            name = f"cible_test_{secrets.token_hex(4)}"
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            self.postgres = f"{base}/{name}"
            _migrated(self.postgres)
            return self.postgres
        from cible.server.store.rows import Base

        with psycopg.connect(self.postgres, autocommit=True) as conn:
            # What an earlier test left connected (a thread of its app) goes; then every row, those that
            # refer to others first (TRUNCATE would take ~90 ms), and the ids start over.
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            sequences = [row[0] for row in conn.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")]
            with conn.transaction():
                for table in reversed(Base.metadata.sorted_tables):
                    conn.execute(f'DELETE FROM "{table.name}"')
                for sequence in sequences:
                    conn.execute(f'ALTER SEQUENCE "{sequence}" RESTART')
        return self.postgres

    def drop(self) -> None:
        if self.postgres is not None:
            import psycopg

            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.postgres.rsplit("/", 1)[1]}" WITH (FORCE)')


def _migrated(url: str) -> None:
    from cible.server.store.db import Store  # imported here: the e2e tests never load the server in-process

    store = Store(url)
    try:
        store.migrate()
    finally:
        store.close()


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedDatabases]:
    databases = MigratedDatabases(tmp_path_factory.mktemp("migrated-databases"))
    yield databases
    databases.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_db_url(request: pytest.FixtureRequest, tmp_path: Path, migrated_databases: MigratedDatabases) -> str:
    """A database of each kind at the newest schema, with no rows, for the tests of what is built on it."""
    if request.param == "sqlite":
        return migrated_databases.sqlite_copy(tmp_path / "cible.db")
    _need_postgres()
    return migrated_databases.emptied_postgres()


@pytest.fixture
def store(tmp_path, migrated_databases: MigratedDatabases):  # noqa: ANN001, ANN201 (a cible.server.store.db.Store)
    """A migrated SQLite store in the test's folder (a module that needs PostgreSQL too defines its own)."""
    from cible.server.store.db import Store

    store = Store(migrated_databases.sqlite_copy(tmp_path / "cible.db"))
    store.migrate()  # (at the newest revision already: only checked)
    yield store
    store.close()


# --- Parallel runs (pytest-xdist `--dist loadgroup`, the default of scripts/test.sh) ------------------------
# Tests that use something of the whole machine never run at the same time as one another: each family
# below is one group, so one worker runs all of it, one test after the other. A module is in a family
# when it uses the family's helper (its name in the module's text, so a new module joins by importing it):
#   slurm: the Slurm test cluster (cible.testing.slurm): slurmd "nodes" at 127.0.0.2-4, munged, the
#          `cible-slurm-user` it makes with useradd;
#   ray:   Ray clusters (cible.testing.ray_cluster): nodes at 127.0.0.1-4 whose workers take ports
#          10002-19999 on those addresses; one Ray at a time (and the slow autoscaler test takes CPUs);
#   sshd:  loopback sshd "machines" (cible.testing.sshd) at 127.0.0.x, the `cible-attached` user made with
#          useradd and whose processes test_attached_jobs ends with `pkill -u` after each test;
#   spark: Spark's JVMs (cible.testing.spark): a master, workers, drivers and executors take ~1.6 GB and
#          both cores of the CI machine while they start; one Spark module at a time.
# (Ports are picked free everywhere, so the families themselves may run side by side.)
# Every other module of tests/e2e, tests/integration and tests/browser is a group of its own: its
# module-scoped fixtures (a workspace's server, a Chromium) then start once, on one worker. The unit
# tests are not grouped: spread test by test, they fill the workers at the end of the run.
#
# The groups are made here, in the controller's scheduler, not with `xdist_group` marks: xdist 3.8 marks
# a test's group by rewriting `item._nodeid`, which pytest 9 no longer reads (its node ids live in
# `item._id`), so under pytest 9 `--dist loadgroup` silently ran every marked test anywhere. An
# explicit `xdist_group` mark still counts where xdist manages to apply it (the `@group` id suffix).
_MACHINE_FAMILIES = (("slurm", "SlurmTestCluster"), ("ray", "RayTestCluster"), ("sshd", "LoopbackSshd"),
                     ("spark", "spark_unavailable"), ("kubernetes", "EmulatedKubernetes"))
_PER_MODULE = ("e2e", "integration", "browser")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_groups: dict[str, str | None] = {}


def _module_group(path: str) -> str | None:
    """The group of the test module at `path` (relative to the repository), or None."""
    if path not in _groups:
        parts = path.split("/")
        group = None
        if len(parts) > 2 and parts[0] == "tests" and parts[1] in _PER_MODULE:
            group = path
            try:
                with open(os.path.join(_ROOT, path), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                text = ""
            group = next((family for family, helper in _MACHINE_FAMILIES if helper in text), path)
        _groups[path] = group
    return _groups[path]


def _scope_of(nodeid: str) -> str:
    if nodeid.rfind("@") > nodeid.rfind("]"):  # an explicit xdist_group mark that xdist could apply
        return nodeid.rsplit("@", 1)[-1]
    return _module_group(nodeid.split("::", 1)[0]) or nodeid


@pytest.hookimpl(optionalhook=True)  # optional: a run with `-p no:xdist` has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class MachineGroupScheduling(LoadScopeScheduling):
        """--dist loadgroup with the groups above: a work unit is a group (or one unit test)."""

        def _split_scope(self, nodeid: str) -> str:
            return _scope_of(nodeid)

    return MachineGroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each item gets a node id of its own. Schemathesis (4.32) names an operation's item
    `test[POST /api/v1/…]`, but pytest 9 builds node ids (`item._id`) from the name without what is in
    brackets: the 101 operations of a fuzz test then shared one id, and xdist, which schedules by node
    id, ran one of them. A serial run ran them all, so the two disagreed; now both run every one."""
    from _pytest.nodes import coerce_node_id

    for item in items:
        own = item.name[item.name.find("["):] if "[" in item.name else ""
        if own and not item.nodeid.endswith(own):
            item._id = coerce_node_id(item.nodeid + own)
