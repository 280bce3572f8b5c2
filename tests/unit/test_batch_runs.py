"""A batch job's run as the server keeps it (services/batch_runs.py) on a real SQLite store, driven directly;
and the job token's reach: its own job's batch routes, nothing else."""

from __future__ import annotations

import os
import threading
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
from cible.serving.batch.output import part_path, write_part
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
    assert runs.claim("missing", {"worker": "w"}) == {"kind": "finished", "failed": True, "joined": True,
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
    assert end["kind"] == "finished" and not end["failed"] and end["joined"]  # error_threshold -1
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
    assert runs.lost("j", {"worker": "w1", "error": "worker died: signal SIGKILL", "idx": held["idx"]}) == {
        "failed_tries": [held["idx"]], "requeued": []}
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


def test_a_lost_worker_counts_a_try_of_the_batch_it_ran_only(service, tmp_path: Path) -> None:
    runs, store, _ = service
    add_job(store, "j", tmp_path / "out", mini_batch_size=1, max_concurrency_per_instance=1, max_retries=0)
    runs.start("j", {"files": ["a", "b", "c", "d"]})
    current = runs.claim("j", {"worker": "w1"})
    ahead = runs.claim("j", {"worker": "w1", "ahead": True, "running": current["idx"]})
    assert (current["idx"], ahead["idx"]) == (0, 1)
    answer = runs.lost("j", {"worker": "w1", "error": "worker died: exit code 9", "idx": current["idx"]})
    assert answer == {"failed_tries": [0], "requeued": [1]}
    view = runs.progress("j")
    assert (view["failed"], view["pending"], view["running"]) == (1, 3, 0)  # max_retries 0: 0 failed, 1 redone
    assert view["failed_mini_batches"][0]["error"] == "worker died: exit code 9"
    again = runs.claim("j", {"worker": "w2"})
    assert again["idx"] == 1
    assert runs.lost("j", {"worker": "w2", "error": "died", "idx": None}) == {"failed_tries": [], "requeued": [1]}
    from cible.core.errors import InvalidRequestError

    for bad in ("1", True, -1, 2**70):
        with pytest.raises(InvalidRequestError):
            runs.lost("j", {"worker": "w2", "error": "died", "idx": bad})


def test_a_retried_claim_gets_the_same_batch(service, tmp_path: Path) -> None:
    """The server committed a claim but its answer was lost (a restart, a reset, a timeout): the client's
    retry of the same body gets the same mini-batch, and a report is never counted twice."""
    runs, store, _ = service
    output = tmp_path / "out"
    add_job(store, "j", output, mini_batch_size=1, max_concurrency_per_instance=1)
    runs.start("j", {"files": [f"f{i}" for i in range(6)]})
    first = runs.claim("j", {"worker": "w1"})
    assert runs.claim("j", {"worker": "w1"}) == first
    ahead = {"worker": "w1", "ahead": True, "running": first["idx"]}
    following = runs.claim("j", ahead)
    assert following["idx"] == 1 and runs.claim("j", ahead) == following
    write_part(str(output), 0, ["r0", "r0"])
    body = {"worker": "w1", "ahead": True, "running": 1, "result": {"idx": 0, "ok": True, "rows": 2}}
    third = runs.claim("j", body)
    assert third["idx"] == 2 and runs.claim("j", body) == third
    view = runs.progress("j")
    assert (view["done"], view["rows"], view["running"], view["pending"]) == (1, 2, 2, 3)


def test_the_ahead_rule_counts_what_is_pending_across_retries_and_restarts(service, tmp_path: Path) -> None:
    """5 mini-batches, 2 workers: mini-batch 0 failed once (pending again), 1-3 done, 4 running. One pending
    for two workers: no claim ahead (the free worker takes it), though its index is far from the end."""
    runs, store, clock = service
    add_job(store, "j", tmp_path / "out", mini_batch_size=1, max_concurrency_per_instance=2, max_retries=2)
    runs.start("j", {"files": [f"f{i}" for i in range(5)]})
    assert runs.claim("j", {"worker": "w1"})["idx"] == 0
    for idx in (1, 2, 3):
        assert runs.claim("j", {"worker": "w2"})["idx"] == idx
        runs.claim("j", {"worker": "w2", "result": {"idx": idx, "ok": True, "rows": 1}, "claim": False})
    assert runs.claim("j", {"worker": "w2"})["idx"] == 4
    runs.claim("j", {"worker": "w1", "result": {"idx": 0, "ok": False, "error": "boom"}, "claim": False})
    for service_ in (runs, BatchRunService(store, clock)):  # the same after a restart
        assert service_.claim("j", {"worker": "w2", "ahead": True, "running": 4}) == {"kind": "wait", "ms": 0}
    assert runs.claim("j", {"worker": "w1"})["idx"] == 0


def test_no_one_is_told_finished_before_the_join_is_done(service, tmp_path: Path, monkeypatch) -> None:
    """w2's report ends the run; w1 asks again while the server joins: it is told to wait, not finished (it
    would look for the file, find none and join the parts itself, racing the server). Once the join is
    done every answer is finished with `joined`, and the file is whole."""
    import cible.server.services.batch_runs as batch_runs

    runs, store, _ = service
    output = tmp_path / "out"
    add_job(store, "j", output, mini_batch_size=1)
    runs.start("j", {"files": ["a", "b"]})
    first, second = runs.claim("j", {"worker": "w1"}), runs.claim("j", {"worker": "w2"})
    for claim in (first, second):
        write_part(str(output), claim["idx"], [f"row{claim['idx']}"] * 100)
    assert runs.claim("j", {"worker": "w1", "result": {"idx": first["idx"], "ok": True, "rows": 100}})["kind"] == "wait"
    during: list[dict] = []
    real_join = batch_runs.join_parts

    def slow_join(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        asking = threading.Thread(target=lambda: during.append(runs.claim("j", {"worker": "w1"})))
        asking.start()
        asking.join(timeout=10)  # a claim that blocked until the join ends would miss this
        return real_join(*args, **kwargs)

    monkeypatch.setattr(batch_runs, "join_parts", slow_join)
    end = runs.claim("j", {"worker": "w2", "result": {"idx": second["idx"], "ok": True, "rows": 100}})
    assert during == [{"kind": "wait", "ms": batch_runs.WAIT_MS}]
    whole = "row0\n" * 100 + "row1\n" * 100
    assert end["kind"] == "finished" and end["joined"] and (output / "predictions.csv").read_text() == whole
    again = runs.claim("j", {"worker": "w1"})
    assert again["kind"] == "finished" and again["joined"] and not again["failed"]


def test_a_run_whose_join_a_killed_server_never_finished_is_joined_at_the_next_answer(
        service, tmp_path: Path, monkeypatch) -> None:
    """The run's end is committed, then the server dies before the join ends (here: the join never runs). The
    parts are still there; the next claim, by a worker of the restarted server, joins them."""
    import cible.server.services.batch_runs as batch_runs

    runs, store, clock = service
    output = tmp_path / "out"
    add_job(store, "j", output, mini_batch_size=1)
    runs.start("j", {"files": ["a", "b"]})
    first, second = runs.claim("j", {"worker": "w1"}), runs.claim("j", {"worker": "w2"})
    for claim in (first, second):
        write_part(str(output), claim["idx"], [f"row{claim['idx']}"])
    runs.claim("j", {"worker": "w1", "result": {"idx": first["idx"], "ok": True, "rows": 1}})
    monkeypatch.setattr(batch_runs, "join_parts", lambda *args, **kwargs: None)  # killed before it joined
    runs.claim("j", {"worker": "w2", "result": {"idx": second["idx"], "ok": True, "rows": 1}})
    assert not (output / "predictions.csv").exists()
    monkeypatch.undo()
    restarted = BatchRunService(store, clock)
    answer = restarted.claim("j", {"worker": "w1"})
    assert answer["kind"] == "finished" and answer["joined"] and not answer["failed"]
    assert (output / "predictions.csv").read_text() == "row0\nrow1\n"
    assert sorted(p.name for p in output.iterdir()) == ["predictions.csv"]


def test_an_upload_mode_output_is_joined_by_the_node(service, tmp_path: Path) -> None:
    runs, store, _ = service
    output = tmp_path / "out"
    add_job(store, "j", output, mini_batch_size=1)
    with store.session() as session:
        row = session.get(JobRow, "j")
        plan = {**row.run.plan, "outputs": {"score": {**row.run.plan["outputs"]["score"], "mode": "upload"}}}
        row.run = row.run.model_copy(update={"plan": plan})
    runs.start("j", {"files": ["a"]})
    first = runs.claim("j", {"worker": "w1"})
    write_part(str(output), 0, ["a"])
    end = runs.claim("j", {"worker": "w1", "result": {"idx": first["idx"], "ok": True, "rows": 1}})
    assert end["kind"] == "finished" and end["joined"] is False and not (output / "predictions.csv").exists()


def test_a_planted_link_as_a_part_is_not_copied_and_a_failed_join_fails_the_run(service, tmp_path: Path) -> None:
    runs, store, _ = service
    secret = tmp_path / "token"
    secret.write_text("WORKSPACE-SECRET\n")
    output = tmp_path / "out"
    add_job(store, "j", output, mini_batch_size=1)
    runs.start("j", {"files": ["a", "b"]})
    first, second = runs.claim("j", {"worker": "w1"}), runs.claim("j", {"worker": "w2"})
    write_part(str(output), first["idx"], ["a"])
    os.symlink(secret, part_path(str(output), second["idx"]))  # the scoring script plants it, then reports done
    runs.claim("j", {"worker": "w1", "result": {"idx": first["idx"], "ok": True, "rows": 1}, "claim": False})
    end = runs.claim("j", {"worker": "w2", "result": {"idx": second["idx"], "ok": True, "rows": 1}})
    assert end["kind"] == "finished" and not end["failed"]
    assert (output / "predictions.csv").read_text() == "a\n"

    blocked = tmp_path / "blocked"  # the job made a folder of the file's name: the join cannot replace it
    add_job(store, "k", blocked, mini_batch_size=1)
    (blocked / "predictions.csv").mkdir(parents=True)
    runs.start("k", {"files": ["a"]})
    runs.claim("k", {"worker": "w1"})
    write_part(str(blocked), 0, ["a"])
    end = runs.claim("k", {"worker": "w1", "result": {"idx": 0, "ok": True, "rows": 1}})
    assert end["kind"] == "finished" and end["failed"] and "joining the results into predictions.csv failed" \
        in end["reason"]
    assert runs.progress("k")["outcome"] == "failed" and "joining" in runs.progress("k")["reason"]
    assert runs.claim("k", {"worker": "w2"})["failed"]  # every later answer says so

    add_job(store, "bad-name", tmp_path / "o3", mini_batch_size=1, output_file_name=".cible-batch")  # an old plan
    runs.start("bad-name", {"files": ["a"]})
    runs.claim("bad-name", {"worker": "w1"})
    end = runs.claim("bad-name", {"worker": "w1", "result": {"idx": 0, "ok": True, "rows": 1}})
    assert end["failed"] and "parts folder" in end["reason"]


def test_summary_only_counts_a_shortfall_of_rows_as_failed_files(service, tmp_path: Path) -> None:
    runs, store, _ = service
    add_job(store, "j", tmp_path / "out", output_action="summary_only", error_threshold=0, max_retries=0)
    runs.start("j", {"files": ["a", "b"]})
    runs.claim("j", {"worker": "w1"})
    end = runs.claim("j", {"worker": "w1", "result": {"idx": 0, "ok": True, "rows": 1}})
    assert end["kind"] == "finished" and end["failed"] and end["joined"]
    assert "error_threshold 0 exceeded: 1 files failed" in end["reason"]
    assert not (tmp_path / "out" / "predictions.csv").exists()
