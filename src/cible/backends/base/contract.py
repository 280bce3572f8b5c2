"""The plugin contract for engines that run a job's launcher.

A JobRunner takes a launch plan and makes `python -m cible.launch` run it
somewhere; it reports what the launcher reported. Every call is idempotent,
keyed by the job name, so a restarted server can call again safely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cible.core.models.runs import RunObservation


class JobRunner(Protocol):
    name: str

    def prepare(self) -> None:
        """Get ready for work (warm pools, connections); called when the server starts."""

    def close(self) -> None:
        """Release what prepare() holds; running jobs are left running."""

    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        """Start the launcher for `plan`; return a JSON handle for the other calls."""

    def poll(self, handle: dict[str, Any]) -> RunObservation: ...

    def cancel(self, handle: dict[str, Any]) -> None:
        """Ask the run to stop; the launcher ends the process tree and reports Canceled."""

    def log_path(self, handle: dict[str, Any]) -> Path | None:
        """Where the user log is readable by the server, when it is local."""


@dataclass(frozen=True)
class NodeRequest:
    """One node to start: who it is, which cluster it serves, the size it is held to."""

    node_id: str
    compute: str
    size: str
    vcpus: int
    memory_gb: float
    gpus: int = 0
    overcommit: bool = False
    low_priority: bool = False
    # Compute instances: the OS disk the agent measures use against, the idle time after which
    # an agent cut off from its server stops itself, and the folder that outlives the node
    # (the instance's home: kept across stop and start, as a VM's disk is).
    disk_gb: float | None = None
    idle_shutdown_s: float | None = None
    persistent_dir: str | None = None

    def agent_args(self, home: Path, url: str | None) -> list[str]:
        """The `python -m cible.agent` arguments that make this node (its root aside: the provider
        says where the node's working root is)."""
        args = ["--node-id", self.node_id, "--compute", self.compute, "--home", str(home), "--size", self.size,
                *(["--url", url] if url else []),
                "--vcpus", str(self.vcpus), "--memory-gb", str(self.memory_gb), "--gpus", str(self.gpus)]
        if self.overcommit:
            args.append("--overcommit")
        if self.disk_gb is not None:
            args += ["--disk-gb", str(self.disk_gb)]
        if self.idle_shutdown_s is not None:
            args += ["--idle-shutdown", str(self.idle_shutdown_s)]
        if self.persistent_dir is not None:
            args += ["--persistent-dir", self.persistent_dir]
        return args


@dataclass(frozen=True)
class ProviderNode:
    """A node as its provider sees it."""

    node_id: str
    alive: bool = True
    preempted: bool = False  # evicted (low priority): its work was taken away
    address: str | None = None
    stopped_itself: str | None = None  # why its agent ended itself (idle without a server)


class NodeProvider(Protocol):
    """Makes the machines a cluster's agents run on. Every call is idempotent, keyed by node id,
    so a restarted server can repeat a launch or terminate it is not sure happened."""

    name: str
    on_node_gone: Callable[[], None]  # set by the server: called when a terminated node is gone

    def prepare(self) -> None:
        """Start what it needs in the background (a connection to its engine); called by the server."""

    def close(self) -> None:
        """Let go of its engine; the nodes go on running, for a restarted server to find."""

    def status(self) -> dict[str, Any]:
        """Whether it can be used (`available`), whether its engine answers (`reachable`), the error
        when not, and what it knows of its capacity: for `compute show` and the provider list."""

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """Why this provider could never start a node of this size (checked when a cluster is
        created), or None."""

    def launch(self, requests: list[NodeRequest]) -> None:
        """Start an agent per request (a node already started is left alone)."""

    def terminate(self, node_ids: list[str]) -> None:
        """Stop those nodes and everything they run; returns at once, the nodes go in the background."""

    def preempt(self, node_id: str) -> None:
        """Evict a node at once, as a low-priority VM is taken back (for drills and tests)."""

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        """Every node this provider holds for the workspace, by node id; None while it cannot
        tell (its engine not reached yet): the reconciler then leaves its clusters alone."""

    def poll_errors(self) -> dict[str, str]:
        """Launch failures since the last call, by node id (the reason, for the node's history)."""
