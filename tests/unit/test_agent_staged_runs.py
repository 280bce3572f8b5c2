"""The agent's runs on a node without the workspace (their files fetched before the launcher starts,
published after it ends) when things go wrong: any error while preparing or publishing ends the run
saying why (never a run stuck Preparing, holding the node), a cancel that comes while the launcher
starts or while the files come is not lost, a dropped run's folder is removed once nothing writes
in it, and a resume sync never runs beside the publish. The agent is driven directly: its server,
runner and file moves are fakes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cible.agent.agent as agent_module
from cible.agent.agent import Agent
from cible.agent.http import Response
from cible.agent.staged import StagedFiles
from cible.core.lifecycle.runs import RunObservation

KEY = ("j1", 1)
TRANSFER_PLAN = {"job_name": "j1", "attempt": 1, "transfer": "http"}


def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.002)


class OwnedLock:
    """The agent's lock, saying which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: threading.Thread | None = None

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self.owner = threading.current_thread()
        return self

    def __exit__(self, *_: object) -> None:
        self.owner = None
        self._lock.release()


class Limits:
    def usage(self) -> dict:
        return {}

    def oom_count(self) -> int:
        return 0

    def oom_killed(self, since: int) -> bool:
        return False


class Server:
    """The agent's HTTP client: every call answered 200 unless `answer` says otherwise; reports kept."""

    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.answer: Callable[[dict], int] = lambda report: 200

    def request(self, method: str, url: str, *, json: Any = None, **_: Any) -> Response:  # noqa: A002
        if url.endswith("/report"):
            self.reports.append(json)
            return Response(self.answer(json), b'{"error": {"code": "X", "message": "refused", "details": null}}')
        return Response(200, b"{}")

    def close(self) -> None:
        pass

    def final(self) -> dict:
        [report] = [r for r in self.reports if r["ended"]]
        return report


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[dict] = []
        self.canceled: list[dict] = []
        self.ended: set[str] = set()
        self.submit_hook: Callable[[], None] = lambda: None

    def submit(self, key: str, plan: dict) -> dict:
        self.submit_hook()
        run_dir = self.root / "runs" / key
        (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
        handle = {"run_dir": str(run_dir), "key": key}
        self.started.append(handle)
        return handle

    def cancel(self, handle: dict) -> None:
        self.canceled.append(handle)

    def poll(self, handle: dict) -> RunObservation:
        if handle["key"] in self.ended:
            return RunObservation(history=["Running", "Completed"], exit_code=0, alive=False)
        return RunObservation(history=["Running"])


class Moves:
    """What the fake StagedFiles of the test's runs do."""

    def __init__(self) -> None:
        self.fetch: Callable[[Any, Any], None] = lambda staged, on_progress: None
        self.publish: Callable[[Any], None] = lambda staged: None
        self.published = 0
        self.syncs = 0


def fake_staged(moves: Moves) -> type:
    class FakeStaged:
        def __init__(self, plan: dict, *, run_dir: Path, **_: Any) -> None:
            self.plan, self.run_dir = plan, Path(run_dir)

        def fetch(self, on_progress: Any = None) -> None:
            moves.fetch(self, on_progress)

        def publish(self) -> None:
            moves.published += 1
            moves.publish(self)

        def sync_if_due(self) -> None:
            moves.syncs += 1
    return FakeStaged


@pytest.fixture
def node(tmp_path: Path, monkeypatch) -> tuple[Agent, Server, Runner, Moves]:  # noqa: ANN001
    moves = Moves()
    monkeypatch.setattr(agent_module, "StagedFiles", fake_staged(moves))
    agent = Agent(node_id="n1", root=tmp_path, url="http://server", token="t", limits=Limits())
    agent.http.close()
    agent.http = server = Server()
    agent.runner = runner = Runner(tmp_path)
    agent.lock = OwnedLock()
    return agent, server, runner, moves


def start(agent: Agent, plan: dict | None = None, cancel: bool = False) -> Any:
    agent._apply(reply(plan or TRANSFER_PLAN, cancel))
    return agent.runs[KEY]


def reply(plan: dict | None, cancel: bool = False) -> dict:
    return {"runs": [{"job": "j1", "attempt": 1, "node_rank": 0, "plan": plan, "cancel": cancel}]}


def fetch_ended(timeout: float = 10.0) -> None:
    for thread in [t for t in threading.enumerate() if t.name == "fetch-j1"]:
        thread.join(timeout)
        assert not thread.is_alive(), "the fetch thread is still running"


def watch_pass(agent: Agent) -> None:
    """One pass of the agent's watcher (Agent._watch) over the runs it has."""
    with agent.lock:
        runs = list(agent.runs.values())
    for run in runs:
        try:
            agent._watch_run(run)
        except Exception:  # as Agent._watch: logged, the run watched again next pass
            pass


# -- errors while preparing ---------------------------------------------------------------------------


def test_any_error_while_fetching_fails_the_run_and_frees_the_node(node):
    agent, server, runner, moves = node

    def cannot_make_folder(staged: Any, on_progress: Any) -> None:
        raise PermissionError(f"cannot make {staged.run_dir}")
    moves.fetch = cannot_make_folder
    start(agent)
    fetch_ended()
    watch_pass(agent)
    final = server.final()
    assert final["history"] == ["Preparing", "Failed"] and final["error"]["code"] == "FilesNotFetched"
    assert "node n1" in final["error"]["message"] and "PermissionError: cannot make" in final["error"]["message"]
    assert KEY not in agent.runs and KEY in agent.done and runner.started == []


def test_a_launcher_that_cannot_start_fails_the_run(node):
    agent, server, runner, _ = node

    def fork_fails() -> None:
        raise OSError("fork: resource temporarily unavailable")
    runner.submit_hook = fork_fails
    start(agent)
    fetch_ended()
    watch_pass(agent)
    error = server.final()["error"]
    assert error["code"] == "LauncherNotStarted" and "fork: resource temporarily unavailable" in error["message"]
    assert KEY not in agent.runs


def test_a_refused_preparing_report_does_not_stop_the_run(node):
    """The Preparing report is informative: a 400 for it is logged, the job goes on."""
    agent, server, runner, _ = node
    server.answer = lambda report: 400 if report["history"] == ["Preparing"] else 200
    start(agent)
    fetch_ended()
    assert len(runner.started) == 1 and agent.runs[KEY].handle is runner.started[0]


# -- cancels -----------------------------------------------------------------------------------------------


def test_a_cancel_that_comes_while_the_launcher_starts_is_not_lost(node, monkeypatch):
    """The cancel reads the run's flag and handle while the fetch thread checks the flag and starts the
    launcher: either the launcher never starts, or it is canceled."""
    agent, _, runner, moves = node
    fetch_go, at_cancel, submitting, submit_go = (threading.Event() for _ in range(4))

    class Run(agent_module.Run):
        @property
        def canceling(self) -> bool:
            if threading.current_thread().name == "apply" and agent.lock.owner is not threading.current_thread():
                at_cancel.set()  # read without the lock: let the fetch thread check the flag and start now
                submitting.wait(10)
            return self.__dict__.get("_canceling", False)

        @canceling.setter
        def canceling(self, value: bool) -> None:
            self.__dict__["_canceling"] = value
    monkeypatch.setattr(agent_module, "Run", Run)
    moves.fetch = lambda staged, on_progress: fetch_go.wait(10)

    def slow_submit() -> None:
        submitting.set()
        submit_go.wait(10)
    runner.submit_hook = slow_submit
    start(agent)
    cancel = threading.Thread(target=agent._apply, args=(reply(None, cancel=True),), name="apply")
    cancel.start()
    try:
        until(lambda: at_cancel.is_set() or not cancel.is_alive(), "the cancel reached the run")
        fetch_go.set()
        cancel.join(10)
    finally:
        fetch_go.set()
        submit_go.set()
    fetch_ended()
    assert not cancel.is_alive()
    assert runner.started == runner.canceled  # never started, or started and canceled


def test_a_cancel_stops_a_long_fetch_at_once(node):
    agent, server, runner, moves = node
    fetching, done = threading.Event(), threading.Event()

    def long_fetch(staged: Any, on_progress: Any) -> None:  # a big input: bytes keep coming until `done`
        fetching.set()
        while not done.wait(0.002):
            if on_progress:
                on_progress("/inputs/big", 1)
    moves.fetch = long_fetch
    try:
        start(agent)
        until(fetching.is_set, "the fetch began")
        agent._apply(reply(None, cancel=True))
        until(lambda: not any(t.name == "fetch-j1" and t.is_alive() for t in threading.enumerate()),
              "the fetch stopped", timeout=5)
    finally:
        done.set()
    fetch_ended()
    watch_pass(agent)
    final = server.final()
    assert final["history"] == ["Preparing", "Canceled"] and runner.started == []


def test_a_run_dropped_during_its_fetch_loses_its_folder_once_the_fetch_stopped(node, tmp_path: Path):
    agent, server, runner, moves = node
    writing, go_on = threading.Event(), threading.Event()

    def fetch(staged: Any, on_progress: Any) -> None:
        (staged.run_dir / "inputs-src").mkdir(parents=True)
        (staged.run_dir / "inputs-src" / "a").write_text("a")
        writing.set()
        go_on.wait(10)
        if on_progress:
            on_progress("/inputs/data", 1)
        (staged.run_dir / "inputs-src").mkdir(parents=True, exist_ok=True)  # as a download makes its folder
        (staged.run_dir / "inputs-src" / "b").write_text("b")  # a fetch that did not stop
    moves.fetch = fetch
    start(agent)
    until(writing.is_set, "the fetch began")
    agent._apply({"runs": []})  # requeued elsewhere
    watch_pass(agent)
    go_on.set()
    fetch_ended()
    watch_pass(agent)
    assert KEY not in agent.runs and not (tmp_path / "runs" / "j1.1").exists()
    assert runner.started == [] and [r for r in server.reports if r["ended"]] == []  # nothing said of it


def test_a_started_run_that_was_dropped_loses_its_folder_once_its_launcher_ended(node, tmp_path: Path):
    """Its staged inputs must not pile up on a long-lived node."""
    agent, server, runner, _ = node
    start(agent, {"job_name": "j1", "attempt": 1})  # its launcher starts at once
    (tmp_path / "runs" / "j1.1" / "inputs-src").mkdir()
    agent._apply({"runs": []})
    assert runner.canceled == runner.started
    watch_pass(agent)
    assert (tmp_path / "runs" / "j1.1").exists()  # its launcher still ends
    runner.ended.add("j1.1")
    watch_pass(agent)
    assert KEY not in agent.runs and not (tmp_path / "runs" / "j1.1").exists()
    assert [r for r in server.reports if r["ended"]] == []  # the server no longer wants to hear of it


# -- publishing ------------------------------------------------------------------------------------------


def test_outputs_that_cannot_be_published_fail_the_run_once_and_no_sync_starts_at_its_end(node):
    agent, server, runner, moves = node

    def unreadable(staged: Any) -> None:
        raise PermissionError("outputs-stage/model/w.bin")
    moves.publish = unreadable
    start(agent)
    fetch_ended()
    watch_pass(agent)
    syncs = moves.syncs
    runner.ended.add("j1.1")
    watch_pass(agent)
    watch_pass(agent)
    final = server.final()
    assert final["history"] == ["Running", "Failed"] and final["error"]["code"] == "OutputsNotPublished"
    assert "PermissionError: outputs-stage/model/w.bin" in final["error"]["message"]
    assert moves.published == 1 and moves.syncs == syncs  # the pass that saw the end started no sync
    assert KEY not in agent.runs


# -- a resume sync and the publish ---------------------------------------------------------------------------


class WatchedLock:
    """StagedFiles' sync lock, saying when someone waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waited = threading.Event()

    def acquire(self, blocking: bool = True) -> bool:
        if blocking:
            self.waited.set()
        return self._lock.acquire(blocking)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> WatchedLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def test_the_publish_waits_for_a_resume_sync_under_way_and_none_starts_after(tmp_path: Path):
    """Both send into the server's one staging folder: one's commit would clear what the other sends."""
    plan = {**TRANSFER_PLAN, "resume_dir": "/server/runs/j1/checkpoint",
            "outputs": {"model": {"local_path": "/server/datastores/model"}}}
    staged = StagedFiles(plan, node_root=tmp_path, run_dir=tmp_path / "runs" / "j1.1", node_id="n1",
                         url=lambda: "http://server", token="t")
    staged._syncing = lock = WatchedLock()
    calls: list[str] = []
    syncing, sync_go = threading.Event(), threading.Event()

    def moves(phase: str, only_periodic: bool = False, **_: Any) -> None:
        if only_periodic:
            calls.append("sync")
            syncing.set()
            sync_go.wait(10)
            calls.append("sync done")
        else:
            calls.append(f"publish {phase}")
    staged._run = moves
    staged._last_sync = -1e9  # due
    staged.sync_if_due()
    until(syncing.is_set, "the sync began")
    publish = threading.Thread(target=staged.publish)
    publish.start()
    try:
        until(lambda: lock.waited.is_set() or len(calls) > 1, "the publish waited or ran")
    finally:
        sync_go.set()
    publish.join(10)
    assert calls == ["sync", "sync done", "publish after"]

    staged._last_sync = -1e9
    staged.sync_if_due()  # the run ended: nothing is sent after its publish
    for thread in [t for t in threading.enumerate() if t.name == "resume-j1"]:
        thread.join(10)
    assert calls == ["sync", "sync done", "publish after"]
