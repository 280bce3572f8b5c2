"""The plugin contracts of the backends.

A JobRunner takes a launch plan and makes `python -m cible.launch` run it
somewhere; it reports what the launcher reported. Every call is idempotent,
keyed by the job name, so a restarted server can call again safely.

A NodeProvider makes the machines (nodes) a cluster's agents run on: four required verbs
(launch, terminate, list_nodes, cannot_hold) and a typed status(); everything else is an
optional capability it declares (`ProviderBase` has the defaults). Providers are found by
entry point (`cible.backends.registry`); every one passes `cible.testing.conformance`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from cible.core.lifecycle.runs import RunObservation


class EngineUnavailable(Exception):  # noqa: N818  (a state of the engine, not a bug)
    """A runner's engine cannot be reached now (a Slurm login host that does not answer): the job is
    neither failed nor lost; it waits (a submit) or keeps its status (a poll), and is tried again
    with a growing back-off. The message says why, for the job's queue reason."""


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

    def agent_args(self, home: Path | None, url: str | None) -> list[str]:
        """The `python -m cible.agent` arguments that make this node (its root aside: the provider
        says where the node's working root is). No `home` for a node on another machine."""
        args = ["--node-id", self.node_id, "--compute", self.compute, *(["--home", str(home)] if home else []),
                "--size", self.size,
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


# -- what a provider says of itself ------------------------------------------------------------------


class HostCapacity(BaseModel):
    """The machine a provider's nodes share (`local`: this one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vcpus: int
    memory_gb: float
    gpus: int


class ProviderStatus(BaseModel):
    """Whether a provider can be used and what it knows of its engine: for `compute show`
    (`provider_status`), the provider list, and the reasons a queued job gives.

    Serialized (`model_dump(mode="json")`) with the keys the API has always given: name, available,
    reachable and error always (null or not), every other field only when the provider filled it
    (`capacity` under its API name `host`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    available: bool  # configured and installed: it can be used
    reachable: bool  # its engine answers
    error: str | None = None  # why it is unavailable or unreachable (with the fix, where one is known)
    hint: str | None = None  # how to fix it, when that is not already in `error`
    address: str | None = None  # where its engine is (ray: the cluster's address)
    capacity: HostCapacity | None = None  # local: the machine its nodes share
    ray_nodes: int | None = None  # ray: the Ray machines alive
    autoscaling: bool | None = None  # ray: the engine adds machines itself, so no size is refused
    namespace: str | None = None  # ray: the namespace of the workspace's node actors
    waiting: dict[str, str] | None = None  # compute -> why its next node waits for room on the engine

    def waiting_for(self, compute: str) -> str | None:
        """Why the compute's next node waits on the engine, if it does."""
        return (self.waiting or {}).get(compute)

    @model_serializer(mode="wrap")
    def _api_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        keys = ["name", "available", *(["address"] if self.address is not None else []), "reachable", "error"]
        out = {key: data[key] for key in keys}
        for key in ("hint", "capacity", "ray_nodes", "autoscaling", "namespace", "waiting"):
            if data.get(key) is not None:
                out["host" if key == "capacity" else key] = data[key]
        return out


# -- the contract ---------------------------------------------------------------------------------

# Optional capabilities: a provider declares those it has in `capabilities`; generic code asks
# `supports(provider, ...)` before it calls one (capabilities are declared, not discovered by trying).
PREPARE = "prepare"  # prepare(): connect to its engine in the background when the server starts
CLOSE = "close"  # close(): let go of its engine when the server stops (nodes go on running)
PREEMPT = "preempt"  # preempt(node_id): evict a node at once, as a low-priority VM is taken back
POLL_ERRORS = "poll_errors"  # poll_errors(): nodes that failed to start or were lost, and why
ON_NODE_GONE = "on_node_gone"  # it calls on_node_gone() when a node it stopped or lost is gone
SIZE_NOTES = "size_notes"  # size_notes(...): what a node of a size gets there other than its size
# Its nodes see the server's workspace folder at the same path (this machine, or a shared filesystem):
# their launchers read code, inputs and the resume folder in place and write outputs there. A provider
# without it (an SSH host) gets plans marked `"transfer": "http"`: its agent fetches and sends those
# files through the agent routes (cible.agent.localize, cible.agent.transfer).
SHARES_WORKSPACE = "shares_workspace"
METHOD_CAPABILITIES = frozenset({PREPARE, CLOSE, PREEMPT, POLL_ERRORS, SIZE_NOTES})
CAPABILITIES = METHOD_CAPABILITIES | {ON_NODE_GONE, SHARES_WORKSPACE}


class NodeProvider(Protocol):
    """Makes the machines a cluster's agents run on. Every call is idempotent, keyed by node id,
    so a restarted server can repeat a launch or terminate it is not sure happened. These are the
    required members; the optional ones are named in `capabilities` (see `ProviderBase`)."""

    name: str
    capabilities: frozenset[str]

    def status(self) -> ProviderStatus:
        """Whether it can be used, whether its engine answers, the error when not, and what it knows
        of its capacity: for `compute show` and the provider list."""

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """Why this provider could never start a node of this size (checked when a cluster is
        created), or None."""

    def launch(self, requests: list[NodeRequest]) -> None:
        """Start an agent per request (a node already started is left alone)."""

    def terminate(self, node_ids: list[str]) -> None:
        """Stop those nodes and everything they run; returns at once, the nodes go in the background."""

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        """Every node this provider holds for the workspace, by node id; None while it cannot
        tell (its engine not reached yet): the reconciler then leaves its clusters alone."""


@dataclass(frozen=True)
class ProviderContext:
    """What a provider factory (`cible.node_providers` entry point) is given by the server: where
    its nodes' working roots go, the workspace, the server's URL for the agents, each node's token,
    and its own settings (`options`, e.g. ray: address, token, autoscaling)."""

    nodes_root: Path
    home: Path
    url: str | None
    node_token: Callable[[str], str]
    options: Mapping[str, Any] = field(default_factory=dict)


ProviderFactory = Callable[[ProviderContext], NodeProvider]
P = TypeVar("P")


def supports(provider: object, capability: str) -> bool:
    """Whether the provider declares this optional capability (one that declares none has none)."""
    return capability in getattr(provider, "capabilities", frozenset())


def sharing_workspace(provider: P, options: Mapping[str, Any]) -> P:
    """`provider`, declaring SHARES_WORKSPACE unless its `shared_workspace` option is false (default
    true: the nodes of `local` and `ray` see the workspace). False makes its nodes move their files
    over HTTP as an SSH host's do: a test of that path, or a Ray cluster without a shared filesystem."""
    shared = options.get("shared_workspace", True)
    if isinstance(shared, str):
        shared = shared.strip().lower() not in ("0", "false", "no", "off")
    declared = frozenset(getattr(provider, "capabilities", frozenset()))
    provider.capabilities = declared | {SHARES_WORKSPACE} if shared else declared - {SHARES_WORKSPACE}
    return provider


class ProviderBase:
    """The optional members with their defaults, for providers to derive from: a provider overrides
    those it has and names them in `capabilities` (the conformance suite checks the two agree)."""

    name: str = ""
    capabilities: frozenset[str] = frozenset()

    def on_node_gone(self) -> None:
        """Replaced by the server (with the cluster reconciler's wake) when ON_NODE_GONE is declared."""

    def prepare(self) -> None:
        """Start what it needs in the background (a connection to its engine)."""

    def close(self) -> None:
        """Let go of its engine; the nodes go on running, for a restarted server to find."""

    def preempt(self, node_id: str) -> None:
        """Evict a node at once, as a low-priority VM is taken back (for drills and tests)."""
        raise NotImplementedError(f"the {self.name} node provider cannot preempt nodes")

    def poll_errors(self) -> dict[str, str]:
        """Launch failures and lost nodes since the last call, by node id (the reason, for the node's history)."""
        return {}

    def size_notes(self, size: str, vcpus: int, memory_gb: float, gpus: int) -> list[str]:
        """Warnings on nodes of this size from this provider (local: vCPUs shared beyond the host's)."""
        return []
