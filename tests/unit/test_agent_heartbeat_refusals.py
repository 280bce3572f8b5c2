"""A server that answers a heartbeat but cannot take it now (a 409, a 5xx) is asked again: the
agent keeps its runs and goes on; only `stop`, an unknown node or a long silence end it. Its first
heartbeat is a long-poll too: a job assigned as the node gets ready comes in its reply."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cible.agent.agent import FIRST_WAIT_S, Agent
from cible.agent.http import Response, TransportError


class _Limits:
    """The node's limits as the heartbeat loop reads them (its usage) and nothing more."""

    def usage(self) -> dict:
        return {"cpu_percent": 1.0}


class _Server:
    """The agent's HTTP client, answering `answers` in turn; what it was sent is kept in `sent`.
    An exception among the answers is raised instead (a server that cannot be reached)."""

    def __init__(self, answers: list[Response | Exception]) -> None:
        self.answers = answers
        self.sent: list[dict] = []

    def request(self, method: str, url: str, *, json: Any = None, **_: Any) -> Response:
        assert (method, url) == ("POST", "http://server/api/v1/agent/nodes/n1/heartbeat")
        self.sent.append(json)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        pass


def _answer(status: int, body: Any) -> Response:
    return Response(status, body.encode() if isinstance(body, str) else json.dumps(body).encode())


def _agent(tmp_path: Path, answers: list[Response | Exception]) -> tuple[Agent, _Server]:
    # Any silence at all would end it (orphan_after_s=0): a refusal is no silence.
    agent = Agent(node_id="n1", root=tmp_path, url="http://server", token="t", limits=_Limits(), orphan_after_s=0.0)
    agent.http.close()
    agent.http = server = _Server(answers)
    return agent, server


def _conflict() -> Response:
    return _answer(409, {"error": {"code": "ConcurrentUpdate", "message": "retry", "details": None}})


def test_a_refused_heartbeat_is_sent_again_and_the_agent_goes_on(tmp_path: Path, caplog):
    answers = [_conflict(), _conflict(),
               _answer(503, {"error": {"code": "StoreUnavailable", "message": "busy", "details": None}}),
               _answer(500, "internal error"),
               _answer(200, {"stop": True, "runs": [], "state": "leaving"})]
    agent, server = _agent(tmp_path, answers)
    with caplog.at_level(logging.WARNING, logger="cible.agent"):
        assert agent._heartbeats() == 0  # ended by the server's `stop`, not by the refusals
    assert len(server.sent) == 5 and not answers
    assert server.sent[0]["runs"] == [] and server.sent[0]["usage"] == {"cpu_percent": 1.0}
    refusals = [r.getMessage() for r in caplog.records if "did not take a heartbeat" in r.getMessage()]
    assert len(refusals) == 3  # the two same 409s are logged once, then the 503 and the 500
    assert "409" in refusals[0] and "503" in refusals[1] and "500" in refusals[2]


def test_a_server_that_is_gone_still_orphans_the_node(tmp_path: Path):
    agent, _ = _agent(tmp_path, [TransportError("connection refused")])
    assert agent._heartbeats() == 1


def test_a_gone_server_is_looked_for_again_at_the_url_in_its_url_file(tmp_path: Path):
    """An SSH tunnel that moved after a server restart: the provider rewrote the URL file."""
    url_file = tmp_path / "server_url"
    url_file.write_text("http://127.0.0.1:4242/\n")
    agent, _ = _agent(tmp_path, [TransportError("connection refused")])
    agent.url_file = url_file
    assert agent._heartbeats() == 1
    assert agent.url == "http://127.0.0.1:4242"
    url_file.write_text("")  # being rewritten: the URL known so far is kept
    agent._rediscover()
    assert agent.url == "http://127.0.0.1:4242"


def test_the_first_heartbeat_is_a_long_poll_like_the_next(tmp_path: Path):
    agent, server = _agent(tmp_path, [_answer(200, {"stop": False, "runs": [], "wait_s": 3.0}),
                                      _answer(200, {"stop": True, "runs": []})])
    assert agent._heartbeats() == 0
    assert [sent["wait_s"] for sent in server.sent] == [FIRST_WAIT_S, 3.0]  # then the server's own
