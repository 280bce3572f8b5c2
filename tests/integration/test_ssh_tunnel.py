"""The tunnel from an attached machine back to the server, run by the system's OpenSSH client in a
process of its own (cible.backends.ssh.tunnel), against a real sshd on a loopback address
(127.0.0.31): it forwards, it trusts the pinned host key alone, it asks for its port again, it is
made again when it dies, and it never outlives its host session or the server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cible.backends.ssh.connect import RemoteHostError, SshTarget
from cible.backends.ssh.hosts import AttachedHost, HostSession
from cible.backends.ssh.probe import attach, run_sync
from cible.backends.ssh.tunnel import openssh_client
from cible.testing import wait_until
from cible.testing.sshd import LoopbackSshd, keygen, sshd_missing

ADDRESS = "127.0.0.31"


@pytest.fixture(scope="module", autouse=True)
def _needs_sshd() -> None:
    if why := sshd_missing() or (None if openssh_client() else "no ssh client (apt-get install openssh-client)"):
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[LoopbackSshd, AttachedHost]]:
    key = keygen(tmp_path / "key")
    sshd = LoopbackSshd(tmp_path / "sshd", (ADDRESS,))
    sshd.authorize("root", key.with_suffix(".pub"))
    sshd.start()
    found = run_sync(attach(SshTarget(ADDRESS, sshd.port, "root", str(key)), python="python3",
                            expected_fingerprint=None))
    pinned = SshTarget(ADDRESS, sshd.port, "root", str(key), found.host_key)
    try:
        yield sshd, AttachedHost("box", pinned, agent_dir=str(tmp_path / "agent"), tunnel="always", facts=found.facts)
    finally:
        sshd.stop()


@pytest.fixture
def server() -> Iterator[str]:
    """A stand-in for the server: answers every connection with one line."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"the server\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _answer(port: int) -> bytes:
    """What the host gets at its end of the tunnel (the machine is this one: its loopback)."""
    with socket.create_connection(("127.0.0.1", port), 5) as conn:
        return conn.makefile("rb").readline()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is gone too
    except OSError:
        return True


def test_it_forwards_through_an_ssh_process_that_ends_with_its_session(
        machine: tuple[LoopbackSshd, AttachedHost], server: str, tmp_path: Path) -> None:
    _, host = machine

    async def go() -> tuple[str, int, bytes, list[bytes]]:
        session = HostSession(host, port_file=tmp_path / "tunnels" / "box.port")
        try:
            url = await session.agent_url(server)
            assert session.tunnel is not None and session.tunnel.pid is not None
            pid = session.tunnel.pid
            said = await asyncio.to_thread(_answer, _port(url))
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            return url, pid, said, argv
        finally:
            session.close()

    url, pid, said, argv = asyncio.run(go())
    assert url.startswith("http://127.0.0.1:") and _port(url) != _port(server)
    assert said == b"the server\n"
    assert argv[0].endswith(b"ssh") and str(host.target.key_file).encode() in argv  # the key's path, not its content
    assert not any(b"PRIVATE KEY" in arg for arg in argv)
    assert (tmp_path / "tunnels" / "box.port").read_text().strip() == str(_port(url))
    wait_until(lambda: _gone(pid), 10, interval=0.05, message="the ssh process to end with its session")
    wait_until(lambda: not _listening(_port(url)), 10, interval=0.05, message="the port on the host to close")


def test_a_dead_tunnel_is_made_again_on_its_port_and_a_restart_asks_for_it_again(
        machine: tuple[LoopbackSshd, AttachedHost], server: str, tmp_path: Path) -> None:
    _, host = machine
    port_file = tmp_path / "tunnels" / "box.port"

    async def go() -> None:
        session = HostSession(host, port_file=port_file)
        try:
            url = await session.agent_url(server)
            first = session.tunnel.pid
            os.kill(first, signal.SIGKILL)
            await asyncio.to_thread(wait_until, lambda: not session.tunnel.alive(), 10, interval=0.05,
                                    message="the tunnel seen dead")
            assert await session.agent_url(server) == url  # made again, the same port asked for
            assert session.tunnel.pid != first
            assert await asyncio.to_thread(_answer, _port(url)) == b"the server\n"
        finally:
            session.close()
        await asyncio.to_thread(wait_until, lambda: not _listening(_port(url)), 10, interval=0.05,
                                message="the old tunnel to close")
        again = HostSession(host, port_file=port_file)  # the server restarted
        try:
            assert await again.agent_url(server) == url
        finally:
            again.close()
        await asyncio.to_thread(wait_until, lambda: not _listening(_port(url)), 10, interval=0.05,
                                message="the second tunnel to close")
        with socket.create_server(("127.0.0.1", _port(url))):  # its port taken meanwhile: another one
            taken = HostSession(host, port_file=port_file)
            try:
                other = await taken.agent_url(server)
                assert _port(other) != _port(url)
                assert port_file.read_text().strip() == str(_port(other))
                assert await asyncio.to_thread(_answer, _port(other)) == b"the server\n"
            finally:
                taken.close()

    asyncio.run(go())


def test_a_changed_host_key_is_refused(machine: tuple[LoopbackSshd, AttachedHost], server: str) -> None:
    sshd, host = machine
    sshd.new_host_key()  # reinstalled, or impersonated: the pinned key is no longer offered

    async def go() -> RemoteHostError:
        session = HostSession(host)
        try:
            with pytest.raises(RemoteHostError) as refused:
                await session.agent_url(server)
            assert session.tunnel is not None and not session.tunnel.alive()
            return refused.value
        finally:
            session.close()

    error = asyncio.run(go())
    assert error.details["reason"] == "host_key_changed"
    assert sshd.host_fingerprint in error.message and "has changed" in error.message


def test_the_tunnel_dies_with_a_server_killed_hard(machine: tuple[LoopbackSshd, AttachedHost], server: str,
                                                   tmp_path: Path) -> None:
    """A server killed -9 closes nothing: its ssh process ends by itself (PR_SET_PDEATHSIG)."""
    _, host = machine
    script = textwrap.dedent(f"""
        import asyncio, threading
        from pathlib import Path
        from cible.backends.ssh.connect import SshTarget
        from cible.backends.ssh.hosts import AttachedHost, HostSession
        host = AttachedHost("box", SshTarget(*{[host.target.host, host.target.port, host.target.username,
                                                host.target.key_file, host.target.host_key]!r}), tunnel="always")
        loop = asyncio.new_event_loop()  # as the provider's: a loop in a thread of its own
        threading.Thread(target=loop.run_forever, daemon=True).start()
        session = HostSession(host, port_file=Path({str(tmp_path / "box.port")!r}))
        url = asyncio.run_coroutine_threadsafe(session.agent_url({server!r}), loop).result(60)
        print(session.tunnel.pid, url, flush=True)
        threading.Event().wait()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, url = child.stdout.readline().split()
        assert _answer(_port(url)) == b"the server\n"
    finally:
        child.kill()
        child.wait()
    wait_until(lambda: _gone(int(pid)), 10, interval=0.05, message="the ssh process to end with the server")
    deadline = time.monotonic() + 10
    while _listening(_port(url)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _listening(_port(url))


def test_without_an_ssh_client_asyncssh_carries_the_tunnel(machine: tuple[LoopbackSshd, AttachedHost], server: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The way for a server's machine without `ssh` (or CIBLE_SSH_TUNNEL=asyncssh): the forward is
    made over the session's own connection, inside the server process."""
    from cible.backends.ssh import hosts

    monkeypatch.setattr(hosts, "openssh_client", lambda: None)
    _, host = machine

    async def go() -> None:
        session = HostSession(host)
        try:
            url = await session.agent_url(server)
            assert session.tunnel is None and session.listener is not None
            assert await asyncio.to_thread(_answer, _port(url)) == b"the server\n"
        finally:
            session.close()

    asyncio.run(go())
