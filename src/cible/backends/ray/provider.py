"""The `ray` node provider: each cible node is a detached Ray actor holding its size's resources.

The server is a Ray driver (`ray.init(address=…)`, or `ray://…` through Ray Client when it
runs off the Ray cluster), connected from a thread of this provider so a slow or missing Ray
never holds up the server. That thread also watches the nodes: every `REFRESH_S` it asks
each node's actor where it is and whether its agent runs, and `list_nodes` answers from
that view (None until Ray has been seen once: a restarted server never takes "not seen
yet" for "gone").

Placement. A cible node is a machine, as an Azure node is a VM: no two nodes of a compute
share a Ray machine, so the nodes of a multi-node job always land on distinct Ray nodes and
MASTER_ADDR is rank 0's machine. Each node is reserved in a placement group whose label
selector (`ray.io/node-id`) keeps it off the machines the compute already holds; a pending
group is demand Ray's autoscaler sees, so it adds a machine for it. A compute's nodes are
placed one at a time: when Ray has no machine for one, it has none for the next either (same
shape, same exclusions), and none holds back another, as one group for several independent
nodes would (all or nothing). The price: an autoscaling Ray adds a compute's machines one
after the other. Once placed, the node's actor is pinned to its machine (hard node affinity)
and the group removed, so each node can go on its own (a group's bundles stay reserved until
the whole group goes).

The workspace's files are where the agents find job code and inputs, as with `local`: the
Ray nodes must see the workspace folder (one machine, or a shared filesystem).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.backends.base.contract import NodeRequest, ProviderNode
from cible.backends.ray.actor import STOP_GRACE_S, CibleNode
from cible.core.safepaths import under

log = logging.getLogger("cible.provider.ray")
REFRESH_S = 0.5
PING_TIMEOUT_S = 2.0
GB = 2**30


def namespace_for(home: Path) -> str:
    """One Ray namespace per workspace: two workspaces on one Ray never see each other's nodes."""
    return "cible-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def bundle_for(request: NodeRequest) -> dict[str, float]:
    """The Ray resources one node of this size holds (Ray's `memory` is in bytes)."""
    bundle = {"CPU": float(request.vcpus), "memory": float(int(request.memory_gb * GB))}
    if request.gpus:
        bundle["GPU"] = float(request.gpus)
    return bundle


def spread_selector(exclude: set[str], count: int) -> list[dict[str, str]] | None:
    """Keep a launch's bundles off the Ray nodes that already hold a node of its cluster."""
    if not exclude:
        return None
    return [{"ray.io/node-id": f"!in({','.join(sorted(exclude))})"}] * count


def largest_fit(ray_nodes: list[dict[str, float]], vcpus: int, memory_gb: float, gpus: int) -> bool:
    return any(n.get("CPU", 0) >= vcpus and n.get("memory", 0) >= memory_gb * GB and n.get("GPU", 0) >= gpus
               for n in ray_nodes)


class RayNodeProvider:
    name = "ray"

    def __init__(self, address: str, *, nodes_root: Path, home: Path, url: str | None,
                 node_token: Callable[[str], str],
                 ray_token: str | None = None, autoscaling: bool = False) -> None:
        self.address = address
        # The Ray cluster adds machines on demand (its autoscaler, KubeRay): a size no Ray node holds
        # now may still come, so it is not refused at create. (Ray does not say whether it autoscales:
        # its monitor runs, read-only, on every head.)
        self.autoscaling = autoscaling
        self.ray_token = ray_token
        self.nodes_root = nodes_root
        self.home = home
        self.url = url
        self.node_token = node_token  # each node's agent gets a token for its own node only
        self.namespace = namespace_for(home)
        self.on_node_gone: Callable[[], None] = lambda: None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._error: str | None = "not connected yet"
        self._seen_once = False
        self._ray_nodes: list[dict[str, float]] = []  # the alive Ray nodes' total resources
        self._info: dict[str, dict[str, Any]] = {}  # node id → what its actor last said
        self._pending: dict[str, NodeRequest] = {}  # launched, not placed (or not heard from) yet
        self._stopping: set[str] = set()
        self._preempted: set[str] = set()
        self._errors: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._handles: dict[str, Any] = {}  # node id → its actor handle (a lookup saved per ping)
        self._queue: dict[str, list[NodeRequest]] = {}  # compute → its nodes waiting to be placed, in order
        self._placers: set[str] = set()  # computes whose placing thread runs
        self._unplaced: dict[str, str] = {}  # compute → why its next node is not placed yet
        self._placed: dict[str, tuple[str, str]] = {}  # node id → (compute, Ray machine) until its actor answers

    # -- life -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Connect and start watching, in the background."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="ray-provider", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop watching and leave Ray; the nodes (detached actors) go on and are found again."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._connected.is_set():
            import ray

            ray.shutdown()

    def status(self) -> dict[str, Any]:
        """What `compute show` says of the Ray cluster behind a compute."""
        with self._lock:
            waiting = {compute: why + (f" ({len(self._queue[compute])} more of its nodes wait behind it)"
                                       if self._queue.get(compute) else "")
                       for compute, why in self._unplaced.items()}
            return {"name": self.name, "available": True, "address": self.address, "reachable": self._error is None,
                    "error": self._error, "ray_nodes": len(self._ray_nodes), "autoscaling": self.autoscaling,
                    "namespace": self.namespace, "waiting": waiting}

    # -- the contract ------------------------------------------------------------------
    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """A node must fit on one Ray node. Unknown while Ray is unreachable, and a Ray with an
        autoscaler may add bigger machines: then the nodes wait, saying why, instead."""
        with self._lock:
            if self._error is not None or self.autoscaling or not self._ray_nodes:
                return None
            if largest_fit(self._ray_nodes, vcpus, memory_gb, gpus):
                return None
            biggest = max(self._ray_nodes, key=lambda n: (n.get("CPU", 0), n.get("memory", 0)))
        return (f"no node of the Ray cluster at {self.address} can hold a {size} node ({vcpus} CPU, {memory_gb:g} GB"
                f"{f', {gpus} GPU' if gpus else ''}); its largest has {biggest.get('CPU', 0):g} CPU, "
                f"{biggest.get('memory', 0) / GB:.1f} GB, {biggest.get('GPU', 0):g} GPU")

    def launch(self, requests: list[NodeRequest]) -> None:
        start = []
        with self._lock:
            for request in requests:
                if request.node_id in self._pending or request.node_id in self._info:
                    continue  # launch is idempotent
                self._pending[request.node_id] = request
                self._queue.setdefault(request.compute, []).append(request)
                if request.compute not in self._placers:
                    self._placers.add(request.compute)
                    start.append(request.compute)
        for compute in start:
            threading.Thread(target=self._place_all, args=(compute,), name=f"ray-place-{compute}", daemon=True).start()

    def terminate(self, node_ids: list[str]) -> None:
        with self._lock:
            self._stopping.update(node_ids)
        for node_id in node_ids:
            threading.Thread(target=self._stop, args=(node_id, False), name=f"ray-stop-{node_id}", daemon=True).start()

    def preempt(self, node_id: str) -> None:
        with self._lock:
            self._stopping.add(node_id)
            self._preempted.add(node_id)
        threading.Thread(target=self._stop, args=(node_id, True), name=f"ray-evict-{node_id}", daemon=True).start()

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        with self._lock:
            if not self._seen_once:
                return None  # not seen yet is not gone
            nodes = {node_id: ProviderNode(node_id) for node_id in self._pending}
            for node_id, info in self._info.items():
                if node_id in self._preempted:
                    continue
                if info.get("exit_code") is None:
                    nodes[node_id] = ProviderNode(node_id, address=info.get("ip"))
                elif info.get("stopped_itself"):
                    nodes[node_id] = ProviderNode(node_id, alive=False, stopped_itself=info["stopped_itself"])
            for node_id in self._preempted:
                nodes[node_id] = ProviderNode(node_id, alive=False, preempted=True)
            return nodes

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    # -- connecting and watching ----------------------------------------------------------------
    def _connect(self) -> None:
        # Say the auth mode outright (a local `~/.ray/auth_token` would otherwise turn token auth on),
        # before Ray is imported: it reads them once.
        os.environ["RAY_AUTH_MODE"] = "token" if self.ray_token else "disabled"
        if self.ray_token:
            os.environ["RAY_AUTH_TOKEN"] = self.ray_token
        import ray

        ray.init(address=self.address, namespace=self.namespace, log_to_driver=False,
                 logging_level=logging.WARNING, ignore_reinit_error=True)
        self._connected.set()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._closed.is_set():
            try:
                if not self._connected.is_set():
                    self._connect()
                self._refresh()
                backoff = 1.0
                self._closed.wait(REFRESH_S)
            except Exception as exc:  # Ray unreachable or gone: say so, and try again
                with self._lock:
                    self._error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                log.warning("Ray at %s: %s", self.address, self._error)
                self._closed.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _refresh(self) -> None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        names = [n for n in ray.util.list_named_actors() if n.startswith("tvmps_")]
        ray_nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        refs = {}
        for name in names:
            try:
                if name not in self._handles:
                    self._handles[name] = ray.get_actor(name)
                refs[name] = self._handles[name].info.remote()
            except ValueError:  # went between the listing and the lookup
                continue
        for name in set(self._handles) - set(names):
            del self._handles[name]
        if refs:
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=PING_TIMEOUT_S)
        infos: dict[str, dict[str, Any]] = {}
        dead: dict[str, str] = {}
        for name, ref in refs.items():
            try:
                infos[name] = ray.get(ref, timeout=0)
            except RayActorError as exc:
                dead[name] = str(exc).splitlines()[0][:300]
            except GetTimeoutError:  # busy or unreachable for now: keep what it said before
                if name in self._info:
                    infos[name] = self._info[name]
        gone_quietly = []
        with self._lock:
            self._error = None
            self._ray_nodes = ray_nodes
            for node_id in set(self._info) - set(infos):
                if node_id not in self._stopping:
                    why = dead.get(node_id, "its Ray actor is gone")
                    self._errors[node_id] = f"its Ray node or actor was lost: {why}"
            for node_id, why in dead.items():
                if self._pending.pop(node_id, None) is not None and node_id not in self._stopping:
                    self._errors[node_id] = f"its Ray actor died before it was ready: {why}"
            for node_id, info in infos.items():
                self._pending.pop(node_id, None)
                self._placed.pop(node_id, None)
                code = info.get("exit_code")
                if code is not None and not info.get("stopped_itself") and node_id not in self._stopping:
                    self._errors[node_id] = f"its agent exited with code {code}: {info.get('log_tail')}"
                    gone_quietly.append(node_id)
            self._info = infos
            self._seen_once = True
        for node_id in gone_quietly:  # free its resources on Ray
            self.terminate([node_id])

    # -- placing and stopping ------------------------------------------------------------------
    def _place_all(self, compute: str) -> None:
        """Place a compute's new nodes one at a time, each on a Ray machine that holds none of the
        compute's other nodes (a node is a machine, as an Azure node is a VM): when Ray has no such
        machine, the ones after it could not be placed either, and none holds back another."""
        while True:
            with self._lock:
                queue = self._queue.get(compute) or []
                if not queue:
                    self._queue.pop(compute, None)
                    self._placers.discard(compute)
                    return
                request = queue.pop(0)
            try:
                self._place(compute, request)
            except Exception as exc:
                with self._lock:
                    if self._pending.pop(request.node_id, None) is not None:
                        self._errors[request.node_id] = f"Ray could not place it: {exc}"
                self.on_node_gone()

    def _place(self, compute: str, request: NodeRequest) -> None:
        """Reserve the node's resources in a placement group (a pending one is demand Ray's
        autoscaler sees), then start its actor pinned to the machine found and drop the group."""
        import ray
        from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        while not self._connected.wait(1.0):
            if self._closed.is_set() or request.node_id in self._stopping:
                return self._drop(request)
        exclude = self._machines_of(compute)
        group = placement_group([bundle_for(request)], bundle_label_selector=spread_selector(exclude, 1))
        try:
            while not ray.wait([group.ready()], timeout=1.0)[0]:
                if self._closed.is_set() or request.node_id in self._stopping:
                    return self._drop(request)
                with self._lock:
                    self._unplaced[compute] = _no_room(request, exclude, self.autoscaling)
                if self._machines_of(compute) != exclude:  # a node of the compute left: its machine may do
                    remove_placement_group(group)
                    exclude = self._machines_of(compute)
                    group = placement_group([bundle_for(request)], bundle_label_selector=spread_selector(exclude, 1))
            machine = placement_group_table(group)["bundles_to_node_id"][0]
        finally:
            with self._lock:
                self._unplaced.pop(compute, None)
            remove_placement_group(group)
        if request.node_id in self._stopping:
            return self._drop(request)
        ray.remote(CibleNode).options(
            name=request.node_id, lifetime="detached", max_restarts=0,
            num_cpus=request.vcpus, memory=int(request.memory_gb * GB), num_gpus=request.gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(machine, soft=False),
        ).remote(request.node_id, compute, request.agent_args(self.home, self.url),
                 str(under(self.nodes_root, request.node_id, field="node_id")), self.node_token(request.node_id))
        with self._lock:
            self._placed[request.node_id] = (compute, machine)

    def _machines_of(self, compute: str) -> set[str]:
        """The Ray machines holding the compute's nodes (placed or answering)."""
        with self._lock:
            machines = {i["ray_node_id"] for i in self._info.values() if i.get("compute") == compute}
            return machines | {machine for c, machine in self._placed.values() if c == compute}

    def _drop(self, request: NodeRequest) -> None:
        with self._lock:
            self._pending.pop(request.node_id, None)
        self.on_node_gone()

    def _stop(self, node_id: str, evict: bool) -> None:
        """Stop the node's agent (at once when evicted), then its actor, then its working root."""
        import ray

        try:
            if self._connected.wait(60.0):
                try:
                    actor = ray.get_actor(node_id)
                except ValueError:
                    actor = None  # never placed, or already gone
                if actor is not None:
                    try:
                        ray.get(actor.kill.remote() if evict else actor.stop.remote(), timeout=STOP_GRACE_S + 10)
                    except Exception:  # its Ray node is gone or it does not answer: Ray ends it below
                        pass
                    ray.kill(actor, no_restart=True)
        except Exception as exc:
            log.warning("stopping node %s on Ray: %s", node_id, exc)
        shutil.rmtree(under(self.nodes_root, node_id, field="node_id"), ignore_errors=True)
        with self._lock:
            self._pending.pop(node_id, None)
            self._placed.pop(node_id, None)
            self._info.pop(node_id, None)
            if not evict:
                self._preempted.discard(node_id)
        self.on_node_gone()


def _no_room(request: NodeRequest, exclude: set[str], autoscaling: bool) -> str:
    """Why a node waits on Ray: the shape it cannot find room for, and what would help."""
    shape = f"{request.vcpus} CPU, {request.memory_gb:g} GB{f', {request.gpus} GPU' if request.gpus else ''}"
    where = "a Ray machine" + (f" other than the {len(exclude)} already holding its nodes" if exclude else "")
    then = "Ray's autoscaler adds machines for it" if autoscaling else "it starts once Ray has room"
    return f"Ray has no room yet for a node of {shape} on {where}; {then}"
