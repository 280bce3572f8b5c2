"""One stored record that this release cannot read (written by a newer cible, or damaged) fails
alone: lists still answer (the item as a stub with an `error`), a request for that item answers a
clear UnreadableRecord error (never a 500), and the job reconciler fails such a job once, keeping
the unreadable document in the job's error, while the other jobs go on."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from api_support import api_client, error_of

from cible.core.errors import UnreadableRecordError
from cible.core.models.records import RunRecord
from cible.server.reconcilers.jobs import FAIL_AFTER, JobReconciler
from cible.server.store.db import Store
from cible.server.store.rows import JobRow, JobStatusRow, NodeRow
from cible.testing import FakeJobRunner, FrozenClock

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
NEWER = {"schema_version": 2, "placement": {"pool": "gpu"}}  # what a later release could write
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}


def plant_job(store: Store, name: str, age_s: int = 0) -> None:
    created = NOW.replace(second=59 - age_s)
    with store.session() as session:
        session.add(JobRow(name=name, display_name=name, experiment_name="exp", status="Queued", target="local",
                           compute="local", spec={"command": "echo hi"}, warnings=[], run={"plan": {"job_name": name}},
                           created_at=created, updated_at=created))


def overwrite(store: Store, table: str, key: str, value: str, column: str, document: Any) -> None:
    """Write `document` into the row's JSON column as it is, past the records' checks."""
    rows = sa.table(table, sa.column(key, sa.String()), sa.column(column, sa.JSON()))
    with store.engine.begin() as conn:
        conn.execute(rows.update().where(rows.c[key] == value).values({column: document}))


def test_a_job_whose_run_or_error_cannot_be_read_is_a_stub_in_the_list_and_a_clear_error_alone(
        migrated_db_url, tmp_path):
    with api_client(migrated_db_url, tmp_path, FrozenClock(NOW)) as api:
        store = api.app.state.store
        for age, name in enumerate(("fine", "newer", "damaged")):
            plant_job(store, name, age_s=age)
        overwrite(store, "jobs", "name", "newer", "run", NEWER)
        overwrite(store, "jobs", "name", "damaged", "error", {"message": "no code"})

        listed = api.get("/api/v1/jobs")
        assert listed.status_code == 200, listed.text
        items = {item["name"]: item for item in listed.json()["value"]}
        assert listed.json()["count"] == 3 and list(items) == ["fine", "newer", "damaged"]  # newest first, as ever
        assert items["fine"]["queue_reason"] and items["fine"]["error"] is None
        for name, column in (("newer", "jobs.run"), ("damaged", "jobs.error")):
            stub = items[name]
            assert (stub["status"], stub["experiment_name"]) == ("Queued", "exp")
            assert stub["error"]["code"] == "UnreadableRecord" and column in stub["error"]["message"]
        assert "newer cible (schema_version 2" in items["newer"]["error"]["message"]

        shown = api.get("/api/v1/jobs/newer")
        assert shown.status_code == 503, shown.text
        error = error_of(shown)
        assert error["code"] == "UnreadableRecord" and "upgrade cible" in error["message"]
        assert error["details"] == {"record": "jobs.run", "problem": "schema_version: Input should be 1",
                                    "schema_version": 2}
        canceled = api.post("/api/v1/jobs/newer:cancel")
        assert canceled.status_code == 503 and error_of(canceled)["code"] == "UnreadableRecord"
        assert api.get("/api/v1/jobs/fine").status_code == 200


def test_a_compute_or_node_that_cannot_be_read_is_a_stub_in_its_list(migrated_db_url, tmp_path):
    with api_client(migrated_db_url, tmp_path, FrozenClock(NOW)) as api:
        store = api.app.state.store
        for name in ("a-cluster", "b-cluster"):
            assert api.put(f"/api/v1/computes/{name}", json=CLUSTER).status_code == 200
        overwrite(store, "computes", "name", "a-cluster", "status", NEWER)
        with store.session() as session:
            for node_id in ("n1", "n2"):
                session.add(NodeRow(node_id=node_id, compute="b-cluster", provider="local", state="idle",
                                    info={"size": "Standard_DS1_v2"}, created_at=NOW, updated_at=NOW))
        overwrite(store, "nodes", "node_id", "n2", "info", {"vcpus": "many"})

        listed = api.get("/api/v1/computes")
        assert listed.status_code == 200, listed.text
        items = {item["name"]: item for item in listed.json()["value"]}
        assert list(items) == ["local", "a-cluster", "b-cluster"]
        assert items["a-cluster"]["type"] == "amlcompute" and items["a-cluster"]["provisioning_state"] == "Succeeded"
        assert items["a-cluster"]["error"]["code"] == "UnreadableRecord"
        assert "computes.status" in items["a-cluster"]["error"]["message"]
        # Its cost reads each node's info (its price): with one node's unreadable, it is a stub too.
        assert items["b-cluster"]["type"] == "amlcompute" and "nodes.info" in items["b-cluster"]["error"]["message"]
        shown = api.get("/api/v1/computes/a-cluster")
        assert shown.status_code == 503 and error_of(shown)["code"] == "UnreadableRecord"

        nodes = api.get("/api/v1/computes/b-cluster/nodes")
        assert nodes.status_code == 200, nodes.text
        first, second = nodes.json()["value"]
        assert first["node_id"] == "n1" and "error" not in first
        assert (second["node_id"], second["node_state"]) == ("n2", "idle")
        assert "nodes.info" in second["error"]["message"] and "vcpus" in second["error"]["message"]
        assert "damaged" in second["error"]["message"]  # not a newer release's: no schema_version above ours


def test_the_job_reconciler_fails_a_job_whose_run_cannot_be_read_once_and_goes_on(migrated_db_url, tmp_path):
    clock = FrozenClock(NOW)
    with api_client(migrated_db_url, tmp_path, clock) as api:
        store = api.app.state.store
        plant_job(store, "newer", age_s=2)
        plant_job(store, "fine", age_s=1)
        overwrite(store, "jobs", "name", "newer", "run", NEWER)
        runner = FakeJobRunner(tmp_path / "runs", default_history=["Preparing", "Running"])  # starts nothing
        reconciler = JobReconciler(store, {"local": runner}, clock, max_concurrent=4)
        for step_s in (0, 1, 2):  # tried FAIL_AFTER times (backing off 1 s, then 2 s), then failed
            clock.advance(step_s)
            reconciler.reconcile_once()
        assert runner.submits == ["fine"]
        for _ in range(3):  # failed: out of the live set, never tried again
            clock.advance(60)
            reconciler.reconcile_once()

        with store.session() as session:
            row = session.get(JobRow, "newer")  # it reads again: its run is an empty RunRecord
            assert row.status == "Failed" and row.run == RunRecord()
            assert row.error.code == "ReconcileError" and f"{FAIL_AFTER} tries" in row.error.message
            assert row.error.details["unreadable_run"] == NEWER and row.error.details["record"] == "jobs.run"
            moves = session.scalars(sa.select(JobStatusRow.to_status).where(JobStatusRow.job_name == "newer")).all()
            assert moves.count("Failed") == 1  # through set_status, once
            assert session.get(JobRow, "fine").status == "Running"
        shown = api.get("/api/v1/jobs/newer")
        assert shown.status_code == 200 and shown.json()["error"]["details"]["unreadable_run"] == NEWER


# A handle of a runner this release does not know (a newer cible's).
@pytest.mark.parametrize("document", [NEWER, {"schema_version": 1, "handle": {"runner": "kubernetes"}}])
def test_loading_names_the_column_and_the_problem(tmp_path, document):
    store = Store(f"sqlite:///{tmp_path / 'cible.db'}")
    try:
        store.migrate()
        plant_job(store, "j")
        overwrite(store, "jobs", "name", "j", "run", document)
        with pytest.raises(UnreadableRecordError) as raised, store.session() as session:
            session.get(JobRow, "j")
        assert raised.value.http_status == 503 and raised.value.details["record"] == "jobs.run"
        assert raised.value.details["problem"].split(":")[0] in ("schema_version", "handle")
    finally:
        store.close()
