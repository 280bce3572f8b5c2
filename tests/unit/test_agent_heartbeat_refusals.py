"""A server that answers a heartbeat but cannot take it now (a 409, a 5xx) is asked again: the
agent keeps its runs and goes on; only `stop`, an unknown node or a long silence end it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx

from cible.agent.agent import Agent


class _Limits:
    """The node's limits as the heartbeat loop reads them (its usage) and nothing more."""

    def usage(self) -> dict:
        return {"cpu_percent": 1.0}


def _agent(tmp_path: Path, answers: list[httpx.Response]) -> tuple[Agent, list[dict]]:
    """An agent whose server answers `answers` in turn; the bodies it sent."""
    sent: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/agent/nodes/n1/heartbeat"
        sent.append(json.loads(request.content))
        return answers.pop(0)

    # Any silence at all would end it (orphan_after_s=0): a refusal is no silence.
    agent = Agent(node_id="n1", root=tmp_path, url="http://server", token="t", limits=_Limits(), orphan_after_s=0.0)
    agent.http.close()
    agent.http = httpx.Client(transport=httpx.MockTransport(handle))
    return agent, sent


def _conflict() -> httpx.Response:
    return httpx.Response(409, json={"error": {"code": "ConcurrentUpdate", "message": "retry", "details": None}})


def test_a_refused_heartbeat_is_sent_again_and_the_agent_goes_on(tmp_path: Path, caplog):
    answers = [_conflict(), _conflict(),
               httpx.Response(503, json={"error": {"code": "StoreUnavailable", "message": "busy", "details": None}}),
               httpx.Response(500, text="internal error"),
               httpx.Response(200, json={"stop": True, "runs": [], "state": "leaving"})]
    agent, sent = _agent(tmp_path, answers)
    with caplog.at_level(logging.WARNING, logger="cible.agent"):
        assert agent._heartbeats() == 0  # ended by the server's `stop`, not by the refusals
    assert len(sent) == 5 and not answers
    refusals = [r.getMessage() for r in caplog.records if "did not take a heartbeat" in r.getMessage()]
    assert len(refusals) == 3  # the two same 409s are logged once, then the 503 and the 500
    assert "409" in refusals[0] and "503" in refusals[1] and "500" in refusals[2]
    agent.http.close()


def test_a_server_that_is_gone_still_orphans_the_node(tmp_path: Path):
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    agent = Agent(node_id="n1", root=tmp_path, url="http://server", token="t", limits=_Limits(), orphan_after_s=0.0)
    agent.http.close()
    agent.http = httpx.Client(transport=httpx.MockTransport(unreachable))
    assert agent._heartbeats() == 1
    agent.http.close()
