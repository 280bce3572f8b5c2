"""The node agents' API: heartbeat long-poll, reports and shipped files, on a server built
in-process with no reconciler threads (so no node process ever starts)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from api_support import assert_envelope
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cible.core.clock import as_utc
from cible.server.app import create_app
from cible.server.settings import ServerSettings
from cible.server.store.rows import JobRow, NodeRow
from cible.testing import FrozenClock, wait_until

TOKEN = "t"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
PLAN = {"job_name": "j1", "command": "echo hi", "node_count": 1}
LONG_POLL_S = 5.0  # a long-poll that returns well before this did not run to its timeout
# 1 vCPU, 3.5 GB: fits any test machine (a cluster of the `local` provider must fit this host)
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}


@dataclass
class Server:
    app: FastAPI
    client: TestClient
    clock: FrozenClock
    home: Path

    def add_node(self, node_id: str, state: str = "preparing", job_name: str | None = None,
                 compute: str = "cpu-cluster") -> None:
        with self.app.state.store.session() as session:
            session.add(NodeRow(node_id=node_id, compute=compute, provider="local", state=state, job_name=job_name,
                                address="127.0.0.1", info={}, created_at=NOW, updated_at=NOW))

    def set_node(self, node_id: str, **values) -> None:
        with self.app.state.store.session() as session:
            row = session.get(NodeRow, node_id)
            for key, value in values.items():
                setattr(row, key, value)

    def add_job(self, name: str = "j1", status: str = "Queued", nodes: tuple[str, ...] = ("n1",),
                attempt: int = 1) -> dict:
        handle = {"runner": "cluster", "job_name": name, "compute": "cpu-cluster", "attempt": attempt,
                  "nodes": list(nodes), "node_addrs": ["127.0.0.1"] * len(nodes), "master_port": 12345}
        with self.app.state.store.session() as session:
            session.add(JobRow(name=name, display_name=name, experiment_name="exp", status=status,
                               compute="azureml:cpu-cluster", target="cpu-cluster", spec={}, warnings=[],
                               run={"plan": {**PLAN, "job_name": name, "node_count": len(nodes)}, "handle": handle},
                               created_at=NOW, updated_at=NOW))
        return handle

    def set_job(self, name: str, **values) -> None:
        with self.app.state.store.session() as session:
            row = session.get(JobRow, name)
            for key, value in values.items():
                setattr(row, key, value)

    def node(self, node_id: str) -> NodeRow:
        with self.app.state.store.session() as session:
            row = session.get(NodeRow, node_id)
            session.expunge(row)
            return row

    def job_status(self, name: str) -> str:
        with self.app.state.store.session() as session:
            return session.get(JobRow, name).status

    def run_dir(self, job: str) -> Path:
        return self.home / "runs" / job

    # -- the agent's calls --------------------------------------------------------------
    def heartbeat(self, node_id: str, runs: list[dict] | None = None, wait_s: float = 0.0, **extra):
        return self.client.post(f"/api/v1/agent/nodes/{node_id}/heartbeat",
                                json={"runs": runs or [], "wait_s": wait_s, **extra})

    def report(self, node_id: str, job: str, attempt: int = 1, node_rank: int = 0, history: list[str] | None = None,
               **extra):
        body = {"attempt": attempt, "node_rank": node_rank, "history": history or ["Preparing"], **extra}
        return self.client.post(f"/api/v1/agent/nodes/{node_id}/runs/{job}/report", json=body)

    def put(self, node_id: str, job: str, path: str, data: bytes, attempt: int | None = 1, offset: int | None = 0):
        params = {k: v for k, v in {"attempt": attempt, "offset": offset}.items() if v is not None}
        return self.client.put(f"/api/v1/agent/nodes/{node_id}/runs/{job}/files/{path}", params=params, content=data)


@pytest.fixture
def server(migrated_db_url, tmp_path) -> Iterator[Server]:
    clock = FrozenClock(NOW)
    home = tmp_path / "ws"
    app = create_app(ServerSettings(home=home, database_url=migrated_db_url), TOKEN, clock, reconcile=False)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}, raise_server_exceptions=False)
    yield Server(app, client, clock, home)
    app.state.store.close()



def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def in_background(server: Server, node_id: str, then: Callable[[], None]) -> tuple[threading.Thread, list]:
    """Once the node's long-poll waits in the hub, run `then` (from another thread, as a reconciler would)."""
    failures: list[BaseException] = []

    def go() -> None:
        try:
            wait_until(lambda: node_id in server.app.state.hub._events, timeout=LONG_POLL_S * 2, interval=0.005,
                       message=f"the heartbeat of {node_id} to wait in the hub")
            then()
        except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
            failures.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, failures


# -- heartbeat ---------------------------------------------------------------------------------


def test_the_agent_api_needs_the_token(server: Server):
    server.add_node("n1")
    response = server.client.post("/api/v1/agent/nodes/n1/heartbeat", json={}, headers={"Authorization": "Bearer x"})
    assert_envelope(response, 401, "Unauthorized")
    assert server.node("n1").last_heartbeat is None


def test_a_heartbeat_of_an_unknown_node_is_404(server: Server):
    error = assert_envelope(server.heartbeat("nope"), 404, "NotFound")
    assert "nope" in error["message"]


def test_a_heartbeat_of_a_removed_node_is_404(server: Server):
    server.add_node("n1", state="removed")
    assert_envelope(server.heartbeat("n1"), 404, "NotFound")


def test_a_heartbeat_of_a_preparing_node_records_it_and_asks_for_nothing(server: Server):
    server.add_node("n1")
    server.clock.advance(42)
    response = server.heartbeat("n1", usage={"cpu_percent": 12.5})
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["runs"] == [] and reply["stop"] is False and reply["state"] == "preparing"
    assert reply["wait_s"] > 0  # how long the agent's next long-poll may wait
    node = server.node("n1")
    assert node.last_heartbeat is not None
    assert as_utc(node.last_heartbeat) == server.clock.now()
    assert node.info.usage == {"cpu_percent": 12.5}


def test_the_node_listing_shows_the_heartbeat_and_usage(server: Server):
    assert server.client.put("/api/v1/computes/cpu-cluster", json=CLUSTER).status_code == 200
    server.add_node("n1", state="idle")
    assert server.heartbeat("n1", usage={"memory_gb": 1.5}).status_code == 200
    [listed] = server.client.get("/api/v1/computes/cpu-cluster/nodes").json()["value"]
    assert listed["node_id"] == "n1" and listed["node_state"] == "idle"
    assert as_utc(datetime.fromisoformat(listed["last_heartbeat"])) == NOW
    assert listed["usage"] == {"memory_gb": 1.5}


def test_a_heartbeat_leaves_the_nodes_version_alone(server: Server):
    # Liveness is no decision: a heartbeat must not make the cluster pass's write of the node collide.
    server.add_node("n1", state="idle")
    version = server.node("n1").version
    for cpu in (10.0, 20.0):
        response = server.heartbeat("n1", usage={"cpu_percent": cpu}, address="10.0.0.7", sessions=["terminal"],
                                    last_activity_at="2026-01-01T00:00:05+00:00")
        assert response.status_code == 200, response.text
    node = server.node("n1")
    assert node.version == version
    assert node.address == "10.0.0.7" and node.info.usage == {"cpu_percent": 20.0}
    assert node.info.sessions == ["terminal"] and node.info.last_activity_at == NOW.replace(second=5)


def test_a_heartbeat_keeps_what_it_does_not_report_and_a_write_that_came_in_between(server: Server):
    server.add_node("n1", state="idle")
    server.set_node("n1", info={"size": "Standard_DS1_v2", "vcpus": 1, "price_per_hour": 0.5})
    assert server.heartbeat("n1", usage={"cpu_percent": 1.0}).status_code == 200
    info = server.node("n1").info
    assert (info.size, info.vcpus, info.price_per_hour, info.usage) == ("Standard_DS1_v2", 1, 0.5, {"cpu_percent": 1.0})

    # A writer of the node that read it before the heartbeat and writes after it still succeeds
    # (the heartbeat did not bump the version its write checks).
    with server.app.state.store.session() as session:
        row = session.get(NodeRow, "n1")
        assert server.heartbeat("n1", usage={"cpu_percent": 2.0}).status_code == 200
        row.info = row.info.model_copy(update={"price_per_hour": 0.75})
    info = server.node("n1").info
    assert info.price_per_hour == 0.75


@pytest.mark.parametrize("state", ["leaving", "preempted", "unusable"])
def test_a_node_on_its_way_out_is_told_to_stop_at_once(server: Server, state: str):
    server.add_node("n1", state=state)
    response, elapsed = timed(lambda: server.heartbeat("n1", wait_s=LONG_POLL_S))
    assert response.status_code == 200, response.text
    assert response.json()["stop"] is True and response.json()["runs"] == []
    assert elapsed < LONG_POLL_S / 2  # a stop is news: the long-poll does not hold it


def test_a_running_node_gets_its_run_with_the_plan_until_it_has_it(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    reply = server.heartbeat("n1").json()
    assert reply["stop"] is False
    [run] = reply["runs"]
    assert (run["job"], run["attempt"], run["node_rank"], run["cancel"]) == ("j1", 1, 0, False)
    plan = run["plan"]
    assert plan["job_name"] == "j1" and plan["command"] == "echo hi"
    assert (plan["node_rank"], plan["attempt"], plan["master_port"], plan["node_addrs"]) == (0, 1, 12345, ["127.0.0.1"])
    assert Path(plan["resume_dir"]) == server.run_dir("j1") / "checkpoint"

    reply = server.heartbeat("n1", runs=[{"job": "j1", "attempt": 1}]).json()
    [run] = reply["runs"]
    assert (run["job"], run["attempt"], run["plan"]) == ("j1", 1, None)


def test_an_unsettled_heartbeat_returns_at_once_despite_its_wait(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    response, elapsed = timed(lambda: server.heartbeat("n1", wait_s=LONG_POLL_S))
    assert [r["job"] for r in response.json()["runs"]] == ["j1"]
    assert elapsed < LONG_POLL_S / 2


def test_each_node_of_a_job_gets_its_node_rank(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_node("n2", state="running", job_name="j1")
    server.add_job("j1", nodes=("n1", "n2"))
    [run] = server.heartbeat("n2").json()["runs"]
    assert run["node_rank"] == 1 and run["plan"]["node_rank"] == 1
    assert run["plan"]["node_addrs"] == ["127.0.0.1", "127.0.0.1"]


def test_a_cancel_requested_job_comes_with_cancel(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="CancelRequested")
    [run] = server.heartbeat("n1", runs=[{"job": "j1", "attempt": 1}]).json()["runs"]
    assert run["cancel"] is True and run["plan"] is None


def test_a_requeued_job_replaces_the_old_attempt(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", attempt=2)
    reply = server.heartbeat("n1", runs=[{"job": "j1", "attempt": 1}], wait_s=LONG_POLL_S).json()
    [run] = reply["runs"]
    assert run["attempt"] == 2 and run["plan"]["attempt"] == 2  # attempt 1 is not wanted any more: the agent drops it


@pytest.mark.parametrize("status", ["Completed", "Failed", "Canceled"])
def test_a_node_whose_job_ended_is_told_to_drop_it(server: Server, status: str):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status=status)
    response, elapsed = timed(lambda: server.heartbeat("n1", runs=[{"job": "j1", "attempt": 1}], wait_s=LONG_POLL_S))
    assert response.json()["runs"] == [] and response.json()["stop"] is False
    assert elapsed < LONG_POLL_S / 2


def test_a_node_that_is_not_in_the_handle_gets_no_run(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", nodes=("n9",))
    assert server.heartbeat("n1").json()["runs"] == []


def test_an_idle_node_gets_no_run(server: Server):
    server.add_node("n1", state="idle", job_name="j1")  # a stale job name on an idle node means nothing
    server.add_job("j1")
    assert server.heartbeat("n1").json()["runs"] == []


# -- the long-poll --------------------------------------------------------------------------------


def test_a_settled_heartbeat_holds_its_reply_while_nothing_changes(server: Server):
    server.add_node("n1", state="idle")
    response, elapsed = timed(lambda: server.heartbeat("n1", wait_s=0.3))
    assert response.status_code == 200 and response.json()["runs"] == []
    assert elapsed >= 0.25


def test_a_notify_wakes_a_waiting_heartbeat(server: Server):
    server.add_node("n1", state="idle")
    thread, failures = in_background(server, "n1", lambda: server.app.state.hub.notify("n1"))
    response, elapsed = timed(lambda: server.heartbeat("n1", wait_s=LONG_POLL_S))
    thread.join(LONG_POLL_S)
    assert not failures, failures
    assert response.status_code == 200 and response.json()["stop"] is False
    assert elapsed < LONG_POLL_S / 2


# preparing: a new node's first heartbeat, a long-poll as its agent sends it; the pass that heartbeat
# wakes assigns it the job that waited for it
@pytest.mark.parametrize("state", ["idle", "preparing"])
def test_a_job_assigned_during_the_long_poll_is_in_its_reply(server: Server, state: str):
    server.add_node("n1", state=state)

    def assign() -> None:  # what the cluster reconciler does, then it wakes the node
        server.add_job("j1")
        server.set_node("n1", state="running", job_name="j1")
        server.app.state.hub.notify("n1")

    thread, failures = in_background(server, "n1", assign)
    response, elapsed = timed(lambda: server.heartbeat("n1", wait_s=LONG_POLL_S))
    thread.join(LONG_POLL_S)
    assert not failures, failures
    [run] = response.json()["runs"]
    assert run["job"] == "j1" and run["plan"]["node_rank"] == 0
    assert elapsed < LONG_POLL_S / 2


def test_a_cancel_during_the_long_poll_is_in_its_reply(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Running")

    def cancel() -> None:
        server.set_job("j1", status="CancelRequested")
        server.app.state.hub.notify("n1")

    thread, failures = in_background(server, "n1", cancel)
    response, elapsed = timed(lambda: server.heartbeat("n1", runs=[{"job": "j1", "attempt": 1}], wait_s=LONG_POLL_S))
    thread.join(LONG_POLL_S)
    assert not failures, failures
    [run] = response.json()["runs"]
    assert run["cancel"] is True
    assert elapsed < LONG_POLL_S / 2


# -- reports --------------------------------------------------------------------------------------


def test_a_report_of_the_current_attempt_is_stored(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Running")
    response = server.report("n1", "j1", history=["Preparing", "Running"], exit_code=None)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": True}
    stored = json.loads((server.run_dir("j1") / "reports" / "attempt-1-node-0.json").read_text())
    assert stored["history"] == ["Preparing", "Running"]
    assert (stored["attempt"], stored["node_rank"], stored["ended"]) == (1, 0, False)


def test_a_report_moves_the_job_through_the_job_reconciler(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Queued")
    assert server.report("n1", "j1", history=["Preparing", "Starting", "Running"]).status_code == 200
    server.app.state.reconciler.reconcile_once()
    assert server.job_status("j1") == "Running"
    assert server.report("n1", "j1", history=["Preparing", "Starting", "Running", "Finalizing", "Completed"],
                         exit_code=0, ended=True).status_code == 200
    server.app.state.reconciler.reconcile_once()
    assert server.job_status("j1") == "Completed"


def test_a_report_of_a_stale_attempt_is_409(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", attempt=2)
    error = assert_envelope(server.report("n1", "j1", attempt=1), 409, "Conflict")
    assert "attempt 1" in error["message"]
    assert not (server.run_dir("j1") / "reports").exists()


def test_a_report_with_the_wrong_node_rank_is_409(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_node("n2", state="running", job_name="j1")
    server.add_job("j1", nodes=("n1", "n2"))
    assert_envelope(server.report("n2", "j1", node_rank=0), 409, "Conflict")
    assert server.report("n2", "j1", node_rank=1).status_code == 200
    assert (server.run_dir("j1") / "reports" / "attempt-1-node-1.json").is_file()
    assert not (server.run_dir("j1") / "reports" / "attempt-1-node-0.json").exists()


def test_a_report_from_a_node_not_running_the_job_is_409(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_node("n3", state="idle")
    server.add_job("j1")
    assert_envelope(server.report("n3", "j1"), 409, "Conflict")


def test_a_report_of_an_unknown_job_is_404(server: Server):
    server.add_node("n1", state="idle")
    assert_envelope(server.report("n1", "nojob"), 404, "NotFound")


def test_a_report_with_an_unknown_status_is_refused(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Running")
    assert_envelope(server.report("n1", "j1", history=["Preparing", "Running", "Bogus"]), 422)
    server.app.state.reconciler.reconcile_once()  # the reconciler still makes its pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_final_report_carries_the_last_bytes_of_its_files(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Running")
    assert server.put("n1", "j1", "user_logs/std_log.txt", b"hello ").status_code == 200  # shipped while running
    files = [{"path": "user_logs/std_log.txt", "offset": 6, "data": _b64(b"world")},
             {"path": "system_logs/launcher.txt", "data": ""},  # an empty file: it exists
             {"path": "outputs/model/w.bin", "data": _b64(b"\x00\x01")}]
    response = server.report("n1", "j1", history=["Preparing", "Running", "Completed"], exit_code=0, ended=True,
                             files=files)
    assert response.status_code == 200, response.text
    artifacts = server.run_dir("j1") / "artifacts"
    assert (artifacts / "user_logs" / "std_log.txt").read_bytes() == b"hello world"
    assert (artifacts / "system_logs" / "launcher.txt").read_bytes() == b""
    assert (artifacts / "outputs" / "model" / "w.bin").read_bytes() == b"\x00\x01"
    stored = json.loads((server.run_dir("j1") / "reports" / "attempt-1-node-0.json").read_text())
    assert "files" not in stored and stored["ended"] is True


@pytest.mark.parametrize(("file", "field"), [
    ({"path": "../escape.txt", "data": ""}, "files[1].path"),
    ({"path": "user_logs/a.txt", "data": "not base64!"}, "files[1].data"),
])
def test_a_report_with_a_bad_file_is_refused_whole(server: Server, file: dict, field: str):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Running")
    good = {"path": "user_logs/std_log.txt", "data": _b64(b"hi")}
    error = assert_envelope(server.report("n1", "j1", history=["Preparing", "Running", "Completed"], ended=True,
                                          files=[good, file]), 400, "InvalidRequest")
    assert field in error["message"]
    assert not (server.run_dir("j1") / "reports").exists()  # nothing taken: neither the report nor a file
    assert not (server.run_dir("j1") / "artifacts" / "user_logs" / "std_log.txt").exists()


def test_files_in_a_report_of_a_job_that_ended_are_409(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1", status="Completed")
    files = [{"path": "user_logs/std_log.txt", "data": _b64(b"late")}]
    assert_envelope(server.report("n1", "j1", history=["Preparing", "Completed"], ended=True, files=files),
                    409, "Conflict")
    assert not (server.run_dir("j1") / "artifacts" / "user_logs" / "std_log.txt").exists()


# -- files ----------------------------------------------------------------------------------------


def test_chunks_are_written_at_their_offsets(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    target = server.run_dir("j1") / "artifacts" / "user_logs" / "std_log.txt"
    first = server.put("n1", "j1", "user_logs/std_log.txt", b"hello ")
    assert first.status_code == 200, first.text
    assert first.json() == {"path": "user_logs/std_log.txt", "offset": 0, "size": 6}
    assert server.put("n1", "j1", "user_logs/std_log.txt", b"world", offset=6).status_code == 200
    assert server.put("n1", "j1", "user_logs/std_log.txt", b"world", offset=6).status_code == 200  # resent
    assert target.read_bytes() == b"hello world"
    assert server.put("n1", "j1", "user_logs/std_log.txt", b"new", offset=0).status_code == 200
    assert target.read_bytes() == b"new"
    assert server.put("n1", "j1", "outputs/model/w.bin", b"\x00\x01").status_code == 200
    assert (server.run_dir("j1") / "artifacts" / "outputs" / "model" / "w.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("path", ["../x", "%2E%2E/x", "user_logs/%2E%2E/%2E%2E/x", "secrets/x", "reports/x",
                                  "user_logs%5C..%5C..%5Cx", "user_logs//x", "%2Fetc/x"])
def test_bad_file_paths_are_refused(server: Server, path: str):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    assert_envelope(server.put("n1", "j1", path, b"x"))
    written = [p for p in server.home.rglob("*") if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm")]
    assert written == []


def test_files_of_a_stale_attempt_or_another_node_are_409(server: Server):
    server.add_node("n1", state="running", job_name="j1")
    server.add_node("n3", state="idle")
    server.add_job("j1", attempt=2)
    assert_envelope(server.put("n1", "j1", "user_logs/std_log.txt", b"x", attempt=1), 409, "Conflict")
    assert_envelope(server.put("n3", "j1", "user_logs/std_log.txt", b"x", attempt=2), 409, "Conflict")
    assert not (server.run_dir("j1") / "artifacts").exists()


def test_files_of_an_unknown_job_are_404(server: Server):
    server.add_node("n1", state="idle")
    assert_envelope(server.put("n1", "nojob", "user_logs/std_log.txt", b"x"), 404, "NotFound")


@pytest.mark.parametrize(
    "path",
    [
        "user_logs",  # a bare artifact folder is not a file
        "user_logs/a%00b",
        "outputs/" + "a" * 300,  # over the file-name limit
    ],
)
def test_unstorable_file_paths_are_a_4xx(server: Server, path: str):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    assert_envelope(server.put("n1", "j1", path, b"x"))
    assert server.put("n1", "j1", "user_logs/std_log.txt", b"ok").status_code == 200


@pytest.mark.parametrize(("first", "second"), [("outputs/d", "outputs/d/f"), ("outputs/d/f", "outputs/d")])
def test_a_path_clashing_with_an_earlier_file_is_a_4xx(server: Server, first: str, second: str):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    assert server.put("n1", "j1", first, b"x").status_code == 200
    assert_envelope(server.put("n1", "j1", second, b"y"))


@pytest.mark.parametrize("offset", [2**63, 2**40, 5])
def test_an_offset_past_the_end_of_the_file_is_a_4xx(server: Server, offset: int):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    assert_envelope(server.put("n1", "j1", "outputs/big", b"x", offset=offset))
    assert not (server.run_dir("j1") / "artifacts" / "outputs" / "big").exists()


# -- body validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.heartbeat("n1", wait_s=61), "wait_s"),
        (lambda s: s.heartbeat("n1", wait_s=-1), "wait_s"),
        (lambda s: s.heartbeat("n1", runs=[{"job": "j1", "attempt": 0}]), "runs.0.attempt"),
        (lambda s: s.heartbeat("n1", runs=[{"attempt": 1}]), "runs.0.job"),
        (lambda s: s.client.post("/api/v1/agent/nodes/n1/heartbeat", content=b"{not json",
                                 headers={"content-type": "application/json"}), None),
        (lambda s: s.report("n1", "j1", attempt=0), "attempt"),
        (lambda s: s.report("n1", "j1", node_rank=-1), "node_rank"),
        (lambda s: s.client.post("/api/v1/agent/nodes/n1/runs/j1/report", json={"attempt": 1}), "node_rank"),
        (lambda s: s.put("n1", "j1", "user_logs/x", b"x", attempt=0), "attempt"),
        (lambda s: s.put("n1", "j1", "user_logs/x", b"x", attempt=None), "attempt"),
        (lambda s: s.put("n1", "j1", "user_logs/x", b"x", offset=-1), "offset"),
    ],
)
def test_bad_bodies_are_422_with_the_envelope(server: Server, call, field: str | None):
    server.add_node("n1", state="running", job_name="j1")
    server.add_job("j1")
    error = assert_envelope(call(server), 422, "InvalidRequest")
    if field is not None:
        assert field in [d["field"].removeprefix("query.") for d in error["details"]], error
    assert server.node("n1").last_heartbeat is None  # a refused heartbeat is not a sign of life
    assert not (server.run_dir("j1") / "reports").exists() and not (server.run_dir("j1") / "artifacts").exists()
