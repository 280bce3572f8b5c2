"""A batch job's run as the server keeps it (services/batch_runs.py) on a real SQLite store, driven directly;
and the job token's reach: its own job's batch routes, nothing else."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cible.core.models.records import RunRecord
from cible.server.app import create_app
from cible.server.auth import _refusal
from cible.server.services.batch_runs import BatchRunService
from cible.server.settings import ServerSettings
from cible.server.store.db import Store
from cible.server.store.rows import JobRow
from cible.server.tokens import Scope, Tokens
from cible.serving.batch.output import write_part
from cible.testing import FrozenClock

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
BLOCK = {"endpoint": "e", "deployment": "d", "mini_batch_size": 2, "max_concurrency_per_instance": 2,
         "output_action": "append_row", "output_file_name": "predictions.csv", "max_retries": 1, "timeout": 30,
         "error_threshold": -1, "logging_level": "info", "input": "input_data", "output": "score", "mlflow": False}


def add_job(store: Store, name: str, output: Path, **block) -> None:  # noqa: ANN003
    plan = {"job_name": name, "batch": {**BLOCK, **block},
            "outputs": {"score": {"type": "uri_folder", "mode": "rw_mount", "uri": "x", "local_path": str(output)}}}
    with store.session() as session:
        session.add(JobRow(name=name, job_type="batch", display_name=name, experiment_name="e", status="Running",
                           target="local", spec={}, run=RunRecord(plan=plan), created_at=NOW, updated_at=NOW,
                           batch_of="e/d"))


@pytest.fixture
def service(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    clock = FrozenClock(NOW)
    try:
        yield BatchRunService(store, clock), store, clock
    finally:
        store.close()


def test_start_records_the_split_once_and_later_callers_get_the_same(service, tmp_path: Path) -> None:
    runs, store, _ = service
    add_job(store, "j", tmp_path / "out")
    assert runs.start("j", {})["wait_ms"] > 0  # a node without the listing waits for node 0's
    first = runs.start("j", {"files": ["c.csv", "a.csv", "b.csv"]})
    assert (first["total"], first["files"], first["settings"]["mini_batch_size"]) == (2, 3, 2)
    again = runs.start("j", {"files": ["z.csv"]})
    assert (again["total"], again["files"]) == (2, 3)
    claim = runs.claim("j", {"worker": "w1"})
    assert (claim["kind"], claim["idx"], claim["files"]) == ("assign", 0, ["a.csv", "b.csv"])


def test_an_empty_or_missing_input_fails_the_run_with_its_reason(service, tmp_path: Path) -> None:
    runs, store, _ = service
    add_job(store, "empty", tmp_path / "o1")
    add_job(store, "missing", tmp_path / "o2")
    assert runs.start("empty", {"files": []})["outcome"] == "failed"
    assert "no files" in runs.progress("empty")["reason"]
    answer = runs.start("missing", {"error": "the input /nowhere does not exist"})
    assert (answer["outcome"], answer["reason"]) == ("failed", "the input /nowhere does not exist")
    assert runs.claim("missing", {"worker": "w"}) == {"kind": "finished", "failed": True,
                                                      "reason": "the input /nowhere does not exist", "stale": False}


def test_bad_file_names_and_bad_claims_are_refused(service, tmp_path: Path) -> None:
    from cible.core.errors import InvalidRequestError

    runs, store, _ = service
    add_job(store, "j", tmp_path / "out")
    for bad in (["../x"], ["a/b"], [""], "a.csv", [1]):
        with pytest.raises(InvalidRequestError):
            runs.start("j", {"files": bad})
    runs.start("j", {"files": ["a"]})
    for bad in ({"worker": 1}, {"worker": "w" * 65}, {"worker": "w", "attempt": -1},
                {"worker": "w", "result": [1]}, {"worker": "w", "result": {"idx": 2**70, "ok": True}},
                {"worker": "w", "result": {"idx": 0, "ok": True, "worker": "x"}}):
        with pytest.raises(InvalidRequestError):
            runs.claim("j", bad)


def test_a_run_retries_a_failure_joins_the_parts_in_order_and_lists_the_failed_batch(service, tmp_path: Path) -> None:
    runs, store, clock = service
    output = tmp_path / "out"
    add_job(store, "j", output)
    runs.start("j", {"files": [f"f{i}.csv" for i in range(6)]})  # 3 mini-batches
    a = runs.claim("j", {"worker": "w1"})
    b = runs.claim("j", {"worker": "w2"})
    write_part(str(output), a["idx"], ["a1", "a2"])
    c = runs.claim("j", {"worker": "w1", "result": {"idx": a["idx"], "ok": True, "rows": 2}})
    assert c["idx"] == 2
    write_part(str(output), c["idx"], ["c1", "c2"])
    retry = runs.claim("j", {"worker": "w2", "result": {"idx": b["idx"], "ok": False, "error": "ValueError: bad"}})
    assert retry["idx"] == b["idx"]  # retried (max_retries 1)
    clock.advance(2)
    assert runs.claim("j", {"worker": "w1", "result": {"idx": 2, "ok": True, "rows": 2}})["kind"] == "wait"
    end = runs.claim("j", {"worker": "w2", "result": {"idx": 1, "ok": False, "error": "ValueError: bad"}})
    assert end["kind"] == "finished" and not end["failed"]  # error_threshold -1
    assert (output / "predictions.csv").read_text() == "a1\na2\nc1\nc2\n"
    view = runs.progress("j")
    assert (view["total"], view["done"], view["failed"], view["rows"], view["outcome"]) == (3, 2, 1, 4, "completed")
    assert view["rows_per_second"] == 2.0
    assert view["failed_mini_batches"] == [{"index": 1, "files": ["f2.csv", "f3.csv"], "tries": 2,
                                            "error": "ValueError: bad"}]


def test_error_threshold_exceeded_fails_the_run_and_keeps_partial_results(service, tmp_path: Path) -> None:
    runs, store, _ = service
    output = tmp_path / "out"
    add_job(store, "j", output, error_threshold=1, max_retries=0)
    runs.start("j", {"files": ["a", "b", "c", "d"]})
    first = runs.claim("j", {"worker": "w1"})
    second = runs.claim("j", {"worker": "w2"})
    write_part(str(output), first["idx"], ["ok"])
    runs.claim("j", {"worker": "w1", "result": {"idx": first["idx"], "ok": True, "rows": 2}, "claim": False})
    end = runs.claim("j", {"worker": "w2", "result": {"idx": second["idx"], "ok": False, "error": "boom"}})
    assert end["kind"] == "finished" and end["failed"] and "error_threshold 1 exceeded: 2 files failed" in end["reason"]
    assert (output / "predictions.csv").read_text() == "ok\n"
    assert runs.progress("j")["outcome"] == "failed"


def test_a_lost_worker_and_a_failure_to_start(service, tmp_path: Path) -> None:
    runs, store, _ = service
    add_job(store, "j", tmp_path / "out")
    runs.start("j", {"files": ["a", "b"]})
    held = runs.claim("j", {"worker": "w1"})
    assert runs.lost("j", {"worker": "w1", "error": "worker died: signal SIGKILL"}) == {"failed_tries": [held["idx"]]}
    again = runs.claim("j", {"worker": "w2"})
    assert again["idx"] == held["idx"]
    assert runs.fail("j", {"reason": "init() failed: OSError: no model"})["outcome"] == "failed"
    assert runs.claim("j", {"worker": "w2"})["reason"] == "init() failed: OSError: no model"


def test_a_job_token_reaches_its_own_batch_routes_only() -> None:
    mine = Scope("job", "j1", "s")
    for path in ("/api/v1/jobs/j1/batch", "/api/v1/jobs/j1/batch:claim", "/api/v1/jobs/j1/batch:start"):
        assert _refusal(mine, path) is None, path
    for path in ("/api/v1/jobs/j2/batch:claim", "/api/v1/jobs/j1", "/api/v1/jobs/j1/batchx",
                 "/api/v1/jobs/j1x/batch:claim", "/api/v1/jobs/j1/outputs", "/api/v1/computes"):
        assert _refusal(mine, path) is not None, path


def test_the_api_refuses_another_jobs_batch_route_and_an_old_submissions_token(tmp_path: Path) -> None:
    token = "workspace-token"
    app = create_app(ServerSettings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'c.db'}",
                                    tracking=False), token, FrozenClock(NOW), reconcile=False)
    try:
        add_job(app.state.store, "j1", tmp_path / "out")
        with app.state.store.session() as session:
            row = session.get(JobRow, "j1")
            row.run = row.run.model_copy(update={"plan": {**row.run.plan, "token_salt": "s1"}})
        client, tokens = TestClient(app, raise_server_exceptions=False), Tokens(token)
        own = {"Authorization": f"Bearer {tokens.job('j1', 's1')}"}
        answer = client.post("/api/v1/jobs/j1/batch:start", json={"files": ["a.csv"]}, headers=own)
        assert answer.status_code == 200 and answer.json()["total"] == 1
        assert client.post("/api/v1/jobs/j2/batch:start", json={}, headers=own).status_code == 403
        old = {"Authorization": f"Bearer {tokens.job('j1', 'old')}"}
        assert client.post("/api/v1/jobs/j1/batch:claim", json={"worker": "w"}, headers=old).status_code == 403
        shown = client.get("/api/v1/jobs/j1", headers={"Authorization": f"Bearer {token}"}).json()
        assert shown["batch"]["total"] == 1 and shown["batch"]["pending"] == 1
    finally:
        app.state.store.close()


def test_a_restarted_server_counts_the_run_again_from_its_rows(service, tmp_path: Path) -> None:
    runs, store, clock = service
    add_job(store, "j", tmp_path / "out", mini_batch_size=1)
    runs.start("j", {"files": ["a", "b"]})
    first = runs.claim("j", {"worker": "w1"})
    runs.claim("j", {"worker": "w1", "result": {"idx": first["idx"], "ok": True, "rows": 3}, "claim": False})
    restarted = BatchRunService(store, clock)  # keeps no tally yet
    second = restarted.claim("j", {"worker": "w2"})
    end = restarted.claim("j", {"worker": "w2", "result": {"idx": second["idx"], "ok": True, "rows": 4}})
    assert end["kind"] == "finished" and restarted.progress("j")["rows"] == 7
