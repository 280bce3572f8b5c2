"""The pure parts of a cluster job's run: merging node reports, artifact paths and chunks,
node plans, what the agent is told, where a node ships its files, and the long-poll hub."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from cible.agent.shipping import shipped_name
from cible.core.models.records import ClusterHandle
from cible.server.clusters.agents import AgentService
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.runs import artifact_path, merge_reports, node_plan, write_chunk
from cible.testing import wait_until
from cible.workspace import WorkspacePaths


def report(*history: str, error: dict | None = None, exit_code: int | None = None) -> dict:
    return {"history": list(history), "error": error, "exit_code": exit_code}


# -- merge_reports -----------------------------------------------------------------------------


def test_node_rank_zero_progress_drives_the_history():
    merged = merge_reports([report("Preparing", "Starting", "Running"), report("Preparing")])
    assert merged.history == ["Preparing", "Starting", "Running"]
    assert merged.error is None and not merged.ended


def test_other_nodes_progress_does_not_drive_the_history():
    merged = merge_reports([report("Preparing"), report("Preparing", "Starting", "Running")])
    assert merged.history == ["Preparing"]


def test_missing_reports_leave_the_job_in_progress():
    assert merge_reports([None, None]).history == []
    merged = merge_reports([report("Preparing", "Running"), None])
    assert merged.history == ["Preparing", "Running"] and not merged.ended
    # Every node that reported ended, one has not reported yet: still in progress.
    merged = merge_reports([report("Running", "Completed", exit_code=0), None])
    assert merged.history == ["Running"] and not merged.ended


def test_a_failed_node_fails_a_multi_node_job_naming_its_rank():
    error = {"code": "UserError", "message": "exit code 3"}
    merged = merge_reports([report("Preparing", "Running"), report("Running", "Failed", error=error, exit_code=3)])
    assert merged.history == ["Preparing", "Running", "Failed"]
    assert merged.error == {"code": "UserError", "message": "node rank 1: exit code 3"}
    assert merged.exit_code == 3
    assert error["message"] == "exit code 3"  # the report itself is left alone


def test_a_failure_wins_over_other_nodes_ending():
    merged = merge_reports([report("Running", "Completed", exit_code=0),
                            report("Running", "Failed", error={"code": "X", "message": "boom"}, exit_code=1)])
    assert merged.history == ["Running", "Failed"]
    assert merged.error["message"] == "node rank 1: boom" and merged.exit_code == 1


def test_a_failure_of_rank_zero_is_named_too():
    merged = merge_reports([report("Running", "Failed", error={"code": "X", "message": "oops"}), report("Running")])
    assert merged.history == ["Running", "Failed"]
    assert merged.error["message"] == "node rank 0: oops"


def test_a_failure_before_rank_zero_reported_uses_the_failed_node_progress():
    merged = merge_reports([None, report("Preparing", "Failed", error={"code": "X", "message": "no"})])
    assert merged.history == ["Preparing", "Failed"]
    assert merged.error["message"] == "node rank 1: no"


def test_a_single_node_failure_keeps_its_message():
    error = {"code": "UserError", "message": "exit code 3"}
    merged = merge_reports([report("Preparing", "Running", "Failed", error=error, exit_code=3)])
    assert merged.history == ["Preparing", "Running", "Failed"]
    assert merged.error == error and merged.exit_code == 3


def test_a_failure_without_an_error_gets_one():
    merged = merge_reports([report("Running", "Failed")])
    assert merged.history == ["Running", "Failed"]
    assert merged.error["code"] and merged.error["message"]


def test_completed_only_when_every_node_completed():
    merged = merge_reports([report("Running", "Completed", exit_code=0), report("Running")])
    assert not merged.ended
    merged = merge_reports([report("Running", "Completed", exit_code=0), report("Running", "Completed", exit_code=0)])
    assert merged.history == ["Running", "Completed"]
    assert merged.exit_code == 0 and merged.error is None


def test_canceled_when_all_ended_and_one_was_canceled():
    canceled = {"code": "Canceled", "message": "canceled by the user"}
    merged = merge_reports([report("Running", "Completed", exit_code=0),
                            report("Running", "Canceled", error=canceled, exit_code=-15)])
    assert merged.history == ["Running", "Canceled"]
    assert merged.error == canceled and merged.exit_code == -15
    # One node canceled and another still running: not ended yet.
    assert not merge_reports([report("Running", "Canceled"), report("Running")]).ended


def test_terminal_statuses_are_never_in_the_progress_part():
    merged = merge_reports([report("Preparing", "Completed", "Running"), report("Running")])
    assert merged.history == ["Preparing", "Running"]
    merged = merge_reports([report("Running", "Canceled"), report("Running", "Failed")])
    assert merged.history == ["Running", "Failed"]
    assert merged.history.count("Failed") == 1 and "Canceled" not in merged.history


# -- artifact_path --------------------------------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> WorkspacePaths:
    return WorkspacePaths(tmp_path / "ws")


@pytest.mark.parametrize("rel", ["user_logs/std_log.txt", "system_logs/node_1/lifecycler/execution.log",
                                 "outputs/model/weights.bin", "logs/metrics.json"])
def test_artifact_paths_under_the_shipped_dirs_are_accepted(paths: WorkspacePaths, rel: str):
    assert artifact_path(paths, "job1", rel) == paths.run_dir("job1") / "artifacts" / Path(*rel.split("/"))


@pytest.mark.parametrize("rel", ["../x", "user_logs/../../x", "outputs/../../../etc/passwd", "/etc/passwd",
                                 "/user_logs/x", "", "user_logs//x", "user_logs/x/", "user_logs/./x",
                                 "user_logs\\..\\x", "outputs/a\\b", "secrets/x", "artifacts/x", "reports/x",
                                 "checkpoint/x", ".", "./user_logs/x", "User_Logs/x", "user_logs/a\0b",
                                 "outputs/" + "x" * 256])
def test_other_paths_are_refused(paths: WorkspacePaths, rel: str):
    assert artifact_path(paths, "job1", rel) is None


@pytest.mark.parametrize("rel", ["user_logs", "system_logs", "outputs", "logs"])
def test_a_bare_artifact_dir_is_not_a_file_path(paths: WorkspacePaths, rel: str):
    assert artifact_path(paths, "job1", rel) is None


# -- write_chunk ---------------------------------------------------------------------------------


def test_chunks_append_and_offset_zero_starts_over(tmp_path: Path):
    path = tmp_path / "a" / "b" / "std_log.txt"
    write_chunk(path, 0, b"hello ")
    write_chunk(path, 6, b"world")
    assert path.read_bytes() == b"hello world"
    write_chunk(path, 0, b"new")
    assert path.read_bytes() == b"new"


def test_a_resent_chunk_lands_in_place(tmp_path: Path):
    path = tmp_path / "log.txt"
    write_chunk(path, 0, b"aaaa")
    write_chunk(path, 4, b"bbbb")
    write_chunk(path, 4, b"bbbb")  # sent again (its reply was lost)
    assert path.read_bytes() == b"aaaabbbb"
    write_chunk(path, 8, b"cc")
    assert path.read_bytes() == b"aaaabbbbcc"
    write_chunk(path, 2, b"XX")  # an earlier chunk resent: in place, nothing after it is lost
    assert path.read_bytes() == b"aaXXbbbbcc"


def test_an_empty_chunk_at_zero_makes_an_empty_file(tmp_path: Path):
    path = tmp_path / "outputs" / "empty.txt"
    write_chunk(path, 0, b"")
    assert path.is_file() and path.read_bytes() == b""


# -- node_plan -------------------------------------------------------------------------------------


def test_node_plan_adds_where_the_node_stands(paths: WorkspacePaths):
    plan = {"job_name": "job1", "command": "python train.py", "node_count": 2}
    handle = ClusterHandle(job_name="job1", compute="gpu", attempt=3, nodes=["n0", "n1"],
                           node_addrs=["10.0.0.1", "10.0.0.2"], master_port=29500)
    result = node_plan(plan, handle, 1, paths, "run-token")
    assert result == {**plan, "node_rank": 1, "node_addrs": ["10.0.0.1", "10.0.0.2"], "master_port": 29500,
                      "attempt": 3, "resume_dir": str(paths.run_dir("job1") / "checkpoint")}
    assert Path(result["resume_dir"]).is_relative_to(paths.run_dir("job1"))
    assert plan == {"job_name": "job1", "command": "python train.py", "node_count": 2}  # not modified


# -- AgentService.settled -----------------------------------------------------------------------


def run_item(job: str = "j", attempt: int = 1, cancel: bool = False, plan: dict | None = None) -> dict:
    return {"job": job, "attempt": attempt, "node_rank": 0, "cancel": cancel, "plan": plan}


def test_settled_is_a_static_method():
    assert isinstance(AgentService.__dict__["settled"], staticmethod)


def test_settled_when_the_agent_does_what_the_reply_asks():
    assert AgentService.settled({"stop": False, "runs": []}, {})
    assert AgentService.settled({"stop": False, "runs": [run_item()]}, {("j", 1): False})
    assert AgentService.settled({"stop": False, "runs": [run_item(cancel=True)]}, {("j", 1): True})


def test_not_settled_when_there_is_something_to_say():
    assert not AgentService.settled({"stop": True, "runs": []}, {})  # stop
    assert not AgentService.settled({"stop": False, "runs": [run_item(plan={"job_name": "j"})]}, {})  # a new run
    assert not AgentService.settled({"stop": False, "runs": []}, {("j", 1): False})  # drop a run
    assert not AgentService.settled({"stop": False, "runs": [run_item(attempt=2)]}, {("j", 1): False})  # requeued
    assert not AgentService.settled({"stop": False, "runs": [run_item(cancel=True)]}, {("j", 1): False})  # cancel


# -- shipped_name ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["system_logs/lifecycler/execution.log", "user_logs/std_log.txt",
                                 "user_logs/std_log_process_0.txt", "outputs/model.bin", "logs/x"])
def test_node_rank_zero_ships_under_the_same_name(rel: str):
    assert shipped_name(rel, 0) == rel


@pytest.mark.parametrize(
    ("rel", "rank", "expected"),
    [
        ("system_logs/lifecycler/execution.log", 1, "system_logs/node_1/lifecycler/execution.log"),
        ("system_logs/x", 3, "system_logs/node_3/x"),
        ("user_logs/std_log.txt", 2, "user_logs/std_log_node_2.txt"),
        ("user_logs/std_log_process_5.txt", 2, "user_logs/std_log_process_5.txt"),
        ("outputs/model.bin", 1, "outputs/model.bin"),
        ("outputs/user_logs/std_log.txt", 1, "outputs/user_logs/std_log.txt"),
    ],
)
def test_other_nodes_keep_their_logs_apart(rel: str, rank: int, expected: str):
    assert shipped_name(rel, rank) == expected


# -- AgentHub -------------------------------------------------------------------------------------

LONG = 10.0  # a wait that only ends this soon when something woke it


def timed_wait(hub: AgentHub, node_id: str, timeout: float) -> float:
    async def go() -> float:
        start = time.monotonic()
        await hub.wait(node_id, timeout)
        return time.monotonic() - start

    return asyncio.run(go())


def test_a_notify_before_the_wait_makes_it_return_at_once():
    hub = AgentHub()
    hub.notify("n1")
    assert timed_wait(hub, "n1", LONG) < LONG / 4
    # The wake-up is used up: the next wait runs to its timeout.
    assert timed_wait(hub, "n1", 0.05) >= 0.04


def test_a_notify_only_wakes_its_own_node():
    hub = AgentHub()
    hub.notify("n2")
    assert timed_wait(hub, "n1", 0.05) >= 0.04
    assert timed_wait(hub, "n2", LONG) < LONG / 4


def test_clear_forgets_a_pending_notify():
    hub = AgentHub()
    hub.notify("n1")
    hub.clear("n1")
    assert timed_wait(hub, "n1", 0.05) >= 0.04


def test_a_wait_with_nothing_returns_after_its_timeout():
    hub = AgentHub()
    assert 0.04 <= timed_wait(hub, "n1", 0.05) < LONG
    assert not hub._events  # the waiter is gone once it returned


def test_a_notify_during_a_wait_wakes_it_from_another_thread():
    hub = AgentHub()
    failures: list[BaseException] = []

    def notifier() -> None:
        try:
            wait_until(lambda: "n1" in hub._events, timeout=LONG, interval=0.005, message="the wait to start")
            hub.notify("n1")
        except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
            failures.append(exc)

    thread = threading.Thread(target=notifier)
    thread.start()
    elapsed = timed_wait(hub, "n1", LONG)
    thread.join(LONG)
    assert not failures
    assert elapsed < LONG / 4
    assert not hub._pending  # it woke the waiter rather than being kept for the next one


def test_a_notify_during_a_wait_wakes_it_on_the_same_loop():
    hub = AgentHub()

    async def go() -> float:
        start = time.monotonic()
        waiter = asyncio.create_task(hub.wait("n1", LONG))
        while "n1" not in hub._events:
            await asyncio.sleep(0)  # let the waiter register (yields to the loop, no wall-clock wait)
        hub.notify("n1")
        await waiter
        return time.monotonic() - start

    assert asyncio.run(go()) < LONG / 4
