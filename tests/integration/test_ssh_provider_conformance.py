"""The node-provider conformance suite (cible.testing.conformance) on the `ssh` provider, against
a real sshd serving four loopback "machines" (127.0.0.21-24): each node's agent is shipped as the
bundle, started over SSH with the token on stdin, and reaches its server through a port forwarded
back over the connection. The agents are told of a server that is not there: they wait for it,
which is all the suite needs."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cible.backends.ssh.connect import SshTarget
from cible.backends.ssh.hosts import AttachedHost
from cible.backends.ssh.probe import attach, run_sync
from cible.backends.ssh.provider import SshNodeProvider
from cible.testing import wait_until
from cible.testing.conformance import NodeProviderConformance
from cible.testing.sshd import LoopbackSshd, keygen, sshd_missing

NO_SERVER = "http://127.0.0.1:9"
ADDRESSES = ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24")


@pytest.fixture(scope="module", autouse=True)
def _needs_sshd() -> None:
    if why := sshd_missing():  # CI installs openssh-server (scripts/test.sh): there, a missing sshd fails
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AttachedHost]]:
    root = tmp_path_factory.mktemp("ssh-conformance")
    key = keygen(root / "key")
    sshd = LoopbackSshd(root / "sshd", ADDRESSES)
    sshd.authorize("root", key.with_suffix(".pub"))
    sshd.start()
    hosts = {}
    for i, address in enumerate(ADDRESSES):
        target = SshTarget(address, sshd.port, "root", str(key))
        found = run_sync(attach(target, python="python3", expected_fingerprint=None))
        pinned = SshTarget(address, sshd.port, "root", str(key), found.host_key)
        hosts[f"m{i}"] = AttachedHost(f"m{i}", pinned, agent_dir=str(root / f"agent-m{i}"), tunnel="always",
                                      facts=found.facts)
    try:
        yield hosts
    finally:
        sshd.stop()


@pytest.fixture(scope="module")
def ssh_provider(machines: dict[str, AttachedHost], tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[SshNodeProvider]:
    home: Path = tmp_path_factory.mktemp("ssh-provider") / "ws"
    provider = SshNodeProvider(home / "nodes", NO_SERVER, lambda node_id: "token", attached=lambda: machines,
                               hosts_of=lambda compute: tuple(machines), bundle_cache=home / "cache")
    provider.prepare()
    try:
        wait_until(lambda: provider.list_nodes() is not None, 30, interval=0.1, message="the ssh provider to list")
        yield provider
    finally:
        provider.terminate(list(provider.list_nodes() or {}))
        wait_until(lambda: not provider.list_nodes(), 60, interval=0.2, message="every node to go")
        provider.close()


class TestSshProvider(NodeProviderConformance):
    timeout_s = 60.0

    @pytest.fixture
    def provider(self, ssh_provider: SshNodeProvider) -> Iterator[SshNodeProvider]:
        yield ssh_provider

    def test_a_node_runs_from_the_bundle_in_the_folder_cible_owns(self, provider: SshNodeProvider,
                                                                   machines: dict[str, AttachedHost]) -> None:
        request = self.request()
        self.launch(provider, request)
        node = self.up(provider, request.node_id)
        host = next(h for h in machines.values() if h.target.host == node.address)
        remote = Path(host.remote_root(request.node_id))
        assert (remote / "agent.json").is_file() and (remote / "server_url").read_text().startswith(
            "http://127.0.0.1:")  # the tunnel's end on the host, not the server's own port
        assert (remote / "server_url").read_text() != NO_SERVER
        assert list((Path(host.agent_dir) / "bundles").glob("*/cible/agent/agent.py"))
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)
        wait_until(lambda: not remote.exists(), 30, interval=0.1, message="the node's folder to be removed")

    def test_a_busy_machine_is_not_given_a_second_node(self, provider: SshNodeProvider,
                                                       machines: dict[str, AttachedHost]) -> None:
        requests = [self.request() for _ in range(len(machines) + 1)]
        self.launch(provider, *requests)
        listed = self.listing(provider)
        assert sum(r.node_id in listed for r in requests) == len(machines)
        errors = provider.poll_errors()
        [extra] = [r.node_id for r in requests if r.node_id not in listed]
        assert "no free attached machine" in errors[extra]


def test_a_restarted_server_finds_its_nodes_and_tells_their_agents_where_it_is(
        machines: dict[str, AttachedHost], tmp_path: Path) -> None:
    """The provider of a restarted server adopts the nodes recorded by the last one, makes the tunnel
    again and rewrites each node's server_url (the agents read it again when a call fails)."""
    home = tmp_path / "ws"

    def provider(url: str) -> SshNodeProvider:
        made = SshNodeProvider(home / "nodes", url, lambda node_id: "token", attached=lambda: machines,
                               hosts_of=lambda compute: tuple(machines), bundle_cache=home / "cache")
        made.prepare()
        return made

    first = provider(NO_SERVER)
    suite = NodeProviderConformance()
    request = suite.request()
    first.launch([request])
    node = wait_until(lambda: (n := (first.list_nodes() or {}).get(request.node_id)) and n.address and n, 60,
                      interval=0.1, message="the node up")
    host = next(h for h in machines.values() if h.target.host == node.address)
    url_file = Path(host.remote_root(request.node_id)) / "server_url"
    before = url_file.read_text().strip()
    port = int(before.rsplit(":", 1)[1])
    first.close()  # the server stops (its tunnel with it); the node goes on running
    wait_until(lambda: not _listening(port), 30, interval=0.1, message="the old tunnel to close")
    second = provider("http://127.0.0.1:8")
    try:
        # The same port is asked for again, so the URL a running job was given still reaches the server.
        wait_until(lambda: _listening(port), 30, interval=0.1, message="the tunnel made again on the same port")
        assert url_file.read_text().strip() == before
        wait_until(lambda: (n := (second.list_nodes() or {}).get(request.node_id)) and n.alive, 30, interval=0.1,
                   message="the node adopted, alive")
    finally:
        second.terminate([request.node_id])
        wait_until(lambda: (nodes := second.list_nodes()) is not None and request.node_id not in nodes, 60,
                   interval=0.2, message="the node to go")
        second.close()


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def lone_machine(tmp_path: Path) -> Iterator[tuple[LoopbackSshd, AttachedHost]]:
    """A machine with an sshd of its own, so that it can hang alone."""
    key = keygen(tmp_path / "key")
    sshd = LoopbackSshd(tmp_path / "sshd", ("127.0.0.26",))
    sshd.authorize("root", key.with_suffix(".pub"))
    sshd.start()
    target = SshTarget("127.0.0.26", sshd.port, "root", str(key))
    found = run_sync(attach(target, python="python3", expected_fingerprint=None))
    pinned = SshTarget("127.0.0.26", sshd.port, "root", str(key), found.host_key)
    try:
        yield sshd, AttachedHost("lone", pinned, agent_dir=str(tmp_path / "agent"), tunnel="always",
                                 facts=found.facts)
    finally:
        sshd.stop()


def test_a_machine_is_free_again_once_its_stopped_or_dead_agent_is_gone(
        lone_machine: tuple[LoopbackSshd, AttachedHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose machine hung while it was terminated is stopped once the machine answers again,
    and a node whose agent died is cleaned up: either way the machine takes a new node."""
    from cible.backends.ssh import connect as ssh_connect
    from cible.backends.ssh import provider as ssh_provider

    monkeypatch.setattr(ssh_provider, "STOP_TIMEOUT_S", 2.0)
    monkeypatch.setattr(ssh_connect, "CONNECT_TIMEOUT_S", 2.0)
    sshd, machine = lone_machine
    home = tmp_path / "ws"
    provider = SshNodeProvider(home / "nodes", NO_SERVER, lambda node_id: "token", attached=lambda: {"lone": machine},
                               hosts_of=lambda compute: ("lone",), bundle_cache=home / "cache")
    provider.prepare()
    suite = NodeProviderConformance()
    try:
        hung = suite.request()
        provider.launch([hung])
        wait_until(lambda: (n := (provider.list_nodes() or {}).get(hung.node_id)) and n.address, 60, interval=0.1,
                   message="the node up")
        agent = json.loads((Path(machine.remote_root(hung.node_id)) / "agent.json").read_text())["pid"]
        sshd.freeze(agent)
        provider.terminate([hung.node_id])
        blocked = suite.request()
        wait_until(lambda: "no free attached machine" in provider.poll_errors().get(blocked.node_id, "")
                   or provider.launch([blocked]), 30, interval=0.5, message="a new node refused while it hangs")
        sshd.thaw()
        wait_until(lambda: (nodes := provider.list_nodes()) is not None and hung.node_id not in nodes, 60,
                   interval=0.2, message="the hung node stopped once its machine answers")
        dead = suite.request()
        provider.launch([dead])
        wait_until(lambda: (n := (provider.list_nodes() or {}).get(dead.node_id)) and n.address, 60, interval=0.1,
                   message="a new node on the machine")
        agent = json.loads((Path(machine.remote_root(dead.node_id)) / "agent.json").read_text())["pid"]
        os.kill(agent, signal.SIGKILL)
        wait_until(lambda: (nodes := provider.list_nodes()) is not None and dead.node_id not in nodes, 30,
                   interval=0.2, message="the dead agent's node gone")
        # The machine is free once the provider's own record of the node is gone too: it removes that
        # after the stop it ran over SSH returned, a moment after the machine's folder went.
        wait_until(lambda: not Path(machine.remote_root(dead.node_id)).exists()
                   and not (home / "nodes" / dead.node_id).exists(), 30, interval=0.2,
                   message="its folder removed from the machine, and its record here")
        again = suite.request()
        provider.launch([again])
        wait_until(lambda: (n := (provider.list_nodes() or {}).get(again.node_id)) and n.address, 60, interval=0.1,
                   message="the machine takes a new node")
        provider.terminate([again.node_id])
        wait_until(lambda: (nodes := provider.list_nodes()) is not None and again.node_id not in nodes, 60,
                   interval=0.2, message="the last node to go")
    finally:
        sshd.thaw()
        provider.close()
