"""A cluster job's run as the server keeps it: the node plans it hands out, the agents'
reports (files under the job's run dir, so they survive a restart), and the runner
that turns those reports into the job's status.

The handle of a job placed on a cluster (written by the cluster reconciler) is a
`ClusterHandle` (cible.core.models.records): its compute, attempt, nodes by node rank,
their addresses and the rendezvous port; the runner below takes it as plain JSON, as
every JobRunner does. Each attempt reports into files of its own, so a late report of
an attempt that was requeued can never move the new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cible.core.errors import CibleError
from cible.core.lifecycle.jobs import TERMINAL
from cible.core.lifecycle.runs import RunObservation
from cible.core.models.records import ClusterHandle, SlurmHandle
from cible.core.safepaths import under
from cible.launch.tracking import with_run_token
from cible.runfiles import ARTIFACT_DIRS, write_json_atomic
from cible.server.services.node_files import ChunkError, resume_dir, write_chunk  # noqa: F401 (the agents' files)
from cible.workspace import WorkspacePaths

TRANSFER_HTTP = "http"  # a node plan's `transfer`: its files go through the agent routes (routers/agents.py)


def node_plan(plan: dict[str, Any], handle: ClusterHandle | SlurmHandle, node_rank: int, paths: WorkspacePaths,
              run_token: str, shares_workspace: bool = True) -> dict[str, Any]:
    """The launcher plan for one node of a job: the job's plan, its run token, and where this node stands.

    Its paths are the server's (blob root, datastore paths, the resume folder). A node whose provider
    does not share the workspace (SHARES_WORKSPACE) gets `"transfer": "http"`: its agent rewrites them
    to folders of its own (cible.agent.localize) and moves the files over HTTP."""
    node = {
        **with_run_token(plan, run_token),
        "node_rank": node_rank,
        # A Slurm job's pilots learn the addresses from Slurm (cible.agent.pilot).
        "node_addrs": list(getattr(handle, "node_addrs", [])),
        "master_port": handle.master_port,
        "attempt": handle.attempt,
        # Survives a requeue: a preempted job resumes from what it saved here.
        "resume_dir": str(resume_dir(paths, plan["job_name"])),
    }
    if not shares_workspace:
        node["transfer"] = TRANSFER_HTTP
    return node


def report_path(paths: WorkspacePaths, job_name: str, attempt: int, node_rank: int) -> Path:
    return under(paths.run_dir(job_name), "reports", f"attempt-{attempt}-node-{node_rank}.json")


def save_report(paths: WorkspacePaths, job_name: str, report: dict[str, Any]) -> None:
    path = report_path(paths, job_name, report["attempt"], report["node_rank"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report)


def artifact_path(paths: WorkspacePaths, job_name: str, rel: str) -> Path | None:
    """Where a shipped artifact file goes, or None when `rel` is not a plain artifact path: a file
    under one of ARTIFACT_DIRS, written as its parts (no empty or `.` part, no backslash)."""
    artifacts = paths.run_dir(job_name) / "artifacts"
    try:  # `..`, absolute paths, NUL bytes, over-long parts, and links a job left among its artifacts
        path = under(artifacts, rel, field="path")
    except CibleError:
        return None
    parts = path.relative_to(artifacts).parts
    if "\\" in rel or "/".join(parts) != rel or len(parts) < 2 or parts[0] not in ARTIFACT_DIRS:
        return None
    return path


def merge_reports(reports: list[dict[str, Any] | None]) -> RunObservation:
    """One observation for a job from its nodes' reports (index = node rank; None: not yet).

    The job follows node rank 0's progress; it fails as soon as any node fails (the
    other nodes are then told to drop it), completes only when every node completed,
    and is canceled when every node ended and one was canceled.
    """
    if not reports:  # no node: nothing reported
        return RunObservation()
    known = [r for r in reports if r is not None]
    for rank, report in enumerate(reports):
        if report and report["history"][-1:] == ["Failed"]:
            error = dict(report.get("error") or {"code": "Failed", "message": "the job failed"})
            if len(reports) > 1:
                error["message"] = f"node rank {rank}: {error.get('message', '')}"
            history = [*_progress(reports[0] or report), "Failed"]
            return RunObservation(history=history, error=error, exit_code=report.get("exit_code"))
    progress = _progress(reports[0]) if reports and reports[0] else []
    if len(known) == len(reports) and all(r["history"][-1:] and r["history"][-1] in TERMINAL for r in known):
        ends = {r["history"][-1] for r in known}
        final = "Completed" if ends == {"Completed"} else "Canceled"
        source = next(r for r in known if r["history"][-1] == final)
        return RunObservation(history=[*progress, final], error=source.get("error"), exit_code=source.get("exit_code"))
    return RunObservation(history=progress)


def _progress(report: dict[str, Any]) -> list[str]:
    return [s for s in report["history"] if s not in TERMINAL]


class ClusterRunner:
    """The job reconciler's view of jobs on clusters: the cluster reconciler places them
    (`places_jobs`), agents run them, and this reads what they reported."""

    name = "cluster"
    places_jobs = True

    def __init__(self, paths: WorkspacePaths, notify_nodes) -> None:  # noqa: ANN001
        self.paths = paths
        self.notify_nodes = notify_nodes  # notify_nodes(*node_ids): wake their agents' long-polls

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("jobs on a cluster are placed by the cluster reconciler, not submitted")

    def poll(self, handle: dict[str, Any]) -> RunObservation:
        return merge_reports(read_reports(self.paths, handle["job_name"], handle["attempt"], len(handle["nodes"])))

    def cancel(self, handle: dict[str, Any]) -> None:
        self.notify_nodes(*handle["nodes"])  # their next heartbeat reply carries the cancel

    def log_path(self, handle: dict[str, Any]) -> Path | None:
        return self.paths.run_dir(handle["job_name"]) / "artifacts" / "user_logs" / "std_log.txt"


def read_reports(paths: WorkspacePaths, job_name: str, attempt: int, nodes: int) -> list[dict[str, Any] | None]:
    """Each node rank's last report of the attempt (None: none yet)."""
    return [_read(report_path(paths, job_name, attempt, rank)) for rank in range(nodes)]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
