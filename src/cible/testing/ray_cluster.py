"""A real Ray cluster on loopback addresses, for tests and benchmarks.

Each Ray node is a `ray start --block` process of its own on its own 127.0.0.x address
(`--node-ip-address`), so one machine holds a multi-node Ray. Nodes are stopped by their
PID, never with `ray stop`, which ends every Ray process on the machine (other users' too).
Token auth is off explicitly: a user's `~/.ray/auth_token` would otherwise turn it on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cible.launch.procs import signal_tree

# Ray's own worker processes take ports 10002-19999; every other port we pick lies elsewhere.
_RAY_WORKER_PORTS = range(10002, 20000)


def free_port(host: str = "127.0.0.1") -> int:
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _RAY_WORKER_PORTS:
            return port


def ray_env(extra: dict[str, str] | None = None, token: str | None = None) -> dict[str, str]:
    """The environment Ray nodes start with: token auth only with a token (said outright either
    way: a user's `~/.ray/auth_token` would otherwise turn it on), no usage stats, a patient
    raylet (a busy machine starts the dashboard agent slowly), this Python first on PATH (a
    job's `python` is the one `ray start` found)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "token" if token else "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_agent_register_timeout_ms": "60000", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_AUTH_TOKEN", None)
    if token:
        env["RAY_AUTH_TOKEN"] = token
    env.update(extra or {})
    return env


@dataclass
class RayNode:
    ip: str
    proc: subprocess.Popen
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End this Ray node and every process on it at once (a machine lost)."""
        signal_tree(self.proc.pid, sig, session=True, wait_s=10)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            signal_tree(self.proc.pid, signal.SIGKILL, session=True, wait_s=10)


@dataclass
class RayTestCluster:
    """`start()` a head on 127.0.0.2; `add_node()` more on 127.0.0.3, .4 …; `stop()` them all."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cray-", dir="/tmp")))
    head_ip: str = "127.0.0.2"
    env: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # Ray's token auth on, with this token
    nodes: list[RayNode] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0

    @property
    def address(self) -> str:
        """What a driver passes to `ray.init(address=…)`."""
        return f"{self.head_ip}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, *, num_cpus: int = 1, memory_gb: float = 2.0, resources: dict[str, float] | None = None,
              autoscaling_config: dict[str, Any] | None = None, timeout: float = 120.0) -> RayTestCluster:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        args = ["--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                f"--temp-dir={self.root / 'ray'}"]
        if autoscaling_config is not None:
            config = {**autoscaling_config}
            config["provider"] = {**config["provider"], "gcs_address": self.address}
            path = self.root / "autoscale.json"
            path.write_text(json.dumps(config))
            args.append(f"--autoscaling-config={path}")
        self._start_node(self.head_ip, args, num_cpus, memory_gb, resources)
        self.wait_for_nodes(1, timeout)
        return self

    def add_node(self, ip: str | None = None, *, num_cpus: int = 1, memory_gb: float = 2.0,
                 resources: dict[str, float] | None = None, timeout: float = 120.0) -> RayNode:
        ip = ip or f"127.0.0.{2 + len(self.nodes)}"
        node = self._start_node(ip, [f"--address={self.address}"], num_cpus, memory_gb, resources)
        self.wait_for_nodes(len(self.alive_nodes()) + 1, timeout)
        return node

    def _start_node(self, ip: str, args: list[str], num_cpus: int, memory_gb: float,
                    resources: dict[str, float] | None) -> RayNode:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"ray-{ip}.log"
        command = [str(Path(sys.executable).parent / "ray"), "start", "--block", *args,
                   f"--node-ip-address={ip}", f"--num-cpus={num_cpus}", f"--memory={int(memory_gb * 2**30)}",
                   "--object-store-memory=80000000", f"--dashboard-agent-listen-port={free_port()}",
                   "--disable-usage-stats"]
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=ray_env(self.env, self.token), start_new_session=True)
        node = RayNode(ip, proc, log)
        self.nodes.append(node)
        return node

    @property
    def auth_headers(self) -> dict[str, str]:
        """What an HTTP call to the dashboard (state API, Jobs API) carries under token auth."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The ALIVE nodes as the head's dashboard lists them (its answer is the readiness check:
        the dashboard answers HTTP before the raylet is up)."""
        try:
            reply = httpx.get(f"{self.dashboard_url}/api/v0/nodes", params={"detail": "false"}, timeout=5,
                              headers=self.auth_headers)
            rows = reply.json()["data"]["result"]["result"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        return [r for r in rows if r.get("state") == "ALIVE"]

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) < count:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"Ray node {node.ip} exited with {node.proc.returncode}: "
                                       f"{node.log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray: {count} node(s) not ALIVE after {timeout:.0f} s (see {self.root})")
            time.sleep(0.25)  # polling the head's dashboard, bounded by the deadline

    def stop(self) -> None:
        """SIGTERM each node (Ray drains and stops its children), SIGKILL what is left."""
        for node in reversed(self.nodes):
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in reversed(self.nodes):
            try:
                node.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            signal_tree(node.proc.pid, signal.SIGKILL, session=True, wait_s=10)
        self.nodes.clear()

