"""What the server tells a node's agent, and what it takes from it.

A heartbeat carries the runs the agent has; the reply carries the runs it should
have (with the plan of each it lacks), cancels, and `stop` once the node is on its
way out. The reply is the difference between the database and the agent, so a
lost reply or a restarted server only delays, never loses, an instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.lifecycle.jobs import JobStatus, is_terminal
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.runs import ChunkError, artifact_path, node_plan, save_report, write_chunk
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow
from cible.workspace import WorkspacePaths

MAX_WAIT_S = 10.0


class AgentService:
    def __init__(self, store: Store, paths: WorkspacePaths, hub: AgentHub, clock: Clock,
                 heartbeat_timeout_s: float, on_first_heartbeat: Callable[[], None],
                 on_report: Callable[[], None], run_token: Callable[[dict[str, Any]], str]) -> None:
        self.store = store
        self.run_token = run_token  # a job's run token, handed to its nodes with its plan
        self.paths = paths
        self.hub = hub
        self.clock = clock
        # Long-polls return well inside the timeout, so a waiting agent never looks dead.
        self.wait_s = min(MAX_WAIT_S, heartbeat_timeout_s / 3)
        self.on_first_heartbeat = on_first_heartbeat  # wakes the cluster reconciler: a node got ready
        self.on_report = on_report  # wakes the job reconciler

    # -- heartbeat -------------------------------------------------------------------
    def beat(self, node_id: str, usage: dict[str, Any] | None, presence: dict[str, Any] | None = None,
             address: str | None = None) -> None:
        """Record that the node's agent is alive, what it uses, (an instance) what it hosts, and
        where it is reached, when its agent says (before its first heartbeat makes it idle)."""
        first = False
        with self.store.session() as session:
            row = self._node(session, node_id)
            first = row.last_heartbeat is None
            row.last_heartbeat = self.clock.now()
            if address and row.address != address:
                row.address = address
            if usage or presence:
                row.info = {**(row.info or {}), **({"usage": usage} if usage else {}), **(presence or {})}
        if first:
            self.on_first_heartbeat()

    def wanted(self, node_id: str, has: dict[tuple[str, int], bool]) -> dict[str, Any]:
        """The reply: the runs the node should have. `has` maps (job, attempt) → canceling."""
        with self.store.session() as session:
            node = self._node(session, node_id)
            if node.state not in {s.value for s in LIVE}:
                return {"stop": True, "runs": [], "state": node.state}
            runs = []
            if node.state == NodeState.RUNNING.value and node.job_name:
                job = session.get(JobRow, node.job_name)
                handle = (job.run or {}).get("handle") if job else None
                if job and handle and not is_terminal(job.status) and node_id in handle.get("nodes", []):
                    rank = handle["nodes"].index(node_id)
                    key = (job.name, handle["attempt"])
                    runs.append({
                        "job": job.name, "attempt": handle["attempt"], "node_rank": rank,
                        "cancel": job.status == JobStatus.CANCEL_REQUESTED.value,
                        "plan": None if key in has else node_plan(job.run["plan"], handle, rank, self.paths,
                                                                         self.run_token(job.run["plan"])),
                    })
            instance = session.get(ComputeRow, node.compute)
            stops_at = ((instance.status or {}).get("idleness") or {}).get("stops_at") if instance else None
            return {"stop": False, "runs": runs, "state": node.state, "wait_s": self.wait_s,
                    "idle_shutdown_at": stops_at}

    @staticmethod
    def settled(reply: dict[str, Any], has: dict[tuple[str, int], bool]) -> bool:
        """True when the agent already does what the reply asks: nothing to say yet."""
        if reply["stop"]:
            return False
        want = {(r["job"], r["attempt"]): r["cancel"] for r in reply["runs"]}
        return want.keys() == has.keys() and all(has[k] or not c for k, c in want.items())

    # -- reports and files --------------------------------------------------------------
    def report(self, node_id: str, job_name: str, report: dict[str, Any]) -> None:
        self._check_attempt(node_id, job_name, report["attempt"], report.get("node_rank"))
        save_report(self.paths, job_name, report)
        self.on_report()

    def put_file(self, node_id: str, job_name: str, attempt: int, rel: str, offset: int, data: bytes) -> None:
        path = artifact_path(self.paths, job_name, rel)
        if path is None:
            raise InvalidRequestError(f"path: '{rel}' is not an artifact path (user_logs/, system_logs/, "
                                      "outputs/ or logs/ and no '..')", details={"field": "path"})
        if offset < 0:
            raise InvalidRequestError("offset: must be 0 or more", details={"field": "offset"})
        self._check_attempt(node_id, job_name, attempt)
        try:
            write_chunk(path, offset, data)
        except ChunkError as exc:
            raise ConflictError(f"{rel}: {exc}", details={"field": "path"}) from None

    def _check_attempt(self, node_id: str, job_name: str, attempt: int, node_rank: int | None = None) -> None:
        with self.store.session() as session:
            job = session.get(JobRow, job_name)
            if job is None:
                raise NotFoundError(f"job '{job_name}' does not exist", details={"name": job_name})
            handle = (job.run or {}).get("handle") or {}
            nodes = handle.get("nodes", [])
            if handle.get("attempt") != attempt or node_id not in nodes:
                raise ConflictError(f"node {node_id} does not run attempt {attempt} of job '{job_name}' "
                                    "(it was requeued or ended); drop it")
            if node_rank is not None and nodes.index(node_id) != node_rank:
                raise ConflictError(f"node {node_id} is node rank {nodes.index(node_id)} of job '{job_name}', "
                                    f"not {node_rank}")

    def _node(self, session, node_id: str) -> NodeRow:  # noqa: ANN001
        row = session.get(NodeRow, node_id)
        if row is None or row.state == NodeState.REMOVED.value:
            raise NotFoundError(f"node '{node_id}' is not a node of this workspace", details={"node_id": node_id})
        return row
