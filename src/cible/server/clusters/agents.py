"""What the server tells a node's agent, and what it takes from it.

A heartbeat carries the runs the agent has; the reply carries the runs it should
have (with the plan of each it lacks), cancels, and `stop` once the node is on its
way out. The reply is the difference between the database and the agent, so a
lost reply or a restarted server only delays, never loses, an instruction.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Update, select, type_coerce, update

from cible.core.clock import Clock
from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError, UnreadableRecordError
from cible.core.lifecycle.jobs import JobStatus, is_terminal
from cible.core.lifecycle.nodes import LIVE, NodeState
from cible.core.models.records import ClusterHandle, NodeInfo, SlurmHandle
from cible.server.clusters.hub import AgentHub
from cible.server.clusters.runs import ChunkError, artifact_path, node_plan, save_report, write_chunk
from cible.server.store.columns import read_record
from cible.server.store.db import Store
from cible.server.store.rows import ComputeRow, JobRow, NodeRow, job_is_live
from cible.server.tokens import pilot_salt
from cible.workspace import WorkspacePaths

log = logging.getLogger("cible.server")
MAX_WAIT_S = 10.0


class AgentService:
    def __init__(self, store: Store, paths: WorkspacePaths, hub: AgentHub, clock: Clock,
                 heartbeat_timeout_s: float, on_first_heartbeat: Callable[[], None],
                 on_report: Callable[[], None], run_token: Callable[[dict[str, Any]], str],
                 shares_workspace: Callable[[str], bool] = lambda provider: True,
                 pilot_next: Callable[[SlurmHandle, str, tuple[str, int] | None], dict[str, Any]] | None = None,
                 ) -> None:
        self.store = store
        # pilot_next(handle, node id, successor): the reply to a pilot whose run ended, in an
        # allocation kept for the next job: switch to the successor (the job whose recorded handle
        # took the allocation after this one), wait, or stop (SlurmRunner.next_for).
        self.pilot_next = pilot_next
        self.run_token = run_token  # a job's run token, handed to its nodes with its plan
        # shares_workspace(provider name): whether its nodes see the workspace folder; a node whose
        # provider does not gets plans whose files go over HTTP (node_plan's `transfer`).
        self.shares_workspace = shares_workspace
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
        where it is reached, when its agent says (before its first heartbeat makes it idle).

        Liveness is written by plain UPDATEs that leave the row's version alone: it is no decision
        that a reconciler reads, modifies and writes back. The cluster pass reads the heartbeat
        time (to judge a node lost) and the address (set by the first heartbeat, before the node
        can be placed), but writes the node's state, never these columns; were every heartbeat to
        bump the version, each would make the pass's write of a busy node collide (and, met by the
        pass's own writes, the heartbeat would end in a 409). So a heartbeat never collides."""
        now = self.clock.now()
        with self.store.session() as session:
            node = session.execute(
                select(NodeRow.state, NodeRow.last_heartbeat, NodeRow.address, NodeRow.version,
                       type_coerce(NodeRow.info, JSON).label("info")).where(NodeRow.node_id == node_id)).one_or_none()
            if node is None or node.state == NodeState.REMOVED.value:
                raise NotFoundError(f"node '{node_id}' is not a node of this workspace", details={"node_id": node_id})
            first = node.last_heartbeat is None
            liveness: dict[str, Any] = {"last_heartbeat": now}
            if address and node.address != address:
                liveness["address"] = address
            session.execute(_update_node(node_id).values(**liveness))
            info = self._reported_info(node_id, node.info, {**({"usage": usage} if usage else {}), **(presence or {})})
            if info is not None:
                # Guarded by the version read above: a writer of the node's info (the pass that made it,
                # a shell opened on the instance) that came in between keeps its write; this report is
                # skipped, and the next heartbeat, seconds away, sends it again. Two heartbeats of the
                # same node may overwrite each other's report (neither bumps the version): harmless, as
                # each carries the agent's whole current report (usage, sessions, disk are readings, not
                # increments), so the later one is as good as the earlier.
                session.execute(_update_node(node_id).where(NodeRow.version == node.version).values(info=info))
        if first:
            self.on_first_heartbeat()

    @staticmethod
    def _reported_info(node_id: str, stored: Any, reported: dict[str, Any]) -> NodeInfo | None:
        """The node's info with what its agent reported, validated as NodeInfo (the presence's times
        arrive as ISO text); None when nothing changed, or when the stored info cannot be read (the
        heartbeat still counts; list-nodes and the cluster pass say what is wrong with the node)."""
        if not reported:
            return None
        try:
            info = read_record(NodeInfo, stored or {}, "nodes.info")
        except UnreadableRecordError as error:
            log.debug("node %s: its report is not stored: %s", node_id, error.message)
            return None
        parsed = NodeInfo.model_validate(reported)
        merged = info.model_copy(update={key: getattr(parsed, key) for key in reported})
        return merged if merged != info else None

    def wanted(self, node_id: str, has: dict[tuple[str, int], bool]) -> dict[str, Any]:
        """The reply: the runs the node should have. `has` maps (job, attempt) → canceling."""
        with self.store.session() as session:
            node = self._node(session, node_id)
            if node.state not in {s.value for s in LIVE}:
                return {"stop": True, "runs": [], "state": node.state}
            runs = []
            if node.state == NodeState.RUNNING.value and node.job_name:
                job = session.get(JobRow, node.job_name)
                handle = job.run.handle if job else None
                if isinstance(handle, ClusterHandle) and not is_terminal(job.status) and node_id in handle.nodes:
                    rank = handle.nodes.index(node_id)
                    key = (job.name, handle.attempt)
                    runs.append({
                        "job": job.name, "attempt": handle.attempt, "node_rank": rank,
                        "cancel": job.status == JobStatus.CANCEL_REQUESTED.value,
                        "plan": None if key in has else node_plan(job.run.plan, handle, rank, self.paths,
                                                                  self.run_token(job.run.plan),
                                                                  self.shares_workspace(node.provider)),
                    })
            # Only an instance has an idle shutdown to say: a cluster's row (its spec and status) is not read.
            kind = session.scalar(select(ComputeRow.compute_type).where(ComputeRow.name == node.compute))
            instance = session.get(ComputeRow, node.compute) if kind == "computeinstance" else None
            idleness = instance.observed.instance.idleness if instance and instance.observed.instance else None
            stops_at = idleness.get("stops_at") if idleness else None  # the planner's verdict, as shown
            return {"stop": False, "runs": runs, "state": node.state, "wait_s": self.wait_s,
                    "idle_shutdown_at": stops_at}

    def check_pilot(self, node_id: str, job_name: str, salt: str) -> None:
        """A pilot token's request: NotFoundError (the pilot ends) unless its salt is the job's current
        submission and attempt, and the node one of that attempt's (or the attempt is being recorded)."""
        with self.store.session() as session:
            job = session.get(JobRow, job_name)
            run = job.run if job is not None else None
            submission = str(run.plan.get("token_salt", "")) if run is not None else ""
            handle = run.handle if run is not None else None
            if isinstance(handle, SlurmHandle):
                ok = node_id in handle.nodes and hmac.compare_digest(salt, pilot_salt(submission, handle.attempt))
            else:  # sbatch answered, its handle not yet written: the submission is still checked
                ok = job is not None and handle is None and salt.startswith(f"{submission}-")
        if not ok:
            raise NotFoundError(f"node '{node_id}' runs no attempt of job '{job_name}' with this token; it ends",
                                details={"node_id": node_id})

    def pilot_wanted(self, node_id: str, job_name: str, has: dict[tuple[str, int], bool],
                     done: frozenset[tuple[str, int]] = frozenset()) -> dict[str, Any] | None:
        """The reply to a Slurm pilot (cible.agent.pilot): its run, while the job's attempt placed
        it; `stop` once the job ended; None (404: the pilot ends) when the job no longer runs there.
        A pilot that asks before the launch is recorded (sbatch answered a moment ago) waits. One
        whose run ended (`done`) in an allocation kept for the next job is told what pilot_next says."""
        with self.store.session() as session:
            job = session.get(JobRow, job_name)
            handle = job.run.handle if job else None
            if job is not None and handle is None and not is_terminal(job.status):
                return {"stop": False, "runs": [], "state": job.status, "wait_s": 1.0}
            if not isinstance(handle, SlurmHandle) or node_id not in handle.nodes:
                return None
            ended = is_terminal(job.status) or (job.name, handle.attempt) in done
            if ended and handle.keeps_allocation and self.pilot_next is not None:
                reply = self.pilot_next(handle, node_id, _successor(session, handle))
                return {**reply, "state": job.status, "wait_s": min(reply.get("wait_s", self.wait_s), self.wait_s)}
            if is_terminal(job.status):
                return {"stop": True, "runs": [], "state": job.status}
            if ended:  # its end is not read yet: nothing to do meanwhile
                return {"stop": False, "runs": [], "state": job.status, "wait_s": self.wait_s}
            rank = handle.nodes.index(node_id)
            key = (job.name, handle.attempt)
            run = {"job": job.name, "attempt": handle.attempt, "node_rank": rank,
                   "cancel": job.status == JobStatus.CANCEL_REQUESTED.value,
                   "plan": None if key in has else node_plan(job.run.plan, handle, rank, self.paths,
                                                             self.run_token(job.run.plan), shares_workspace=False)}
            return {"stop": False, "runs": [run], "state": job.status, "wait_s": self.wait_s}

    @staticmethod
    def settled(reply: dict[str, Any], has: dict[tuple[str, int], bool]) -> bool:
        """True when the agent already does what the reply asks: nothing to say yet."""
        if reply["stop"] or reply.get("switch"):
            return False
        want = {(r["job"], r["attempt"]): r["cancel"] for r in reply["runs"]}
        return want.keys() == has.keys() and all(has[k] or not c for k, c in want.items())

    # -- reports and files --------------------------------------------------------------
    def report(self, node_id: str, job_name: str, report: dict[str, Any],
               files: list[tuple[int, str, int, str]] = ()) -> None:
        """Take a run's report; `files` (index, path, offset, base64 data), the last bytes of its artifact
        files, are written first, each as put_file writes it: the report is taken once they are all in."""
        chunks = [(self._artifact(job_name, rel, f"files[{i}].path"), rel, offset, _decoded(data, f"files[{i}].data"))
                  for i, rel, offset, data in files]
        self._check_attempt(node_id, job_name, report["attempt"], report.get("node_rank"), writing=bool(chunks))
        for path, rel, offset, data in chunks:
            _write(path, rel, offset, data)
        save_report(self.paths, job_name, report)
        self.on_report()

    def put_file(self, node_id: str, job_name: str, attempt: int, rel: str, offset: int, data: bytes) -> None:
        path = self._artifact(job_name, rel, "path")
        if offset < 0:
            raise InvalidRequestError("offset: must be 0 or more", details={"field": "offset"})
        self._check_attempt(node_id, job_name, attempt, writing=True)
        _write(path, rel, offset, data)

    def _artifact(self, job_name: str, rel: str, field: str) -> Path:
        path = artifact_path(self.paths, job_name, rel)
        if path is None:
            raise InvalidRequestError(f"{field}: '{rel}' is not an artifact path (user_logs/, system_logs/, "
                                      "outputs/ or logs/ and no '..')", details={"field": field})
        return path

    def placed_plan(self, node_id: str, job_name: str, attempt: int, *, writing: bool = False) -> dict[str, Any]:
        """The stored plan of `job_name`, when its current attempt `attempt` is placed on the node (and,
        `writing`, the job has not ended); NotFoundError or ConflictError (the agent drops the run)
        otherwise. The file routes' check."""
        return self._check_attempt(node_id, job_name, attempt, writing=writing)

    def _check_attempt(self, node_id: str, job_name: str, attempt: int,
                       node_rank: int | None = None, writing: bool = False) -> dict[str, Any]:
        """`writing`: the node sends files into the job's artifacts, outputs or resume folder. A job that
        ended takes none: its nodes send everything before their final report, so what comes after is
        from a node the job no longer has (a node token must not change a finished job's files)."""
        with self.store.session() as session:
            job = session.get(JobRow, job_name)
            if job is None:
                raise NotFoundError(f"job '{job_name}' does not exist", details={"name": job_name})
            handle = job.run.handle
            placed = isinstance(handle, (ClusterHandle, SlurmHandle))
            nodes = handle.nodes if placed else []
            if not placed or handle.attempt != attempt or node_id not in nodes:
                raise ConflictError(f"node {node_id} does not run attempt {attempt} of job '{job_name}' "
                                    "(it was requeued or ended); drop it")
            if node_rank is not None and nodes.index(node_id) != node_rank:
                raise ConflictError(f"node {node_id} is node rank {nodes.index(node_id)} of job '{job_name}', "
                                    f"not {node_rank}")
            if writing and is_terminal(job.status):
                raise ConflictError(f"job '{job_name}' has ended ({job.status}): node {node_id} may not send "
                                    "its files any more; drop it")
            return dict(job.run.plan)

    def _node(self, session, node_id: str) -> NodeRow:
        row = session.get(NodeRow, node_id)
        if row is None or row.state == NodeState.REMOVED.value:
            raise NotFoundError(f"node '{node_id}' is not a node of this workspace", details={"node_id": node_id})
        return row


def _write(path: Path, rel: str, offset: int, data: bytes) -> None:
    try:
        write_chunk(path, offset, data)
    except ChunkError as exc:
        raise ConflictError(f"{rel}: {exc}", details={"field": "path"}) from None


def _decoded(data: str, field: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{field}: not base64", details={"field": field}) from None


def _successor(session: Any, handle: SlurmHandle) -> tuple[str, int] | None:
    """(name, attempt) of the live job whose recorded handle runs in `handle`'s Slurm allocation after
    `handle`'s job (its `after_job`), if any: the store, not the server's memory, says whom the
    allocation's pilots serve next, so a restart between the take and the switch loses nothing."""
    rows = session.scalars(select(JobRow).where(JobRow.target == handle.compute, JobRow.name != handle.job_name,
                                                job_is_live()))
    for row in rows:
        try:
            taken = row.run.handle
        except UnreadableRecordError:
            continue  # one unreadable job fails alone
        if isinstance(taken, SlurmHandle) and taken.slurm_job_id == handle.slurm_job_id \
                and taken.after_job == handle.job_name:
            return row.name, taken.attempt
    return None


def _update_node(node_id: str) -> Update:
    """An UPDATE of the node's row that leaves its version as it is (see `AgentService.beat`)."""
    return update(NodeRow).where(NodeRow.node_id == node_id).execution_options(synchronize_session=False)
