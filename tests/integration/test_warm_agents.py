"""The local provider's warm agents (CIBLE_WARM_NODES): started ahead of need, a new node takes one
(that very process becomes the node's agent, in the node's root, its launchers' fork server under
the node's limits), the pool fills again, each warm agent's time is in the ledger from its start
until it became a node, and closing the provider ends the warm agents never needed; a fork server
that cannot join the node's limits is replaced. Real agent processes, told of a server that is not
there (they wait for it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from cible.agent.warm import start_launchers
from cible.backends.base.contract import NodeRequest
from cible.backends.local.provider import LocalNodeProvider
from cible.node.files import AGENT_FILE
from cible.node.limits import LimitError, NodeLimits, Shape, detect_mechanism
from cible.testing import kill_nodes, wait_until

NO_SERVER = "http://127.0.0.1:9"  # discard: nothing answers


class Ledger:
    """The store's ledger, in memory: span -> [started, ended]."""

    def __init__(self) -> None:
        self.spans: dict[int, list[datetime | None]] = {}

    def opened(self, at: datetime) -> int:
        self.spans[len(self.spans) + 1] = [at, None]
        return len(self.spans)

    def closed(self, span: int, at: datetime) -> None:
        self.spans[span][1] = at

    def alive(self, spans: list[int], at: datetime) -> None:
        pass


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[LocalNodeProvider, Ledger, Path]]:
    home = tmp_path / "ws"
    home.mkdir()
    ledger = Ledger()
    provider = LocalNodeProvider(home / "nodes", home, NO_SERVER, node_token=lambda node_id: f"token-{node_id}",
                                 warm_nodes=1, warm_ledger=ledger)
    provider.prepare()
    try:
        yield provider, ledger, home
    finally:
        provider.close()
        kill_nodes(home)


def fork_server_of(pid: int) -> psutil.Process:
    return wait_until(lambda: next((c for c in psutil.Process(pid).children()
                                    if "--fork-server" in c.cmdline()), None), 30, message="its launchers' fork server")


def test_a_new_node_takes_the_warm_agent_and_the_pool_fills_again(pool) -> None:  # noqa: ANN001
    provider, ledger, home = pool
    warm = wait_until(lambda: provider.warm.pids(), 30, message="a warm agent")[0]
    fork_server = fork_server_of(warm)  # started while it waited
    assert ledger.spans[1][1] is None  # billed while it waits

    provider.launch([NodeRequest(node_id="n1", compute="c", size="Standard_DS1_v2", vcpus=1, memory_gb=1.0)])
    taken = datetime.now(timezone.utc)
    root = home / "nodes" / "n1"
    assert json.loads((root / AGENT_FILE).read_text())["pid"] == warm  # that process is the node's agent now
    agent = psutil.Process(warm)
    wait_until(lambda: agent.cwd() == str(root), 30, message="the agent working in the node's root")
    assert Path(os.readlink(f"/proc/{warm}/fd/2")) == root / "agent.log"
    assert provider.list_nodes()["n1"].alive
    if detect_mechanism() != "watchdog":  # a group any process can read: the fork server joined it
        limits = NodeLimits("n1", Shape(vcpus=1, memory_gb=1.0, gpus=0), overcommit=True)
        wait_until(lambda: fork_server.pid in limits.pids(), 30, message="the fork server under the node's limits")

    second = wait_until(lambda: [p for p in provider.warm.pids() if p != warm], 30, message="the pool filled again")[0]
    assert set(ledger.spans) == {1, 2} and ledger.spans[2][1] is None
    assert ledger.spans[1][1] is not None and ledger.spans[1][1] <= taken  # billed until it became the node
    provider.close()  # the warm agent never needed ends; the node goes on
    wait_until(lambda: not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE, 30,
               message="the unused warm agent gone")
    assert ledger.spans[2][1] is not None
    assert agent.is_running() and provider.list_nodes()["n1"].alive


def test_without_a_warm_agent_ready_a_node_starts_its_own(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    home.mkdir()
    provider = LocalNodeProvider(home / "nodes", home, NO_SERVER, node_token=lambda node_id: "token")
    provider.prepare()  # warm_nodes 0: no pool
    try:
        provider.launch([NodeRequest(node_id="n1", compute="c", size="Standard_DS1_v2", vcpus=1, memory_gb=1.0)])
        agent = psutil.Process(json.loads((home / "nodes" / "n1" / AGENT_FILE).read_text())["pid"])
        cmdline = wait_until(agent.cmdline, 30, message="the agent's command line (once it has exec'd)")
        assert "--node-id" in cmdline  # started for the node, not warm
        assert provider.warm.pids() == [] and not (home / "nodes" / ".warm").exists()
    finally:
        provider.close()
        kill_nodes(home)


def test_a_fork_server_that_cannot_join_the_node_s_limits_is_replaced_by_one_started_under_them(tmp_path: Path) -> None:
    def new_fork_server(*known: int) -> psutil.Process:  # a child of this process (others may run here too)
        return wait_until(lambda: next((p for p in psutil.Process().children() if p.pid not in known
                                        and "--fork-server" in p.cmdline()), None), 30, message="a new fork server")

    before = [p.pid for p in psutil.Process().children()]
    news, runner = start_launchers(Path(os.devnull), None)  # as a warm agent does, before it knows its node
    try:
        first = new_fork_server(*before)
        joined = tmp_path / "joined"

        def refuse(pid: int) -> None:
            raise LimitError(f"cannot move process {pid}")

        runner.adopt(tmp_path / "runs", preexec_fn=joined.touch, on_spawn=refuse)
        second = new_fork_server(*before, first.pid)  # started the plain way
        assert joined.exists()  # its preexec_fn (the node's limits) ran before it started
        wait_until(lambda: not first.is_running() or first.status() == psutil.STATUS_ZOMBIE, 30,
                   message="the first one stopped")
        assert second.is_running()
    finally:
        runner.close()
        os.close(news)
