"""Writes that cannot collide: the API and the reconcilers read-modify-write the same job, compute and
node rows. A version column (rows.py) makes the later of two writers of a row read before the
other committed fail (StaleDataError) instead of overwriting; `Store.transact` runs such a write
again from a fresh read, so neither write is lost; one that still collides answers 409, never 500.
On SQLite and PostgreSQL. No sleeps: the interleavings are forced, or started together by a barrier."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from api_support import api_client, error_of
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cible.core.errors import ConcurrentUpdateError, error_from_dict
from cible.core.models.records import InstanceEvent, InstanceState
from cible.server.errors import error_response
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLUSTER_SPEC = {"name": "c", "type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2}


def _seed(store: Store) -> None:
    with store.session() as session:
        session.add(ComputeRow(name="c", compute_type="amlcompute", spec=CLUSTER_SPEC, provisioning_state="Succeeded",
                               created_at=NOW, updated_at=NOW))
        session.add(JobRow(name="j", display_name="j", experiment_name="e", status="Queued", compute="c", target="c",
                           spec={"command": "echo"}, created_at=NOW, updated_at=NOW))
        session.add(NodeRow(node_id="n", compute="c", provider="local", state="idle", created_at=NOW, updated_at=NOW))


# Per row: the key, what the API writes and what a reconciler (or a node's heartbeat) writes,
# and how to read each back. Different fields: a lost write is one of them missing at the end.
Write = Callable[[Any], None]
WRITES: dict[str, tuple[type, str, Write, Write, Callable[[Any], tuple[Any, Any]]]] = {
    "compute": (ComputeRow, "c",
                lambda row: setattr(row, "spec", {**row.spec, "max_instances": 5}),
                lambda row: setattr(row, "observed", row.observed.model_copy(update={"target_node_count": 2})),
                lambda row: (row.spec["max_instances"], row.observed.target_node_count)),
    "job": (JobRow, "j",
            lambda row: setattr(row, "display_name", "renamed"),
            lambda row: setattr(row, "run", row.run.model_copy(update={"queue_reason": "waiting for a node"})),
            lambda row: (row.display_name, row.run.queue_reason)),
    "node": (NodeRow, "n",
             lambda row: setattr(row, "info", row.info.model_copy(update={"last_activity_at": NOW})),
             lambda row: setattr(row, "last_heartbeat", NOW + timedelta(seconds=5)),
             lambda row: (row.info.last_activity_at, row.last_heartbeat)),
}
WRITTEN = {"compute": (5, 2), "job": ("renamed", "waiting for a node"),
           "node": (NOW, NOW + timedelta(seconds=5))}


@pytest.fixture
def store(migrated_db_url: str):  # noqa: ANN201
    made = Store(migrated_db_url)
    made.migrate()
    _seed(made)
    yield made
    made.close()


def _read(store: Store, entity: str) -> tuple[Any, Any]:
    row_type, key, _, _, read = WRITES[entity]
    with store.session() as session:
        return read(session.get(row_type, key))


@pytest.mark.parametrize("entity", sorted(WRITES))
def test_the_later_of_two_writers_that_read_the_same_row_fails_instead_of_overwriting(store: Store, entity: str):
    row_type, key, api_write, reconciler_write, _ = WRITES[entity]
    with pytest.raises(StaleDataError):
        with store.session() as second:
            row = second.get(row_type, key)  # both read version 1
            with store.session() as first:
                reconciler_write(first.get(row_type, key))
            # first committed (version 2); second's UPDATE ... WHERE version = 1 matches no row
            api_write(row)
    api_value, reconciler_value = _read(store, entity)
    assert reconciler_value == WRITTEN[entity][1]
    assert api_value != WRITTEN[entity][0]  # rolled back whole, not half-applied


@pytest.mark.parametrize("entity", sorted(WRITES))
def test_transact_runs_a_collided_write_again_from_a_fresh_read_and_both_writes_stay(store: Store, entity: str):
    row_type, key, api_write, reconciler_write, _ = WRITES[entity]
    runs = []

    def write(session: Session) -> str:
        row = session.get(row_type, key)
        runs.append(row.version)
        if len(runs) == 1:  # another writer commits between this read and this write
            with store.session() as other:
                reconciler_write(other.get(row_type, key))
        api_write(row)
        return "done"

    assert store.transact(write) == "done"
    assert runs == [1, 2]  # the second run read what the other writer committed
    assert _read(store, entity) == WRITTEN[entity]


def test_a_write_that_collides_at_every_attempt_is_a_concurrent_update_error_and_changes_nothing(store: Store):
    attempts = []

    def write(session: Session) -> None:
        row = session.get(ComputeRow, "c")
        attempts.append(row.version)
        with store.session() as other:  # the reconciler wins every time
            other_row = other.get(ComputeRow, "c")
            other_row.observed = other_row.observed.model_copy(update={"target_node_count": len(attempts)})
        row.spec = {**row.spec, "max_instances": 5}

    with pytest.raises(ConcurrentUpdateError) as raised:
        store.transact(write, attempts=3)
    assert attempts == [1, 2, 3]
    assert "retry" in raised.value.message and raised.value.http_status == 409
    assert _read(store, "compute") == (2, 3)


def test_a_collision_that_escapes_is_a_409_the_client_raises_as_its_own_class():
    response = error_response(StaleDataError("UPDATE statement on table 'computes' expected to update 1 row(s)"))
    assert response.status_code == 409
    body = json.loads(response.body)["error"]
    assert body["code"] == "ConcurrentUpdate" and "retry" in body["message"] and "UPDATE" not in body["message"]
    made = error_from_dict(body)
    assert type(made) is ConcurrentUpdateError and made.http_status == 409


# -- the API against a reconciler, for real: threads started together ---------------------------

API_THREADS = 4
REQUESTS_EACH = 5
RECONCILER_WRITES = 12


def _race(api_calls: list[Callable[[], Any]], reconciler_write: Callable[[Session], None], store: Store) -> tuple[
        list[list[Any]], int]:
    """Run each API caller (REQUESTS_EACH calls) and a reconciler (RECONCILER_WRITES transactions)
    at once. Returns each caller's responses and how many reconciler writes committed."""
    start = threading.Barrier(len(api_calls) + 1)

    def caller(call: Callable[[], Any]) -> list[Any]:
        start.wait()
        return [call() for _ in range(REQUESTS_EACH)]

    def reconciler() -> int:
        start.wait()
        done = 0
        for _ in range(RECONCILER_WRITES):
            try:
                store.transact(reconciler_write)
                done += 1
            except ConcurrentUpdateError:  # lost every retry: a reconciler tries again next pass
                pass
        return done

    with ThreadPoolExecutor(len(api_calls) + 1) as pool:
        callers = [pool.submit(caller, call) for call in api_calls]
        passes = pool.submit(reconciler)
        return [c.result(timeout=120) for c in callers], passes.result(timeout=120)


def _no_500(responses: list[list[Any]]) -> list[Any]:
    flat = [r for each in responses for r in each]
    assert all(r.status_code in (200, 409) for r in flat), [(r.status_code, r.text) for r in flat if r.status_code
                                                           not in (200, 409)]
    for refused in (r for r in flat if r.status_code == 409):  # only ever "retry", never half a write
        assert error_of(refused)["code"] == "ConcurrentUpdate"
    return flat


def test_snoozes_and_the_instance_pass_racing_on_one_instance_lose_no_write(  # noqa: ANN001
        migrated_db_url: str, tmp_path):
    with api_client(migrated_db_url, tmp_path) as api:
        created = api.put("/api/v1/computes/ci", json={"type": "computeinstance", "size": "Standard_DS1_v2",
                                                       "idle_time_before_shutdown": "PT30M"})
        assert created.status_code == 200, created.text
        store: Store = api.app.state.store

        def instance_pass(session: Session) -> None:  # as the reconciler records an event of the instance
            row = session.get(ComputeRow, "ci")
            state = row.observed.instance or InstanceState()
            event = InstanceEvent(at=NOW, kind="Checked", message="a pass")
            row.observed = row.observed.model_copy(update={
                "instance": state.model_copy(update={"events": [*state.events, event]})})

        def snooze() -> Any:
            return api.post("/api/v1/computes/ci:snooze", json={"minutes": 5})

        responses, passes = _race([snooze] * API_THREADS, instance_pass, store)
        snoozed = sum(r.status_code == 200 for r in _no_500(responses))
        with store.session() as session:
            events = session.get(ComputeRow, "ci").observed.instance.events
        assert API_THREADS * REQUESTS_EACH + RECONCILER_WRITES <= 50  # an instance keeps its last 50 events
        assert sum(e.kind == "Snoozed" for e in events) == snoozed
        assert sum(e.kind == "Checked" for e in events) == passes


def test_cluster_updates_and_the_cluster_pass_racing_on_one_cluster_lose_no_write(  # noqa: ANN001
        migrated_db_url: str, tmp_path):
    with api_client(migrated_db_url, tmp_path) as api:
        created = api.put("/api/v1/computes/c", json={"type": "amlcompute", "size": "Standard_DS1_v2",
                                                      "min_instances": 0, "max_instances": 2})
        assert created.status_code == 200, created.text
        store: Store = api.app.state.store

        def cluster_pass(session: Session) -> None:  # as the reconciler records its target
            row = session.get(ComputeRow, "c")
            row.observed = row.observed.model_copy(update={"target_node_count": (row.observed.target_node_count or 0) + 1})

        # One caller per field, each counting up: at the end each field holds its caller's last accepted value.
        # (min_instances stays at most 1, max_instances at least 2: every update is valid whatever the order.)
        fields = {"min_instances": iter([0, 1] * REQUESTS_EACH), "max_instances": iter(range(2, 100)),
                  "idle_time_before_scale_down": iter(range(60, 200)), "description": iter(range(100))}
        sent: dict[str, list[tuple[Any, Any]]] = {field: [] for field in fields}

        def updater(field: str) -> Callable[[], Any]:
            def call() -> Any:
                value = next(fields[field])
                value = f"v{value}" if field == "description" else value
                response = api.patch("/api/v1/computes/c", json={field: value})
                sent[field].append((value, response))
                return response
            return call

        responses, passes = _race([updater(field) for field in fields], cluster_pass, store)
        _no_500(responses)
        with store.session() as session:
            row = session.get(ComputeRow, "c")
            assert row.observed.target_node_count == passes
            for field, calls in sent.items():
                accepted = [value for value, response in calls if response.status_code == 200]
                assert accepted and row.spec[field] == accepted[-1], (field, calls)
        shown = api.get("/api/v1/computes/c").json()
        assert shown["target_node_count"] == passes and "target_node_count" not in row.spec


def test_job_updates_and_the_job_pass_racing_on_one_job_lose_no_write(migrated_db_url: str, tmp_path):  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as api:
        assert api.put("/api/v1/jobs/j", json={"command": "echo hello", "compute": "local"}).status_code == 200
        store: Store = api.app.state.store

        def job_pass(session: Session) -> None:  # as the reconciler counts attempts in the run record
            row = session.get(JobRow, "j")
            row.run = row.run.model_copy(update={"attempts": row.run.attempts + 1})

        counters = {field: iter(range(100)) for field in ("display_name", "description", "tags")}
        sent: dict[str, list[tuple[Any, Any]]] = {field: [] for field in counters}

        def updater(field: str) -> Callable[[], Any]:
            def call() -> Any:
                n = next(counters[field])
                value = {"n": str(n)} if field == "tags" else f"{field}-{n}"
                response = api.patch("/api/v1/jobs/j", json={field: value})
                sent[field].append((value, response))
                return response
            return call

        responses, passes = _race([updater(field) for field in counters], job_pass, store)
        _no_500(responses)
        shown = api.get("/api/v1/jobs/j").json()
        for field, calls in sent.items():
            accepted = [value for value, response in calls if response.status_code == 200]
            assert accepted and shown[field] == accepted[-1], (field, calls)
        with store.session() as session:
            assert session.get(JobRow, "j").run.attempts == passes
