"""A workspace made by the previous release opens after the upgrade, intact.

tests/fixtures/previous_release holds a workspace of release 9e13f98 (its SQLite database and its
jobs' logs) and that release's API answers over that very database, at a fixed time (its
make_fixture.py says how it was made): jobs completed, failed, requeued by a preemption and run on
a cluster; a cluster kept at one node, whose old reconciler wrote `target_node_count` into the
user's spec; a snoozed then stopped instance; a quota and two requests. The current code migrates
it (0007: typed records) and must answer as the old release did.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from api_support import api_client

from cible.core.models.records import ClusterHandle, ComputeStatus, JobError, LocalHandle, NodeInfo, RunRecord
from cible.server.store.db import Store, downgrade
from cible.server.store.rows import ComputeRow, JobRow, NodeRow
from cible.testing import FrozenClock

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "previous_release"
OLD = json.loads((FIXTURE / "answers.json").read_text())
OBSERVED = ("target_node_count", "provisioning_errors")
# What an answer may show differently, and why: the host the test runs on (its CPUs and memory).
HOST_FIELDS = {"provider_status", "max_concurrent_jobs"}
OLD_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A copy of the old workspace (the api_client's home is tmp_path / "ws")."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copyfile(FIXTURE / "cible.db", ws / "cible.db")
    shutil.copytree(FIXTURE / "runs", ws / "runs")
    return ws


def _url(home: Path) -> str:
    return f"sqlite:///{home / 'cible.db'}"


def _old_rows(table: str, key: str, *json_columns: str) -> dict[str, dict[str, Any]]:
    """The fixture's rows as the previous release stored them."""
    with sqlite3.connect(FIXTURE / "cible.db") as db:
        rows = db.execute(f"SELECT {key}, {', '.join(json_columns)} FROM {table}").fetchall()
    return {row[0]: {c: json.loads(v) if v is not None else None for c, v in zip(json_columns, row[1:])}
            for row in rows}


def test_every_job_compute_and_node_row_loads_as_typed_records(home: Path):
    store = Store(_url(home))
    try:
        store.migrate()
        with store.session() as session:
            jobs = {row.name: row for row in session.query(JobRow)}
            computes = {row.name: row for row in session.query(ComputeRow)}
            nodes = {row.node_id: row for row in session.query(NodeRow)}
            assert sorted(jobs) == sorted(OLD["jobs"])
            assert sorted(computes) == ["ci", "cpu", "spot"]  # (`local` is not a row)
            assert len(nodes) == 4
            for row in jobs.values():
                assert isinstance(row.run, RunRecord) and row.run.plan["job_name"] == row.name
                assert row.error is None or isinstance(row.error, JobError)
            assert isinstance(jobs["prev-hello"].run.handle, LocalHandle)
            assert jobs["prev-failed"].error.code == "UserError" and jobs["prev-failed"].error.exit_code == 3
            requeued = jobs["prev-requeued"].run
            assert isinstance(requeued.handle, ClusterHandle) and requeued.handle.attempt == 2 and requeued.attempts == 2
            assert [r.attempt for r in requeued.requeues] == [1] and "preempted" in requeued.requeues[0].reason

            old_specs = _old_rows("computes", "name", "spec")
            for name, row in computes.items():
                assert isinstance(row.observed, ComputeStatus)
                # The observed fields left the user's spec for the status; the rest is as written.
                assert not set(OBSERVED) & set(row.spec), (name, row.spec)
                assert row.spec == {k: v for k, v in old_specs[name]["spec"].items() if k not in OBSERVED}
                assert row.observed.target_node_count == old_specs[name]["spec"]["target_node_count"]
                assert row.observed.provisioning_errors is None
            assert computes["cpu"].observed.target_node_count == 1
            instance = computes["ci"].observed.instance
            assert instance.power == "off" and instance.ever_ready and instance.power_reason.startswith("stop requested")
            assert [e.kind for e in instance.events] == ["Snoozed", "Stopped"]
            assert computes["cpu"].observed.instance is None

            for row in nodes.values():
                assert isinstance(row.info, NodeInfo) and row.info.size == "Standard_DS1_v2" and row.info.vcpus == 1
                assert row.info.low_priority == (row.compute == "spot")
    finally:
        store.close()


def _same(old: dict[str, Any], new: dict[str, Any], where: str) -> None:
    """Every field of the old answer is in the new one with the same value (new fields may be added)."""
    differ = {key: (value, new.get(key, "<missing>")) for key, value in old.items()
              if key not in HOST_FIELDS and new.get(key, "<missing>") != value}
    assert not differ, f"{where}: old answer → new answer differ: {differ}"


def test_the_api_answers_as_the_previous_release_did(home: Path, tmp_path: Path):
    clock = FrozenClock(datetime.fromisoformat(OLD["now"]))
    with api_client(_url(home), tmp_path, clock) as api:
        for name, old in OLD["jobs"].items():
            _same(old, api.get(f"/api/v1/jobs/{name}").json(), f"job show {name}")
        for name, old in OLD["computes"].items():
            _same(old, api.get(f"/api/v1/computes/{name}").json(), f"compute show {name}")
        for name, old in OLD["nodes"].items():
            new = api.get(f"/api/v1/computes/{name}/nodes").json()
            assert new["count"] == old["count"]
            for old_node, new_node in zip(old["value"], new["value"], strict=True):
                _same(old_node, new_node, f"compute list-nodes {name}")
        _same(OLD["quotas"], api.get("/api/v1/quotas").json(), "quota show")
        shown = api.get("/api/v1/computes/ci").json()
        assert shown["state"] == "Stopped" and shown["target_node_count"] == 0


def test_the_old_jobs_logs_still_read(home: Path, tmp_path: Path):
    with api_client(_url(home), tmp_path) as api:
        for name, old in OLD["logs"].items():
            response = api.get(f"/api/v1/jobs/{name}/logs")
            assert response.status_code == 200 and response.text == old, name
        assert "resumed from 41 attempt 2" in OLD["logs"]["prev-requeued"]


def _timestamps(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _timestamps(v)]
    if isinstance(value, list):
        return [t for v in value for t in _timestamps(v)]
    return [value] if isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\dT\d\d:", value) else []


def test_a_downgrade_gives_back_the_rows_the_previous_release_reads(home: Path, tmp_path: Path):
    clock = FrozenClock(datetime.fromisoformat(OLD["now"]))
    with api_client(_url(home), tmp_path, clock) as api:  # upgraded, then written by the current code
        assert api.post("/api/v1/computes/ci:start").status_code == 200
        assert api.patch("/api/v1/computes/cpu", json={"max_instances": 3}).status_code == 200
        assert api.patch("/api/v1/jobs/prev-requeued", json={"tags": {"after": "upgrade"}}).status_code == 200
    store = Store(_url(home))
    try:
        downgrade(store.engine, "0006")
    finally:
        store.close()
    old = _old_rows("computes", "name", "spec", "status")
    with sqlite3.connect(home / "cible.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0006",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {r[1] for r in db.execute("PRAGMA table_info(computes)")}
        now = {name: {"spec": json.loads(spec), "status": json.loads(status) if status else None}
               for name, spec, status in db.execute("SELECT name, spec, status FROM computes")}
        runs = {name: json.loads(run) for name, run in db.execute("SELECT name, run FROM jobs")}
        infos = {node: json.loads(info) for node, info in db.execute("SELECT node_id, info FROM nodes")}
    assert "lifecycle_history" not in tables and "version" not in columns

    # The spec regains the observed fields the old reconciler and `compute show` read there.
    for name in ("cpu", "spot", "ci"):
        expected = {k: v for k, v in old[name]["spec"].items() if v is not None}
        if name == "cpu":
            expected["max_instances"] = 3
        assert {k: v for k, v in now[name]["spec"].items() if v is not None} == expected, name
    assert now["cpu"]["status"] is None and now["spot"]["status"] is None
    # The instance's runtime keys are back at the top of its status, where the old code reads them.
    status = now["ci"]["status"]
    assert status["power"] == "on" and "instance" not in status and "schema_version" not in status
    assert status["events"][:2] == old["ci"]["status"]["events"]  # the old events, as stored
    assert status["powered_on_at"] == OLD["now"]  # written by the start above, as the old code writes it
    # Time stamps as the old code wrote them (`+00:00`: Python 3.10's fromisoformat reads no `Z`).
    stamps = _timestamps(now) + _timestamps(runs) + _timestamps(infos)
    assert stamps and all(OLD_TIMESTAMP.match(t) for t in stamps), [t for t in stamps if not OLD_TIMESTAMP.match(t)]
    assert runs["prev-requeued"]["requeues"][0]["attempt"] == 1 and runs["prev-requeued"]["handle"]["attempt"] == 2
