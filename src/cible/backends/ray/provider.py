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

Each node is one record (`nodes.RayNode`) whose state follows the table of
`core/lifecycle/ray_nodes.py` (queued, placing, starting, running, exited, stopping, preempted,
gone): `_move` is the one place it changes, checking the move and appending it, with its reason
and time, to the node's history (logged; `history(node_id)` reads it).

The workspace's files are where the agents find job code and inputs, as with `local`, when the
Ray machines see the workspace folder (one machine, or a shared filesystem); with
CIBLE_RAY_SHARED_WORKSPACE=0 they need not: their runs' files travel over the agents' HTTP, as an
attached machine's do (cible.agent.localize).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.backends.base.contract import (
    CLOSE, ON_NODE_GONE, POLL_ERRORS, PREEMPT, PREPARE, NodeRequest, ProviderBase, ProviderNode, ProviderStatus,
)
from cible.backends.ray.actor import STOP_GRACE_S, CibleNode
from cible.backends.ray.nodes import RayNode
from cible.backends.ray.shapes import GB, no_room, bundle_for, largest_fit, namespace_for, spread_selector
from cible.core.clock import SYSTEM_CLOCK, Clock
from cible.core.lifecycle.ray_nodes import LEAVING, RayNodeState, StateChange, check_transition
from cible.core.safepaths import under

log = logging.getLogger("cible.provider.ray")
REFRESH_S = 0.5
PING_TIMEOUT_S = 2.0
GONE_KEPT = 1000  # gone nodes whose records (and histories) are kept
R = RayNodeState


class RayNodeProvider(ProviderBase):
    name = "ray"
    capabilities = frozenset({PREPARE, CLOSE, PREEMPT, POLL_ERRORS, ON_NODE_GONE})

    def __init__(self, address: str, *, nodes_root: Path, home: Path, url: str | None,
                 node_token: Callable[[str], str],
                 ray_token: str | None = None, autoscaling: bool = False, clock: Clock = SYSTEM_CLOCK) -> None:
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
        self.clock = clock  # the time of each move in a node's history
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._error: str | None = "not connected yet"
        self._seen_once = False
        self._ray_nodes: list[dict[str, float]] = []  # the alive Ray nodes' total resources
        self._thread: threading.Thread | None = None
        self._nodes: dict[str, RayNode] = {}  # node id → its record (state, request, placement, last answer)
        self._gone: deque[str] = deque()  # gone nodes, oldest first: their records are kept a while
        self._errors: dict[str, str] = {}  # node id → why it failed, until poll_errors takes it
        self._handles: dict[str, Any] = {}  # actor name → its handle (a lookup saved per ping)
        self._queue: dict[str, list[str]] = {}  # compute → its node ids waiting to be placed, in order
        self._placers: set[str] = set()  # computes whose placing thread runs

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

    def status(self) -> ProviderStatus:
        """What `compute show` says of the Ray cluster behind a compute."""
        with self._lock:
            waiting = {}
            for node in self._nodes.values():
                if node.state is R.PLACING and node.waiting and node.compute:
                    behind = sum(1 for n in self._queue.get(node.compute, [])
                                 if (queued := self._nodes.get(n)) is not None and queued.state is R.QUEUED)
                    waiting[node.compute] = node.waiting + (f" ({behind} more of its nodes wait behind it)"
                                                            if behind else "")
            return ProviderStatus(name=self.name, available=True, address=self.address,
                                  reachable=self._error is None, error=self._error, ray_nodes=len(self._ray_nodes),
                                  autoscaling=self.autoscaling, namespace=self.namespace, waiting=waiting)

    def history(self, node_id: str) -> list[StateChange]:
        """The node's moves so far (kept a while after it is gone)."""
        with self._lock:
            node = self._nodes.get(node_id)
            return list(node.history) if node else []

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
                known = self._nodes.get(request.node_id)
                if known is not None and known.state is not R.GONE:
                    continue  # launch is idempotent
                node = self._new(request.node_id, R.QUEUED, "launched", request=request, compute=request.compute)
                if known is not None:
                    node.history[:0] = known.history  # launched again after it went: one history
                self._queue.setdefault(request.compute, []).append(request.node_id)
                if request.compute not in self._placers:
                    self._placers.add(request.compute)
                    start.append(request.compute)
        for compute in start:
            threading.Thread(target=self._place_all, args=(compute,), name=f"ray-place-{compute}", daemon=True).start()

    def terminate(self, node_ids: list[str]) -> None:
        stop = []
        with self._lock:
            for node_id in node_ids:
                node = self._nodes.get(node_id)
                if node is None:
                    node = self._new(node_id, R.STOPPING, "terminate asked of a node not seen here")
                elif node.state is R.STOPPING:
                    continue  # already on its way out: terminate is idempotent
                elif node.state not in (R.PREEMPTED, R.GONE):
                    self._move(node, R.STOPPING, "terminate asked")
                stop.append(node_id)  # a preempted or gone node: its actor and root are cleaned up again
        for node_id in stop:
            threading.Thread(target=self._stop, args=(node_id, False), name=f"ray-stop-{node_id}", daemon=True).start()

    def preempt(self, node_id: str) -> None:
        with self._lock:
            node = self._nodes.get(node_id)
            if node is None or node.state in (R.PREEMPTED, R.GONE):
                return
            self._move(node, R.PREEMPTED, "preempted (evicted at once)")
        threading.Thread(target=self._stop, args=(node_id, True), name=f"ray-evict-{node_id}", daemon=True).start()

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        with self._lock:
            if not self._seen_once:
                return None  # not seen yet is not gone
            return {node_id: listed for node_id, node in self._nodes.items() if (listed := node.listed()) is not None}

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    # -- the one way a node's state changes (callers hold the lock) ----------------------------------
    def _new(self, node_id: str, state: RayNodeState, reason: str, **fields: Any) -> RayNode:
        check_transition(None, state)
        node = RayNode(node_id, state, **fields)
        node.history.append(StateChange(self.clock.now(), None, state, reason))
        log.info("ray node %s: %s (%s)", node_id, state.value, reason)
        self._nodes[node_id] = node
        return node

    def _move(self, node: RayNode, target: RayNodeState, reason: str) -> None:
        check_transition(node.state, target)
        node.history.append(StateChange(self.clock.now(), node.state, target, reason))
        log.info("ray node %s: %s -> %s (%s)", node.node_id, node.state.value, target.value, reason)
        node.state = target
        if target is R.GONE:
            node.waiting = None
            self._gone.append(node.node_id)
            while len(self._gone) > GONE_KEPT:  # forget the oldest gone nodes
                old = self._gone.popleft()
                if old in self._nodes and self._nodes[old].state is R.GONE:
                    del self._nodes[old]

    def _end(self, node: RayNode, reason: str, error: str | None = None) -> None:
        """Gone (once), with the error the reconciler is told, if any."""
        if node.state is R.GONE:
            return
        self._move(node, R.GONE, error or reason)
        if error:
            self._errors[node.node_id] = error

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
        with self._lock:
            before = {node_id: node.info for node_id, node in self._nodes.items() if node.info is not None}
        infos: dict[str, dict[str, Any]] = {}
        dead: dict[str, str] = {}
        for name, ref in refs.items():
            try:
                infos[name] = ray.get(ref, timeout=0)
            except RayActorError as exc:
                dead[name] = str(exc).splitlines()[0][:300]
            except GetTimeoutError:  # busy or unreachable for now: keep what it said before
                if name in before:
                    infos[name] = before[name]
        with self._lock:
            self._error = None
            self._ray_nodes = ray_nodes
            crashed = self._observe(infos, dead)
            self._seen_once = True
        for node_id in crashed:  # free its resources on Ray
            self.terminate([node_id])

    def _observe(self, infos: dict[str, dict[str, Any]], dead: dict[str, str]) -> list[str]:
        """Apply what the node actors said (under the lock); returns the nodes whose agent crashed."""
        for node in self._nodes.values():
            if node.node_id in infos or node.state is R.GONE:
                continue
            if node.node_id not in dead and node.info is None:
                continue  # not made yet, or not listed by Ray yet
            answered, node.info, node.seen = node.info is not None, None, True
            if node.state in (R.STOPPING, R.PREEMPTED):
                continue  # ending on purpose: its actor's going is no loss
            why = dead.get(node.node_id, "its Ray actor is gone")
            if answered:
                self._end(node, "lost", error=f"its Ray node or actor was lost: {why}")
            else:
                self._end(node, "died", error=f"its Ray actor died before it was ready: {why}")
        crashed = []
        for node_id, info in infos.items():
            node = self._nodes.get(node_id)
            if node is None:
                state = R.RUNNING if info.get("exit_code") is None else R.EXITED
                node = self._new(node_id, state, "its actor was found on Ray", compute=info.get("compute"))
            elif node.state is R.GONE:
                continue  # an answer from before it was stopped
            node.info, node.seen = info, True
            node.compute = node.compute or info.get("compute")
            ended = info.get("exit_code") is not None
            if node.state in (R.QUEUED, R.PLACING, R.STARTING):
                self._move(node, R.EXITED if ended else R.RUNNING, f"its actor answers on {info.get('ip')}")
            elif node.state is R.RUNNING and ended:
                self._move(node, R.EXITED, info.get("stopped_itself") or f"its agent exited with code "
                                                                            f"{info.get('exit_code')}")
            else:
                continue
            if node.state is R.EXITED and node.crashed():
                self._errors[node_id] = f"its agent exited with code {info.get('exit_code')}: {info.get('log_tail')}"
                crashed.append(node_id)
        return crashed

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
                node = self._nodes.get(queue.pop(0))
                if node is None or node.state is not R.QUEUED:
                    continue  # stopped, evicted or found answering before its turn
                self._move(node, R.PLACING, "its turn to be placed")
            try:
                self._place(compute, node)
            except Exception as exc:
                with self._lock:
                    if node.state is R.PLACING:
                        self._end(node, "not placed", error=f"Ray could not place it: {exc}")
                    elif node.state is R.STOPPING:
                        self._end(node, "stopped before it was placed")
                self.on_node_gone()

    def _place(self, compute: str, node: RayNode) -> None:
        """Reserve the node's resources in a placement group (a pending one is demand Ray's
        autoscaler sees), then start its actor pinned to the machine found and drop the group."""
        import ray
        from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        request = node.request
        assert request is not None  # a queued node was launched
        while not self._connected.wait(1.0):
            if self._closed.is_set() or node.state in LEAVING:
                return self._drop(node)
        exclude = self._machines_of(compute)
        group = placement_group([bundle_for(request)], bundle_label_selector=spread_selector(exclude, 1))
        try:
            while not ray.wait([group.ready()], timeout=1.0)[0]:
                if self._closed.is_set() or node.state in LEAVING:
                    return self._drop(node)
                with self._lock:
                    node.waiting = no_room(request, exclude, self.autoscaling)
                if self._machines_of(compute) != exclude:  # a node of the compute left: its machine may do
                    remove_placement_group(group)
                    exclude = self._machines_of(compute)
                    group = placement_group([bundle_for(request)], bundle_label_selector=spread_selector(exclude, 1))
            machine = placement_group_table(group)["bundles_to_node_id"][0]
        finally:
            with self._lock:
                node.waiting = None
            remove_placement_group(group)
        if node.state in LEAVING:
            return self._drop(node)
        ray.remote(CibleNode).options(
            name=request.node_id, lifetime="detached", max_restarts=0,
            num_cpus=request.vcpus, memory=int(request.memory_gb * GB), num_gpus=request.gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(machine, soft=False),
        ).remote(request.node_id, compute, request.agent_args(self.home, self.url),
                 str(under(self.nodes_root, request.node_id, field="node_id")), self.node_token(request.node_id))
        with self._lock:
            node.machine = machine
            if node.state is R.PLACING:
                self._move(node, R.STARTING, f"its actor was made on Ray machine {machine}")
                return
            evict = node.state is R.PREEMPTED
        # Stopped or evicted while its actor was being made: a stop that ran before may have missed it.
        threading.Thread(target=self._stop, args=(node.node_id, evict), name=f"ray-stop-{node.node_id}",
                         daemon=True).start()

    def _machines_of(self, compute: str) -> set[str]:
        """The Ray machines holding the compute's nodes (placed or answering)."""
        with self._lock:
            return {machine for node in self._nodes.values()
                    if node.compute == compute and (machine := node.holds_machine()) is not None}

    def _drop(self, node: RayNode) -> None:
        """A node not placed after all: the provider closed, or it was stopped or evicted first."""
        with self._lock:
            if node.state in (R.QUEUED, R.PLACING):
                self._end(node, "the provider closed before it was placed")
            elif node.state is R.STOPPING:
                self._end(node, "stopped before it was placed")
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
        self._stopped(node_id, evict)

    def _stopped(self, node_id: str, evict: bool) -> None:
        """Its agent, actor and working root are gone: an evicted node stays listed as preempted."""
        with self._lock:
            node = self._nodes.get(node_id)
            if node is not None and evict:  # evicted: listed as preempted until terminated
                node.info, node.machine, node.seen = None, None, True
            elif node is not None:
                self._end(node, "stopped: its agent, actor and working root are gone")
        self.on_node_gone()
