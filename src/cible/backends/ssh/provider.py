"""The `ssh` node provider: each node is a `cible agent` on an attached machine, started over SSH.

A node is a machine, so an attached host carries one node at a time. Its agent runs from the
bundle (`bundle.py`: the node side's code, stdlib only) in the one folder cible owns on the host
(`<agent_dir>/nodes/<node_id>/`, `agent_dir` ~/.cible-agent), pulls its work from the server like
any node (through a port forwarded back over SSH when the host cannot reach the server), and
outlives the SSH session and the server.

What this side keeps is `<nodes_root>/<node_id>/host.json` (which host holds the node), written
before the remote start, so a restarted server finds its nodes and frees their hosts. A host that
stops answering is said in `poll_errors`; its node's fate stays with the heartbeat timeout (the one
way a node is lost), which marks it unusable and requeues its job.

All SSH work runs on one asyncio loop in a thread of its own; the contract's calls return at once
(launch and terminate in the background) or read what the loop last saw (list_nodes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cible.backends.base.contract import (
    CLOSE, ON_NODE_GONE, POLL_ERRORS, PREEMPT, PREPARE, NodeRequest, ProviderBase, ProviderNode, ProviderStatus,
)
from cible.backends.ssh.bundle import Bundle, build_bundle
from cible.backends.ssh.connect import RemoteHostError
from cible.backends.ssh.hosts import AttachedHost, HostSession, ServerTool, quote_path, server_uv
from cible.core.safepaths import under
from cible.runfiles import write_json_atomic

log = logging.getLogger(__name__)
HOST_FILE = "host.json"
POLL_S = 1.0
STOP_TIMEOUT_S = 30.0  # stopping an agent (TERM, 10 s, KILL) that takes longer failed: tried again next pass


class SshNodeProvider(ProviderBase):
    name = "ssh"
    capabilities = frozenset({PREPARE, CLOSE, PREEMPT, POLL_ERRORS, ON_NODE_GONE})

    def __init__(self, nodes_root: Path, url: str | None, node_token: Callable[[str], str],
                 attached: Callable[[], Mapping[str, AttachedHost]], hosts_of: Callable[[str], tuple[str, ...]],
                 bundle_cache: Path) -> None:
        self.nodes_root = nodes_root
        self.url = url
        self.node_token = node_token
        self.attached = attached  # the attached machines, read from the store at each use
        self.hosts_of = hosts_of  # compute -> the attached machines its nodes may use
        self.bundle_cache = bundle_cache
        self._bundle: Bundle | None = None
        self._uv: ServerTool | None | bool = False  # False: not looked for yet
        self._sessions: dict[str, HostSession] = {}
        self._seen: dict[str, dict[str, Any]] = {}  # node id -> what its host last said of its agent
        self._asked: set[str] = set()  # hosts asked at least once since this server started
        self._unreachable: dict[str, str] = {}  # host -> why it does not answer
        self._errors: dict[str, str] = {}
        self._starting: set[str] = set()
        self._started_at: dict[str, float] = {}  # node id -> when its start ended (an older answer is stale)
        self._to_stop: dict[str, bool] = {}  # node id -> kill: stops that failed (host down), tried each pass
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- the loop ---------------------------------------------------------------------------
    def prepare(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="ssh-provider", daemon=True)
            self._thread.start()
        self._submit(self._watch())

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_sessions(), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 (the server stops whatever happens here; nodes go on running)
            log.warning("the ssh provider's connections did not close cleanly", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        with self._lock:
            self._loop = self._thread = None

    def _submit(self, coro) -> None:  # noqa: ANN001
        if self._loop is None:
            self.prepare()
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _close_sessions(self) -> None:
        for task in asyncio.all_tasks():  # the watch loop, and starts or stops in flight
            if task is not asyncio.current_task():
                task.cancel()
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    # -- the contract -------------------------------------------------------------------------
    def status(self) -> ProviderStatus:
        hosts = self.attached()
        if not hosts:
            return ProviderStatus(name=self.name, available=True, reachable=True, error=None,
                                  hint="no machine is attached yet: cible compute attach --type virtualmachine …")
        down = {name: why for name, why in dict(self._unreachable).items() if name in hosts}
        error = "; ".join(f"{name}: {why}" for name, why in sorted(down.items())) or None
        return ProviderStatus(name=self.name, available=True, reachable=not down, error=error,
                              address=f"{len(hosts) - len(down)} of {len(hosts)} attached machines answer")

    def cannot_hold(self, size: str, vcpus: int, memory_gb: float, gpus: int, overcommit: bool) -> str | None:
        """A node of this size needs a machine with its memory and GPUs (vCPUs are shared, as on
        `local`); asked against every attached machine, since a cluster's hosts are named later."""
        hosts = list(self.attached().values())
        if not hosts:
            return "no machine is attached (cible compute attach --type virtualmachine …)"
        if overcommit or any(_fits(h, memory_gb, gpus) for h in hosts):
            return None
        return (f"no attached machine holds {size} ({memory_gb:g} GB, {gpus} GPU): "
                + ", ".join(f"{h.name} has {h.facts.get('memory_gb', '?')} GB, {h.facts.get('gpus', 0)} GPU"
                            for h in hosts))

    def launch(self, requests: list[NodeRequest]) -> None:
        for request in requests:
            root = under(self.nodes_root, request.node_id, field="node_id")
            if (root / HOST_FILE).exists():
                continue  # already started (or starting): launch is idempotent
            host = self._free_host(request)
            if host is None:
                continue
            root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(root / HOST_FILE, {"host": host.name, "remote_root": host.remote_root(request.node_id)})
            self._starting.add(request.node_id)
            self._submit(self._start(request, host, root))

    def terminate(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            self._submit(self._stop(node_id, kill=False))

    def preempt(self, node_id: str) -> None:
        self._submit(self._stop(node_id, kill=True))

    def list_nodes(self) -> dict[str, ProviderNode] | None:
        records = self._records()
        if self._loop is None:
            self.prepare()
        if any(host not in self._asked for node_id, (host, _) in records.items() if node_id not in self._starting):
            return None  # a host not asked yet since the server started: cannot tell
        hosts = self.attached()
        nodes = {}
        for node_id, (host_name, _) in records.items():
            # Starting, or its host not answering: taken as alive (the heartbeat timeout decides).
            seen = self._seen.get(node_id) or {"alive": True, "preempted": False}
            if not (seen["alive"] or seen["preempted"] or seen.get("stopped_itself")):
                continue  # its agent is gone: the reconciler sees it lost
            host = hosts.get(host_name)
            starting = node_id in self._starting  # on its way: no address until its agent runs
            address = (host.address or host.target.host) if host and not starting else None
            nodes[node_id] = ProviderNode(node_id, alive=seen["alive"], preempted=seen["preempted"], address=address,
                                          stopped_itself=seen.get("stopped_itself"))
        return nodes

    def poll_errors(self) -> dict[str, str]:
        with self._lock:
            errors, self._errors = self._errors, {}
        return errors

    # -- helpers ------------------------------------------------------------------------------
    def _records(self) -> dict[str, tuple[str, str]]:
        """node id -> (host, remote root) of every node this side started and has not removed."""
        out = {}
        if self.nodes_root.is_dir():
            for root in self.nodes_root.iterdir():
                try:
                    record = json.loads((root / HOST_FILE).read_text())
                    out[root.name] = (record["host"], record["remote_root"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return out

    def _free_host(self, request: NodeRequest) -> AttachedHost | None:
        hosts = self.attached()
        allowed = [n for n in self.hosts_of(request.compute) if n in hosts]
        busy = {host: node for node, (host, _) in self._records().items()}
        # Machines that answered last first; one that did not is still tried (its start says why it fails).
        free = sorted((n for n in allowed if n not in busy), key=lambda n: n in self._unreachable)
        if free:
            return hosts[free[0]]
        why = ", ".join(f"{n} (runs node {busy[n]})" for n in allowed) or "none attached"
        self._error(request.node_id, f"no free attached machine for compute {request.compute}: {why}")
        return None

    def _error(self, node_id: str, why: str) -> None:
        log.warning("ssh node %s: %s", node_id, why)
        with self._lock:
            self._errors[node_id] = why

    def _session(self, host: AttachedHost) -> HostSession:
        session = self._sessions.get(host.name)
        if session is None or session.host != host:  # a new pinned key or address: a new connection
            if session is not None:
                session.close()
            tunnels = self.bundle_cache.parent / "ssh-tunnels"  # each machine's forwarded port, kept across restarts
            session = self._sessions[host.name] = HostSession(host, port_file=tunnels / f"{host.name}.port")
        return session

    def _uv_now(self) -> ServerTool | None:
        if self._uv is False:
            self._uv = server_uv()
        return self._uv  # type: ignore[return-value]

    def _bundle_now(self) -> Bundle:
        if self._bundle is None:
            self._bundle = build_bundle(self.bundle_cache)
        return self._bundle

    async def _start(self, request: NodeRequest, host: AttachedHost, root: Path) -> None:
        self._starting.add(request.node_id)
        try:
            await self._start_agent(request, host, root)
        finally:
            self._starting.discard(request.node_id)

    async def _start_agent(self, request: NodeRequest, host: AttachedHost, root: Path) -> None:
        session = self._session(host)
        remote = host.remote_root(request.node_id)
        try:
            async with session.lock:
                bundle_dir = await session.ensure_bundle(self._bundle_now())
                tools = await session.ensure_uv(self._uv_now())
                url_file = f"{remote}/server_url"
                # Everything cible writes there is the login user's alone: other users of the machine
                # see neither the job's files nor the agent's.
                await session.check(f"umask 077; mkdir -p {quote_path(remote)}", what="making the node's folder")
                await session.tell([remote], self.url or "")
                args = ["--root", remote, "--url-file", url_file, "--advertise-address", host.address or host.target.host,
                        *request.agent_args(None, None)]
                path = f'PATH={quote_path(tools)}:"$PATH" ' if tools else ""  # its jobs' environments are built with uv
                command = (f"umask 077; cd {quote_path(bundle_dir)} && {path}exec {shlex.quote(host.python)} -m cible.agent.detach "
                           + " ".join(_quote_arg(a) for a in args))
                await session.check(command, stdin=self.node_token(request.node_id) + "\n", what="starting the agent")
            self._seen[request.node_id] = {"known": True, "alive": True, "preempted": False}
            self._started_at[request.node_id] = time.monotonic()
            self._unreachable.pop(host.name, None)
        except RemoteHostError as exc:
            self._error(request.node_id, f"could not start the node's agent on {host.name}: {exc.message}")
            shutil.rmtree(root, ignore_errors=True)  # frees the host; the reconciler backs off and retries
            self.on_node_gone()
        except Exception as exc:  # noqa: BLE001 (one node's failure never stops the provider's loop)
            log.exception("ssh node %s: start failed", request.node_id)
            self._error(request.node_id, f"could not start the node's agent on {host.name}: {exc}")
            shutil.rmtree(root, ignore_errors=True)
            self.on_node_gone()

    async def _stop(self, node_id: str, kill: bool) -> None:
        record = self._records().get(node_id)
        if record is None:
            self._to_stop.pop(node_id, None)
            return
        host_name, remote = record
        host = (await asyncio.to_thread(self.attached)).get(host_name)  # a store read: off the SSH loop
        root = under(self.nodes_root, node_id, field="node_id")
        if host is None:  # detached meanwhile: nothing left to reach
            shutil.rmtree(root, ignore_errors=True)
            self.on_node_gone()
            return
        session = self._session(host)
        try:
            async with session.lock:  # after a start in flight: the agent it starts is the one stopped
                bundle_dir = await session.ensure_bundle(self._bundle_now())
                verb = f"stop {_quote_arg(remote)}" + (" --kill" if kill else "")
                await session.check(f"cd {quote_path(bundle_dir)} && exec {shlex.quote(host.python)} -m "
                                    f"cible.agent.remote {verb}", what="stopping the agent", timeout=STOP_TIMEOUT_S)
        except RemoteHostError as exc:
            # Kept and tried again each pass: until then the machine stays taken by this node.
            if node_id not in self._to_stop:
                log.warning("ssh node %s: could not stop its agent on %s (tried again): %s", node_id, host_name,
                            exc.message)
            self._to_stop[node_id] = kill
            return
        self._to_stop.pop(node_id, None)
        if kill:
            self._seen[node_id] = {**self._seen.get(node_id, {}), "alive": False, "preempted": True}
        else:
            self._seen.pop(node_id, None)
            self._started_at.pop(node_id, None)
            shutil.rmtree(root, ignore_errors=True)
        self.on_node_gone()

    async def _watch(self) -> None:
        """Ask each host with nodes what its agents do, every POLL_S, all hosts at once."""
        while True:
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass (the store busy, a record unreadable) never ends the watch
                log.exception("the ssh provider's pass failed; tried again")
            await asyncio.sleep(POLL_S)

    async def _pass(self) -> None:
        for node_id, kill in list(self._to_stop.items()):
            await self._stop(node_id, kill)
        by_host: dict[str, dict[str, str]] = {}
        for node_id, (host, remote) in self._records().items():
            by_host.setdefault(host, {})[node_id] = remote
        hosts = await asyncio.to_thread(self.attached)  # a store read: off the SSH loop
        await asyncio.gather(*(self._ask(hosts[name], nodes) for name, nodes in by_host.items() if name in hosts),
                             return_exceptions=True)
        self._asked.update(name for name in by_host if name not in hosts)  # detached: nothing to ask
        for node_id, seen in list(self._seen.items()):
            # An agent that is gone (not preempted, not stopped by itself: those wait for terminate) frees
            # its machine: its folder there and its record here are removed.
            dead = not (seen.get("alive") or seen.get("preempted") or seen.get("stopped_itself"))
            if dead and node_id not in self._starting and node_id not in self._to_stop:
                self._to_stop[node_id] = False

    async def _ask(self, host: AttachedHost, nodes: dict[str, str]) -> None:
        session = self._session(host)
        began = time.monotonic()
        try:
            bundle_dir = await session.ensure_bundle(self._bundle_now())
            roots = " ".join(_quote_arg(r) for r in nodes.values())
            out = await session.check(f"cd {quote_path(bundle_dir)} && exec {shlex.quote(host.python)} -m "
                                      f"cible.agent.remote status {roots}", what="asking for its agents", timeout=15)
            said = json.loads(out.strip().splitlines()[-1])
            # After a reconnect (or a server restart) the tunnel is made again and the agents told.
            await session.tell([r for n, r in nodes.items() if n not in self._starting
                                and (_by_root(said, r) or {}).get("known")], self.url or "")
        except (RemoteHostError, ValueError, IndexError) as exc:
            why = exc.message if isinstance(exc, RemoteHostError) else f"an answer that is not JSON: {exc}"
            # Said in status(), not as the nodes' errors (an error removes a node at once): its nodes stay
            # as last seen, and the heartbeat timeout decides their fate, as for any node gone quiet.
            if self._unreachable.get(host.name) != why:
                log.warning("attached machine %s: %s", host.name, why)
            self._unreachable[host.name] = why
            return
        finally:
            self._asked.add(host.name)
        self._unreachable.pop(host.name, None)
        for node_id, remote in nodes.items():
            state = _by_root(said, remote)
            fresh = self._started_at.get(node_id, 0.0) < began  # asked before its start ended: stale
            if state is not None and node_id not in self._starting and fresh:
                self._seen[node_id] = state


def _by_root(said: dict[str, Any], remote: str) -> dict[str, Any] | None:
    """The host's answer for a node root (it answers with the root expanded: `~` is its home)."""
    if remote in said:
        return said[remote]
    tail = remote.removeprefix("~")
    return next((v for k, v in said.items() if k.endswith(tail)), None)


def _quote_arg(arg: str) -> str:
    return quote_path(arg) if arg.startswith("~/") else shlex.quote(arg)


def _fits(host: AttachedHost, memory_gb: float, gpus: int) -> bool:
    return float(host.facts.get("memory_gb", 0)) >= memory_gb * 0.95 and int(host.facts.get("gpus", 0)) >= gpus
