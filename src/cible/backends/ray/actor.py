"""The Ray actor that is one cible node: it holds the node's size in Ray's resources and runs
the node's agent (`python -m cible.agent`, the same agent as the `local` provider's) beside it.

The actor is detached and named after the node, so it outlives the server that made it and a
restarted server finds it again by name. Its resources (CPU, memory, GPU of the node's size)
are what make Ray refuse to put more nodes on a machine than it holds. The agent is a child
process: it keeps the agent's own signal handling and launcher, and the actor only starts,
watches and stops it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cible.launch.procs import signal_tree
from cible.node.files import SELF_STOP_FILE
from cible.node.token import hand_token

STOP_GRACE_S = 10.0


class CibleNode:
    """Made through `ray.remote(CibleNode).options(...)` by the provider (see provider.py)."""

    def __init__(self, node_id: str, compute: str, agent_args: list[str], root: str, token: str) -> None:
        import ray

        self.node_id = node_id
        self.compute = compute
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        context = ray.get_runtime_context()
        self.ray_node_id = context.get_node_id()
        self.ip = ray.util.get_node_ip_address()
        # Ray sets CUDA_VISIBLE_DEVICES for the actor to the GPUs it reserved: the agent inherits it. An actor
        # without GPUs is told so, as Ray may leave the variable unset and the machine's GPUs in sight.
        gpu_args = [] if ray.get_gpu_ids() else ["--gpu-ids", "none"]
        args = [sys.executable, "-m", "cible.agent", *agent_args, "--root", str(self.root),
                "--advertise-address", self.ip, *gpu_args]
        with open(self.root / "agent.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root, close_fds=True)
        hand_token(self.proc, token)

    def info(self) -> dict[str, Any]:
        """Where the node is and whether its agent still runs (and, if not, why)."""
        code = self.proc.poll()
        stopped_itself = None
        if code is not None and (self.root / SELF_STOP_FILE).exists():
            stopped_itself = (self.root / SELF_STOP_FILE).read_text(errors="replace").strip() or "stopped itself"
        tail = None
        if code is not None and stopped_itself is None:
            try:
                tail = " | ".join((self.root / "agent.log").read_text(errors="replace").strip().splitlines()[-3:])
            except OSError:
                tail = "no agent.log"
        return {"node_id": self.node_id, "compute": self.compute, "ray_node_id": self.ray_node_id, "ip": self.ip,
                "pid": self.proc.pid, "exit_code": code, "stopped_itself": stopped_itself, "log_tail": tail}

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the agent (it ends its runs and reports), SIGKILL what remains after the grace."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.poll()

    def kill(self) -> None:
        """End the agent and all it runs at once (an evicted or lost machine)."""
        signal_tree(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # reaping the agent, bounded
