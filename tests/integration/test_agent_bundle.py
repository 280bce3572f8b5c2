"""The node side as an attached host runs it: the bundle (cible.backends.ssh.bundle) in a folder of its
own, run by a Python that has nothing but its standard library (`python3 -m venv --without-pip`: an
empty site-packages, no system ones), started by `python -m cible.agent.detach` with the node's token
on stdin and the server's URL in a URL file.

A real workspace server runs in this process, with a cluster of the `local` provider whose nodes are
started that way instead of as the server's own Python: each node's agent registers and heartbeats,
the server sees the node idle, and a command job placed on it completes (the workspace folder is
shared: same machine; moving files for hosts that do not share it comes with issue 19's slice 3)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cible.backends.local.provider import LocalNodeProvider
from cible.backends.ssh.bundle import Bundle, build_bundle
from cible.node.proc import Process
from cible.testing import kill_nodes, wait_until

pytestmark = pytest.mark.timeout(240)

TOKEN = "bundle-test-token"
CLUSTER = "hosts"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return build_bundle(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a venv made without pip from this Python's base: the standard library only."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    for package in ("psutil", "httpx", "pydantic", "yaml", "cible"):  # what the server's own Python has
        found = subprocess.run([str(python), "-E", "-s", "-c", f"import {package}"], capture_output=True, cwd=venv)
        assert found.returncode != 0, f"the bare venv's Python imports {package}: it is not bare"
    return python


def host_env() -> dict[str, str]:
    """The environment a host's SSH session gives: none of this test's (no PYTHONPATH, no CIBLE_*)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    for name in ("CIBLE_LIMITS_MECHANISM",):  # how this machine holds a node to its size, when forced
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def detach(python: Path, bundle: Bundle, args: list[str], token: str | None) -> subprocess.CompletedProcess:
    """`python -m cible.agent.detach ARGS` as a host runs it: from the bundle's folder, -E (no PYTHONPATH)
    and -s (no user site-packages), the token on stdin."""
    return subprocess.run([str(python), "-E", "-s", "-m", "cible.agent.detach", *args],
                          input=None if token is None else token + "\n", cwd=bundle.path, env=host_env(),
                          capture_output=True, text=True, timeout=60)


class BundledAgents(LocalNodeProvider):
    """The `local` provider, its agents started from the bundle by the bare Python, as over SSH."""

    python_for_hosts: Path
    bundle: Bundle
    tokens: dict[str, str] = {}  # node id → the token its agent was handed

    def _start(self, request: Any, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        url_file = root / "server_url"
        url_file.write_text(self.url + "\n")
        args = ["--root", str(root), "--url-file", str(url_file), *request.agent_args(self.home, None)]
        token = self.tokens[request.node_id] = self.node_token(request.node_id)
        done = detach(self.python_for_hosts, self.bundle, args, token)
        if done.returncode != 0:
            raise OSError(f"cible.agent.detach exited {done.returncode}: {done.stderr.strip()}")


@pytest.fixture
def workspace(tmp_path: Path, bundle: Bundle, bare_python: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import uvicorn

    from cible import MLClient
    from cible.server.app import create_app
    from cible.server.settings import ServerSettings

    BundledAgents.python_for_hosts, BundledAgents.bundle = bare_python, bundle
    monkeypatch.setattr("cible.backends.local.make_provider", lambda context: BundledAgents(
        context.nodes_root, context.home, context.url, context.node_token))
    home = tmp_path / "ws"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(ServerSettings(home=home, tracking=False, token=TOKEN), TOKEN, url=url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    ml = None
    try:
        wait_until(lambda: server.started, 60, message="the workspace server to start")
        ml = MLClient(url=url, token=TOKEN)
        yield ml, home
    finally:
        if ml is not None:
            ml.close()
        app.state.hub.release_all()  # agents' long-polls would hold the shutdown (as process.py does)
        server.should_exit = True
        thread.join(30)
        sock.close()
        kill_nodes(home)


def test_an_agent_from_the_bundle_on_a_bare_python_runs_a_job_to_completed(workspace, bundle: Bundle,
                                                                             bare_python: Path) -> None:
    ml, home = workspace
    ml.compute.begin_create_or_update({"name": CLUSTER, "type": "amlcompute", "size": "Standard_DS1_v2",
                                       "min_instances": 1, "max_instances": 1,
                                       "idle_time_before_scale_down": 600}).result()

    def idle_node() -> dict | None:
        nodes = [dict(n) for n in ml.compute.list_nodes(CLUSTER)]
        return nodes[0] if len(nodes) == 1 and nodes[0]["node_state"] == "idle" else None

    node = wait_until(idle_node, 90, interval=0.2, message="the bundled agent's node to be idle")
    root = home / "nodes" / node["node_id"]
    agent = Process(json.loads((root / "agent.json").read_text())["pid"])
    # The agent runs the bare Python on the bundle; its token is in no argument, variable or file of the node.
    command_line = Path(f"/proc/{agent.pid}/cmdline").read_bytes()
    environment = Path(f"/proc/{agent.pid}/environ").read_bytes().split(b"\0")
    assert command_line.split(b"\0")[:3] == [str(bare_python).encode(), b"-m", b"cible.agent"]
    assert f"PYTHONPATH={bundle.path}".encode() in environment
    token = BundledAgents.tokens[node["node_id"]].encode()
    assert token not in command_line and not any(token in v for v in environment)
    assert not any(token in p.read_bytes() for p in root.rglob("*") if p.is_file())

    job = ml.jobs.create_or_update({
        "type": "command", "compute": f"azureml:{CLUSTER}", "experiment_name": "bundle",
        "command": "python -c \"import sys; print('prefix', sys.prefix)\"",
    })
    done = ml.jobs.wait(job["name"], timeout=120)
    assert done["status"] == "Completed", done
    out = io.BytesIO()
    ml.jobs.stream(job["name"], out=out)
    text = out.getvalue().decode(errors="replace")
    assert f"prefix {bare_python.parent.parent}" in text, text  # the job's `python` is the bare one
    assert agent.is_running()  # the node stays, idle again, for the next job
    wait_until(idle_node, 30, message="the node to be idle again")


def test_detach_refuses_without_a_token_and_says_why_an_agent_died_at_once(tmp_path: Path, bundle: Bundle,
                                                                           bare_python: Path) -> None:
    root = tmp_path / "node"
    args = ["--root", str(root), "--node-id", "n1", "--compute", "c", "--url", "http://127.0.0.1:9",
            "--vcpus", "1", "--memory-gb", "1"]
    no_token = detach(bare_python, bundle, args, None)
    assert no_token.returncode == 2 and "token on stdin" in no_token.stderr
    too_big = detach(bare_python, bundle, [*args[:-1], "100000"], "t")  # a size this machine cannot hold
    assert too_big.returncode == 1, too_big.stderr
    assert "the agent exited at once with code 1" in too_big.stderr and "100000 GB" in too_big.stderr
    assert (root / "agent.log").is_file() and (root / "agent.json").is_file()
