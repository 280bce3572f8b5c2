"""The `local` node provider: each node is a `cible agent` process on this machine.

A node's working root is `<nodes_root>/<node_id>/`: `agent.json` (pid and start time,
written by the provider), `agent.log`, and the agent's own `runs/`. Agents start in
sessions of their own, so they outlive a server killed with -9; the restarted server
finds them again by their `agent.json`. The agent holds its node to its size
(`NodeLimits`); this provider only starts, lists and stops agents.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from cible.backends.base.contract import (
    CLOSE, ON_NODE_GONE, POLL_ERRORS, PREEMPT, PREPARE, SIZE_NOTES, HostCapacity, NodeRequest, ProviderBase,
    ProviderNode, ProviderStatus,
)
from cible.backends.local.warm import WarmAgents, WarmLedger
from cible.core.safepaths import under
from cible.launch.procs import signal_tree
from cible.node import gpus as node_gpus
from cible.node.files import AGENT_FILE, PREEMPTED_FILE, SELF_STOP_FILE
from cible.node.limits import LimitError, NodeLimits, Shape, check_fits, host_capacity, missing_gpus, shared_vcpus
from cible.node.proc import STATUS_ZOMBIE, Process, TimeoutExpired
from cible.node.proc import Error as ProcessError
from cible.node.proc import create_time as process_create_time
from cible.node.token import hand_token
from cible.runfiles import write_json_atomic

STOP_GRACE_S = 10.0
GPUS_FILE = "gpus.json"  # the GPU idents a node was given (cible.node.gpus): held while its agent runs
LOOPBACK = "127.0.0.1"


class LocalNodeProvider(ProviderBase):
    name = "local"
    capabilities = frozenset({PREEMPT, POLL_ERRORS, ON_NODE_GONE, SIZE_NOTES, PREPARE, CLOSE})

    def __init__(self, nodes_root: Path, home: Path, url: str | None, node_token: Callable[[str], str],
                 python: str | None = None, warm_nodes: int = 0, warm_ledger: WarmLedger | None = None) -> None:
        self.nodes_root = nodes_root
        self.home = home  # the workspace: a restarted server's URL is in its server.json
        self.url = url
        self.node_token = node_token  # each node's agent gets a token for its own node only
        self.python = python or sys.executable
        self._errors: dict[str, str] = {}
        self._stopping: set[str] = set()  # nodes this provider ends: their exit is no failure
        self._lock = threading.Lock()
        self._starting: set[str] = set()  # nodes given GPUs whose agent.json is not written yet
        self._capacity: Shape | None = None
        # Agents started ahead of need (warm.py): a node takes one instead of starting its own.
        self.warm = WarmAgents(self.python, nodes_root, warm_nodes, warm_ledger)
        # on_node_gone (ProviderBase): the server sets it, and the reconciler marks a gone node removed at once

    def status(self) -> ProviderStatus:
        if self._capacity is None:  # read once: it is asked for each queued job's reason
            self._capacity = host_capacity()
        capacity = self._capacity
        return ProviderStatus(name=self.name, available=True, reachable=True, error=None,
                              capacity=HostCapacity(vcpus=capacity.vcpus, memory_gb=round(capacity.memory_gb, 1),
                                                    gpus=capacity.gpus))

    def prepare(self) -> None:
        self.warm.start()

    def close(self) -> None:
        self.warm.stop()

    # -- the contract --------------------------------------------------------
    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """A node runs on this machine, so its memory and GPUs must fit here (unless overcommitted);
        its vCPUs need not: beyond the host's they are shared (see `size_notes`)."""
        try:
            check_fits(Shape(vcpus, memory_gb, gpus), host_capacity(), overcommit=overcommit, size=size)
        except LimitError as exc:
            return f"its nodes would run on this machine, but {exc.message}"
        return None

    def size_notes(self, size: str, vcpus: int, memory_gb: float, gpus: int) -> list[str]:
        """What a node of this size gets here other than its size: shared vCPUs, when it has more than this machine,
        and fewer GPUs (overcommitted). Only this provider has it (a Ray node is placed by Ray's own resources)."""
        shape, host = Shape(vcpus, memory_gb, gpus), host_capacity()
        return [note for note in (shared_vcpus(shape, host, size=size), missing_gpus(shape, host, size=size)) if note]

    def launch(self, requests: list[NodeRequest]) -> None:
        for request in requests:
            root = under(self.nodes_root, request.node_id, field="node_id")
            if _agent(root) is not None:
                continue  # already started: launch is idempotent
            try:
                self._start(request, root)
            except LimitError as exc:  # its GPUs are held by other nodes
                with self._lock:
                    self._errors[request.node_id] = f"it cannot start on this machine: {exc.message}"
            except OSError as exc:
                with self._lock:
                    self._errors[request.node_id] = f"could not start the node's agent: {exc}"

    def terminate(self, node_ids: list[str]) -> None:
        with self._lock:
            self._stopping.update(node_ids)
        for node_id in node_ids:
            threading.Thread(target=self._stop, args=(node_id,), name=f"stop-{node_id}", daemon=True).start()

    def preempt(self, node_id: str) -> None:
        """Kill the agent and all it runs at once, as an evicted VM: no grace, no final report."""
        root = under(self.nodes_root, node_id, field="node_id")
        if not root.is_dir():
            return
        with self._lock:
            self._stopping.add(node_id)
        (root / PREEMPTED_FILE).touch()
        proc = _agent(root)
        if proc is not None:
            signal_tree(proc.pid, signal.SIGKILL)

    def list_nodes(self) -> dict[str, ProviderNode]:
        nodes: dict[str, ProviderNode] = {}
        if not self.nodes_root.is_dir():
            return nodes
        for root in self.nodes_root.iterdir():
            if not (root / AGENT_FILE).exists():
                continue
            preempted = (root / PREEMPTED_FILE).exists()
            alive = _agent(root) is not None
            stopped_itself = _read_line(root / SELF_STOP_FILE)
            if alive or preempted or stopped_itself:
                nodes[root.name] = ProviderNode(root.name, alive=alive, preempted=preempted, address=LOOPBACK,
                                                stopped_itself=stopped_itself)
        return nodes

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    # -- helpers ---------------------------------------------------------------
    def _start(self, request: NodeRequest, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:  # two nodes started at once must not be given the same GPU
            given = self._gpus_for(request)
            write_json_atomic(root / GPUS_FILE, given)
            self._starting.add(request.node_id)
        try:
            argv, token = request.agent_args(self.home, self.url), self.node_token(request.node_id)
            argv += ["--gpu-ids", ",".join(given) or "none"]
            proc = self.warm.take(root, argv, token)
            if proc is None:
                with open(root / "agent.log", "ab") as log:
                    proc = subprocess.Popen([self.python, "-m", "cible.agent", "--root", str(root), *argv],
                                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, close_fds=True, cwd=root)
                hand_token(proc, token)
            write_json_atomic(root / AGENT_FILE, {"pid": proc.pid, "create_time": process_create_time(proc.pid),
                                                  "size": request.size, "vcpus": request.vcpus,
                                                  "memory_gb": request.memory_gb, "gpus": request.gpus})
        finally:
            with self._lock:
                self._starting.discard(request.node_id)
        threading.Thread(target=self._reap, args=(request.node_id, proc, root), name=f"reap-{request.node_id}",
                         daemon=True).start()

    def _gpus_for(self, request: NodeRequest) -> list[str]:
        """The GPUs the new node gets (cible.node.gpus): its size's count of those no other live node holds."""
        if request.gpus <= 0:
            return []
        held = {ident: node_id for node_id, idents in self._held_gpus().items() if node_id != request.node_id
                for ident in idents}
        try:
            chosen = node_gpus.assign(request.gpus, node_gpus.discover(), held, overcommit=request.overcommit,
                                      size=request.size)
        except node_gpus.GpuError as exc:
            raise LimitError(exc.message) from None
        return [g.ident for g in chosen]

    def _held_gpus(self) -> dict[str, list[str]]:
        """GPU idents by node, of the nodes whose agent runs or is being started (called under the lock)."""
        held: dict[str, list[str]] = {}
        if not self.nodes_root.is_dir():
            return held
        for root in self.nodes_root.iterdir():
            try:
                idents = json.loads((root / GPUS_FILE).read_text())
            except (OSError, ValueError):
                continue
            if idents and (root.name in self._starting or _agent(root) is not None):
                held[root.name] = list(idents)
        return held

    def _reap(self, node_id: str, proc: subprocess.Popen, root: Path) -> None:
        """Wait for the agent (no zombie stays behind) and report an exit nobody asked for, with
        the end of its log: the reconciler writes the node off and says why."""
        code = proc.wait()
        with self._lock:
            if node_id in self._stopping:
                return
            if not (root / SELF_STOP_FILE).exists():  # a node that stopped itself is listed as such
                self._errors[node_id] = f"its agent exited with code {code}: {_tail(root / 'agent.log')}"
        self.on_node_gone()

    def _stop(self, node_id: str) -> None:
        """SIGTERM the agent (it ends its runs and removes its limits), SIGKILL what remains after
        the grace period, then remove the node's groups and working root."""
        root = under(self.nodes_root, node_id, field="node_id")
        proc = _agent(root)
        if proc is not None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=STOP_GRACE_S)
            except TimeoutExpired:
                signal_tree(proc.pid, signal.SIGKILL)
            except ProcessError:
                pass
        _remove_limits(root, node_id)
        (root / AGENT_FILE).unlink(missing_ok=True)  # first: from here on the node is not listed
        shutil.rmtree(root, ignore_errors=True)
        self.on_node_gone()


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip() or "stopped itself"
    except OSError:
        return None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no agent.log"
    return " | ".join(text[-lines:]) or "agent.log is empty"


def _agent(root: Path) -> Process | None:
    """The node's agent process when it still runs (a reused pid does not count)."""
    try:
        facts = json.loads((root / AGENT_FILE).read_text())
        proc = Process(facts["pid"])
        if abs(proc.create_time() - facts["create_time"]) > 1 or proc.status() == STATUS_ZOMBIE:
            return None
        return proc
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ProcessError):
        return None


def _remove_limits(root: Path, node_id: str) -> None:
    """Remove the node's cgroups, should its agent have died before doing so."""
    try:
        facts = json.loads((root / AGENT_FILE).read_text())
        shape = Shape(vcpus=int(facts["vcpus"]), memory_gb=float(facts["memory_gb"]), gpus=int(facts["gpus"]))
        limits = NodeLimits(node_id, shape, overcommit=True)
        if limits.mechanism != "watchdog" and limits.exists():
            limits.destroy()
    except Exception:  # best effort: a leftover empty group is harmless
        pass
