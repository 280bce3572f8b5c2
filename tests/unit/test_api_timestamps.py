"""Every timestamp the API answers carries its zone, and reads the same from the answer to a write as
from a later read: SQLite gives back naive datetimes, the store makes them aware UTC (store/columns.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.core.lifecycle.jobs import JobStatus
from cible.server.services.jobs import set_status
from cible.server.store.rows import JobRow
from cible.testing import FrozenClock

# Microseconds too: they must survive the round trip through the database.
START = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path, clock=FrozenClock(START)) as client:
        yield client


def zoned(value: str) -> datetime:
    """The instant `value` names; fails on a timestamp without a zone."""
    assert value.endswith(("Z", "+00:00")), f"{value!r} has no UTC zone"
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_job_answers_zoned_timestamps_identical_on_put_and_get(api: TestClient):
    put = api.put("/api/v1/jobs/j1", json={"command": "echo hi", "compute": "local"}).json()
    assert zoned(put["creation_context"]["created_at"]) == START
    assert [zoned(h["at"]) for h in put["status_history"]] == [START, START]
    got = api.get("/api/v1/jobs/j1").json()
    assert got["creation_context"] == put["creation_context"]
    assert got["status_history"] == put["status_history"]
    assert api.get("/api/v1/jobs").json()["value"][0]["creation_context"] == put["creation_context"]


def test_a_finished_jobs_start_end_and_history_times_are_zoned(api: TestClient):
    api.put("/api/v1/jobs/j1", json={"command": "echo hi", "compute": "local"})
    later = START + timedelta(minutes=1)
    with api.app.state.store.session() as session:
        row = session.get(JobRow, "j1")
        for status in (JobStatus.PREPARING, JobStatus.RUNNING, JobStatus.FINALIZING, JobStatus.COMPLETED):
            set_status(session, row, status, later)
    job = api.get("/api/v1/jobs/j1").json()
    assert (zoned(job["start_time"]), zoned(job["end_time"])) == (later, later)
    assert [zoned(h["at"]) for h in job["status_history"]] == [START, START, later, later, later, later]


def test_a_canceled_jobs_answer_matches_a_later_read(api: TestClient):
    api.put("/api/v1/jobs/j1", json={"command": "echo hi", "compute": "local"})
    canceled = api.post("/api/v1/jobs/j1:cancel").json()
    assert canceled["status_history"] == api.get("/api/v1/jobs/j1").json()["status_history"]


def test_a_compute_answers_a_zoned_created_on_identical_on_put_and_get(api: TestClient):
    put = api.put("/api/v1/computes/cpu", json=CLUSTER)
    assert put.status_code == 200, put.text
    assert zoned(put.json()["created_on"]) == START
    assert api.get("/api/v1/computes/cpu").json()["created_on"] == put.json()["created_on"]
    listed = {c["name"]: c for c in api.get("/api/v1/computes").json()["value"]}
    assert listed["cpu"]["created_on"] == put.json()["created_on"]


def test_an_asset_answers_a_zoned_created_at_identical_on_put_and_get(api: TestClient):
    put = api.put("/api/v1/environments/env/versions/1", json={"image": "python:3.11"})
    assert put.status_code == 200, put.text
    created = put.json()["creation_context"]["created_at"]
    assert zoned(created) == START
    assert api.get("/api/v1/environments/env/versions/1").json()["creation_context"]["created_at"] == created
    assert api.get("/api/v1/environments").json()["value"][0]["creation_context"]["created_at"] == created
