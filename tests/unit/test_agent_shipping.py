"""How an agent ships a run's artifact files: by PUT as they grow while the run runs; at its end, what
is left goes in the final report itself when it is small (one request for a short job), and by PUT
otherwise. The agent is driven directly; its server and runner are fakes."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from cible.agent import agent as agent_module
from cible.agent import shipping
from cible.agent.agent import Agent, Run
from cible.agent.http import Response
from cible.core.lifecycle.runs import RunObservation


class Limits:
    def usage(self) -> dict:
        return {}

    def oom_killed(self, since: int) -> bool:
        return False


class Server:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, url: str, *, json: Any = None, content: bytes | None = None,
                params: dict | None = None, **_: Any) -> Response:  # noqa: A002
        self.calls.append((method, url.split("/runs/j1/", 1)[-1], json if json is not None else (params, content)))
        return Response(200, b"{}")

    def close(self) -> None:
        pass

    def puts(self) -> list[str]:
        return [path for method, path, _ in self.calls if method == "PUT"]

    def reports(self) -> list[dict]:
        return [body for method, path, body in self.calls if path == "report"]


class Runner:
    def __init__(self) -> None:
        self.ended = False

    def poll(self, handle: dict) -> RunObservation:
        if self.ended:
            return RunObservation(history=["Running", "Completed"], exit_code=0, alive=False)
        return RunObservation(history=["Running"])


@pytest.fixture
def node(tmp_path: Path) -> tuple[Agent, Server, Runner, Run, Path]:
    agent = Agent(node_id="n1", root=tmp_path, url="http://server", token="t", limits=Limits())
    agent.http.close()
    agent.http = server = Server()
    agent.runner = runner = Runner()
    run_dir = tmp_path / "runs" / "j1.1"
    artifacts = run_dir / "artifacts"
    (artifacts / "user_logs").mkdir(parents=True)
    (artifacts / "system_logs").mkdir()
    # Started a while ago: its statuses are reported as they come (see the SETTLE_S tests below).
    run = Run("j1", 1, 0, {"run_dir": str(run_dir)}, oom_before=0, started_at=time.monotonic() - agent_module.SETTLE_S)
    agent.runs[run.key] = run
    return agent, server, runner, run, artifacts


def started_now(agent: Agent, artifacts: Path) -> Run:
    """A run the agent has just taken, with a log line written, watched once."""
    young = Run("j1", 2, 0, {"run_dir": str(artifacts.parent)}, oom_before=0)
    agent.runs = {young.key: young}
    (artifacts / "user_logs" / "std_log.txt").write_bytes(b"hello")
    agent._watch_run(young)
    return young


def test_a_run_just_started_is_not_reported_until_it_settles(node):
    agent, server, _, _, artifacts = node
    young = started_now(agent, artifacts)
    assert server.calls == []  # younger than SETTLE_S and running: nothing sent yet
    young.started_at -= agent_module.SETTLE_S
    agent._watch_run(young)
    assert [r["history"] for r in server.reports()] == [["Running"]]


def test_a_short_run_is_reported_once_with_every_status_and_file(node):
    agent, server, runner, _, artifacts = node
    young = started_now(agent, artifacts)
    runner.ended = True
    agent._watch_run(young)
    assert [r["history"] for r in server.reports()] == [["Running", "Completed"]]  # one request in all
    assert server.puts() == []
    assert [f["path"] for f in server.reports()[0]["files"]] == ["user_logs/std_log.txt"]


def test_a_short_runs_files_go_with_its_final_report(node):
    agent, server, runner, run, artifacts = node
    (artifacts / "user_logs" / "std_log.txt").write_bytes(b"hello ")
    agent._watch_run(run)  # running: its log is shipped as it grows
    assert server.puts() == ["files/user_logs/std_log.txt"]
    with open(artifacts / "user_logs" / "std_log.txt", "ab") as fh:
        fh.write(b"world")
    (artifacts / "system_logs" / "launcher.txt").write_bytes(b"")
    (artifacts / "outputs").mkdir()
    (artifacts / "outputs" / "w.bin").write_bytes(b"\x00\x01")
    runner.ended = True
    agent._watch_run(run)
    assert server.puts() == ["files/user_logs/std_log.txt"]  # nothing more by PUT
    final = server.reports()[-1]
    assert final["ended"] is True
    sent = {f["path"]: (f["offset"], base64.b64decode(f["data"])) for f in final["files"]}
    assert sent == {"user_logs/std_log.txt": (6, b"world"), "system_logs/launcher.txt": (0, b""),
                    "outputs/w.bin": (0, b"\x00\x01")}
    assert run.key not in agent.runs  # reported: done with


def test_a_run_that_leaves_much_to_send_ships_it_before_its_final_report(node, monkeypatch):
    agent, server, runner, run, artifacts = node
    monkeypatch.setattr(shipping, "INLINE_BYTES", 10)
    (artifacts / "user_logs" / "std_log.txt").write_bytes(b"x" * 11)
    runner.ended = True
    agent._watch_run(run)
    assert server.puts() == ["files/user_logs/std_log.txt"]
    assert "files" not in server.reports()[-1]


@pytest.mark.parametrize(("canceling", "end", "code"), [(False, "Failed", "LauncherLost"), (True, "Canceled", "Canceled")])
def test_a_launcher_gone_without_its_last_word_fails_the_run_unless_it_was_being_canceled(node, canceling, end, code):
    agent, server, runner, run, _ = node
    run.canceling = canceling
    runner.poll = lambda handle: RunObservation(history=["Running"], alive=False)  # killed: no end written
    agent._watch_run(run)
    final = server.reports()[-1]
    assert final["history"] == ["Running", end] and final["error"]["code"] == code
