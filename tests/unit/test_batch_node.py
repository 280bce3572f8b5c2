"""The batch node runner's care of its workers, and a worker's claims, driven without a server: the node runs
stand-in worker scripts that speak the status protocol (worker.py's docstring), and its API is a recorder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cible.serving.batch import node
from cible.serving.batch.node import NodeRunner, Slot
from cible.serving.batch.output import PARTS_DIR, part_path
from cible.serving.batch.worker import Worker

pytestmark = pytest.mark.timeout(60)

SETTINGS = {"max_concurrency_per_instance": 1, "timeout": 30, "max_retries": 0}

# What every stand-in worker starts with: `tell(event, **fields)` on the status descriptor, and `second`:
# whether a worker of this test already ran (the node replaced the first).
PROLOGUE = """
import json, os, subprocess, sys, threading, time
status = os.fdopen(int(os.environ["CIBLE_BATCH_STATUS_FD"]), "w", buffering=1)
def tell(event, **fields):
    status.write(json.dumps({"event": event, **fields}) + "\\n")
marker = sys.argv[1] + ".ran"
second = os.path.exists(marker)
open(marker, "w").close()
"""
FINISH = 'tell("ready"); tell("finished", failed=False, reason=None, stale=False, joined=True); sys.exit(0)'


class RecordingApi:
    def __init__(self) -> None:
        self.lost_calls: list[tuple[str, str, int | None]] = []

    def lost(self, worker: str, error: str, idx: int | None) -> dict[str, Any]:
        self.lost_calls.append((worker, error, idx))
        return {}

    def fail(self, reason: str) -> dict[str, Any]:
        return {"reason": reason}


def runner_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> tuple[NodeRunner, str]:
    monkeypatch.setenv("CIBLE_API_URL", "http://127.0.0.1:9")
    script = tmp_path / "stand_in_worker.py"
    script.write_text(PROLOGUE + textwrap.dedent(body))
    runner = NodeRunner(node.parse_args(["--input", str(tmp_path), "--output", str(tmp_path / "out")]))
    runner.api = RecordingApi()
    runner.worker_command = [sys.executable, str(script)]
    return runner, str(tmp_path / "scenario")


def supervise_within(runner: NodeRunner, config: str, settings: dict[str, Any], limit_s: float) -> int:
    started = time.monotonic()
    try:
        code = runner.supervise(config, settings)
    finally:
        runner.stop_all()
    assert time.monotonic() - started < limit_s
    return code


def test_a_dead_worker_is_replaced_even_when_its_child_holds_the_status_pipe(tmp_path, monkeypatch) -> None:
    # The first worker starts mini-batch 3, leaves a child in a session of its own holding the pipe's
    # write end (EOF never comes), and dies: the node must still report it lost and carry on.
    pid_file = tmp_path / "child.pid"
    runner, config = runner_with(tmp_path, monkeypatch, f"""
        if second:
            {FINISH}
        tell("ready"); tell("start", idx=3)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 pass_fds=(status.fileno(),), start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        os._exit(1)
    """)
    try:
        assert supervise_within(runner, config, SETTINGS, limit_s=15) == 0
        assert runner.api.lost_calls == [(runner.slots[0].name, "worker died: exit code 1", 3)]
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_worker_lost_between_mini_batches_reports_no_idx(tmp_path, monkeypatch) -> None:
    runner, config = runner_with(tmp_path, monkeypatch, f"""
        if second:
            {FINISH}
        tell("ready"); tell("start", idx=2); tell("scored", idx=2); tell("end", idx=2)
        os._exit(9)
    """)
    assert supervise_within(runner, config, SETTINGS, limit_s=15) == 0
    assert [idx for _, _, idx in runner.api.lost_calls] == [None]


def test_a_worker_that_never_exits_after_finished_is_ended(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(node, "EXIT_GRACE_S", 0.3)
    runner, config = runner_with(tmp_path, monkeypatch, """
        threading.Thread(target=time.sleep, args=(120,)).start()  # a script's non-daemon thread
        tell("ready"); tell("finished", failed=False, reason=None, stale=False, joined=True)
    """)
    assert supervise_within(runner, config, SETTINGS, limit_s=10) == 0
    assert runner.slots[0].proc.returncode == -signal.SIGKILL
    assert runner.api.lost_calls == []


def test_the_kill_timer_stops_when_run_returns(tmp_path, monkeypatch) -> None:
    # run() returned within its timeout; writing the part takes longer than timeout + grace: not killed.
    monkeypatch.setattr(node, "GRACE_S", 0.2)
    runner, config = runner_with(tmp_path, monkeypatch, f"""
        tell("ready"); tell("start", idx=1); tell("scored", idx=1)
        time.sleep(1.5)
        tell("end", idx=1)
        {FINISH}
    """)
    assert supervise_within(runner, config, {**SETTINGS, "timeout": 0}, limit_s=10) == 0
    assert runner.api.lost_calls == []


def test_a_run_past_its_timeout_is_killed_and_its_mini_batch_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(node, "GRACE_S", 0.2)
    runner, config = runner_with(tmp_path, monkeypatch, f"""
        if second:
            {FINISH}
        tell("ready"); tell("start", idx=1)
        time.sleep(60)
    """)
    assert supervise_within(runner, config, {**SETTINGS, "timeout": 0}, limit_s=10) == 0
    [(_, error, idx)] = runner.api.lost_calls
    assert idx == 1 and "ran past its timeout" in error


@pytest.mark.parametrize(("answers", "joins"), [([True], False), ([False], True), ([None], False),
                                                ([False, True], False), ([False, False], True)])
def test_the_node_joins_only_when_the_server_says_it_did_not(tmp_path, monkeypatch, answers, joins) -> None:
    runner, _ = runner_with(tmp_path, monkeypatch, "")
    runner.slots = [Slot(i, f"w{i}") for i in range(len(answers))]
    for slot, joined in zip(runner.slots, answers, strict=True):
        slot.finished = {"event": "finished", "failed": False, "joined": joined}
    assert runner.server_did_not_join() is joins


def test_joining_here_takes_the_parts_in_order(tmp_path, monkeypatch) -> None:
    runner, _ = runner_with(tmp_path, monkeypatch, "")
    output = tmp_path / "out"
    runner.join_here(str(output), "predictions.csv")  # no parts folder: an empty result, not a crash
    assert (output / "predictions.csv").read_text() == ""
    (output / PARTS_DIR).mkdir()
    for idx in (10, 2):
        Path(part_path(str(output), idx)).write_text(f"row {idx}\n")
    (output / PARTS_DIR / "part-x.csv").write_text("not a part\n")
    runner.join_here(str(output), "predictions.csv")
    assert (output / "predictions.csv").read_text() == "row 2\nrow 10\n"


class ScriptedApi:
    """The server's answers to a worker's claims, in order; the claims' bodies as sent."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers, self.bodies = answers, []

    def claim(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(json.loads(json.dumps(body)))
        return self.answers[len(self.bodies) - 1]


class Scorer:
    def init(self) -> None:
        pass

    def run(self, mini_batch: list[str]) -> list[str]:
        return mini_batch


def test_a_claim_ahead_says_which_mini_batch_the_worker_is_running(tmp_path) -> None:
    config = {"settings": {"timeout": 30, "output_action": "summary_only"}, "api_url": "http://127.0.0.1:9",
              "token": "", "job": "j", "attempt": 1, "input_root": str(tmp_path), "output": str(tmp_path)}
    read_fd, write_fd = os.pipe()
    worker = Worker(config, "0:0:1:h", write_fd)
    worker.api = ScriptedApi([{"kind": "assign", "idx": 0, "files": ["a"]},
                              {"kind": "assign", "idx": 1, "files": ["b", "c"]},
                              {"kind": "finished", "joined": True},
                              {"kind": "finished", "joined": True}])
    worker.load = Scorer  # type: ignore[method-assign]
    previous = signal.getsignal(signal.SIGALRM)
    try:
        assert worker.serve() == 0
    finally:
        signal.signal(signal.SIGALRM, previous)
        worker.status.close()
    with os.fdopen(read_fd, "rb") as pipe:
        events = [json.loads(line) for line in pipe.read().splitlines()]
    sent = [(b.get("running"), b.get("ahead", False), (b["result"] or {}).get("idx")) for b in worker.api.bodies]
    # free: no mini-batch; while 0 runs: ahead, running 0; while 1 runs: ahead, running 1, 0's report; free: 1's
    assert sent == [(None, False, None), (0, True, None), (1, True, 0), (None, False, 1)]
    assert all("running" in body for body in worker.api.bodies)
    assert [e["event"] for e in events] == ["ready", "start", "scored", "end", "start", "scored", "end", "finished"]
    assert events[-1]["joined"] is True


def test_a_worker_exits_even_when_a_thread_of_the_script_does_not(tmp_path) -> None:
    code = ("import threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,)).start()\n"
            "from cible.serving.batch.worker import exit_now\n"
            "print('flushed', end='')\n"
            "exit_now(0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert (done.returncode, done.stdout) == (0, "flushed")
