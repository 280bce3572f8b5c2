"""A node plan made for a node that does not share the workspace folder with its server.

The server's plans name paths on the server's machine: the blob root of code snapshots, datastore
paths of inputs and outputs (or another job's outputs), the job's resume folder, the environment
cache, and the server's own URL for MLflow and the batch API. A node whose provider does not share
the workspace (its plan says `"transfer": "http"`, see server/clusters/runs.py:node_plan) finds none of
them. `localize` rewrites them to folders of the node's own and says what to move, and when:

    blob_root                -> <node root>/blobs            (code and snapshot inputs: blobs fetched)
    inputs.<n>.source.local_path -> <run dir>/inputs-src/<n>/<its name>   (fetched before the start)
    outputs.<n>.local_path   -> <run dir>/outputs-stage/<n>  (sent and committed after the end)
    resume_dir               -> <run dir>/checkpoint          (fetched before, sent while running and after)
    env_cache                -> <node root>/envs
    sandbox.hide             -> the folder of the host's node roots (the workspace is not there)
    tracking.uri, api_url    -> the same paths on the URL the agent reaches its server at

The launcher then runs the plan unchanged. Pure (no I/O) and standard library only: it runs on
hosts that have nothing but Python 3. cible.agent.transfer carries out the steps.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

TRANSFER_HTTP = "http"  # a node plan's `transfer` when its files go over HTTP
BEFORE = "before"  # before the launcher starts (the agent reports Preparing meanwhile)
AFTER = "after"  # after the launcher ended, before the run's final report
SNAPSHOT, DOWNLOAD, UPLOAD = "snapshot", "download", "upload"
RESUME_SYNC_S = 30.0  # how often a running job's resume folder is sent (a periodic step)
INPUTS_SOURCE = "inputs-src"
OUTPUTS_STAGE = "outputs-stage"
RESUME_FOLDER = "checkpoint"


@dataclass(frozen=True)
class Step:
    """One move of files between the server and this node.

    `route` is under the run's agent routes (/api/v1/agent/nodes/<node>/runs/<job>/…):
    - SNAPSHOT, route `blobs`: the manifest blob `snapshot` and the file blobs it names (only those
      under `subpath`, when set) into the node's blob cache `path`;
    - DOWNLOAD, route `inputs/<name>` or `resume`: `<route>/manifest`, then each of its files from
      `<route>/files/<path>`, into `path` (a folder; for an input that is one file, the file itself);
    - UPLOAD, route `outputs/<name>` or `resume`: the files under `path` sent to `<route>/files/<path>`,
      then `<route>/commit`. A `periodic` upload is also done every RESUME_SYNC_S while the job runs.
    """

    phase: str  # BEFORE or AFTER
    action: str  # SNAPSHOT, DOWNLOAD or UPLOAD
    route: str
    path: Path
    label: str  # what it moves, for messages: "code", "input 'data'", "output 'model'", "the resume folder"
    snapshot: str = ""
    subpath: str = ""
    periodic: bool = False


def run_dir_of(node_root: Path, plan: dict[str, Any]) -> Path:
    """Where the node's agent runs the plan's launcher: <root>/runs/<job>.<attempt> (cible.node.runner)."""
    return Path(node_root) / "runs" / f"{plan['job_name']}.{plan.get('attempt', 1)}"


def localize(plan: dict[str, Any], node_root: Path, run_dir: Path | None = None,
             server_url: str | None = None, cache_root: Path | None = None) -> tuple[dict[str, Any], list[Step]]:
    """The plan with the server's paths made the node's, and the steps that move their files (BEFORE
    steps in the order to do them, then AFTER steps). `run_dir` is where the launcher will run (by
    default the agent's, `run_dir_of`); `server_url`, where this node reaches its server (MLflow and
    the batch API are reached there too); `cache_root`, where the blob and environment caches are
    kept across runs (default `node_root`: a Slurm job's pilots share their user's). The plan given
    is not changed."""
    node_root = Path(node_root)
    cache_root = Path(cache_root) if cache_root is not None else node_root
    run_dir = Path(run_dir) if run_dir is not None else run_dir_of(node_root, plan)
    plan = copy.deepcopy(plan)
    before: list[Step] = []
    after: list[Step] = []

    blobs = cache_root / "blobs"
    plan["blob_root"] = str(blobs)
    code = plan.get("code") or {}
    if code.get("snapshot"):
        before.append(Step(BEFORE, SNAPSHOT, "blobs", blobs, "code", snapshot=code["snapshot"]))

    for name, spec in (plan.get("inputs") or {}).items():
        if not isinstance(spec, dict) or spec.get("kind") != "data":
            continue  # literals
        source = spec.get("source") or {}
        fetched = (spec.get("mode") or "ro_mount") != "direct"  # a direct input is handed its URI, not its files
        label = f"input '{name}'"
        if source.get("snapshot") and fetched:
            before.append(Step(BEFORE, SNAPSHOT, "blobs", blobs, label, snapshot=source["snapshot"],
                               subpath=source.get("subpath") or ""))
        elif source.get("local_path"):
            # Under a folder of the input's own, keeping the file's or folder's name: the job sees
            # `.../data.csv` for a file input, as it does on the server.
            local = run_dir / INPUTS_SOURCE / name / (PurePosixPath(source["local_path"]).name or name)
            source["local_path"] = str(local)
            if fetched:
                before.append(Step(BEFORE, DOWNLOAD, f"inputs/{name}", local, label))

    for name, spec in (plan.get("outputs") or {}).items():
        if isinstance(spec, dict) and spec.get("local_path"):
            local = run_dir / OUTPUTS_STAGE / name
            spec["local_path"] = str(local)
            after.append(Step(AFTER, UPLOAD, f"outputs/{name}", local, f"output '{name}'"))

    if plan.get("resume_dir"):
        resume = run_dir / RESUME_FOLDER
        plan["resume_dir"] = str(resume)
        before.append(Step(BEFORE, DOWNLOAD, "resume", resume, "the resume folder"))
        # One node sends it: a commit makes its files the folder's whole content, so the nodes of a
        # multi-node job would undo each other's; node rank 0 is the one that saves, as a rule.
        if plan.get("node_rank", 0) == 0:
            after.append(Step(AFTER, UPLOAD, "resume", resume, "the resume folder", periodic=True))

    if plan.get("env_cache"):
        plan["env_cache"] = str(cache_root / "envs")
    if plan.get("sandbox"):
        # What the command may not see: the workspace, where this node's user can read it (a Slurm
        # cluster used with the server machine's own commands runs jobs as the server's user, on a
        # filesystem it may share); else the folder of this host's nodes (other runs, the agent's
        # files), its own run's folders and the environments bound back.
        workspace = (plan["sandbox"] or {}).get("hide")
        shared = bool(workspace) and os.access(workspace, os.R_OK)
        plan["sandbox"] = {"hide": workspace if shared else str(node_root.parent), "readable": []}

    if server_url:
        tracking = plan.get("tracking")
        if isinstance(tracking, dict) and tracking.get("uri"):
            tracking["uri"] = _on(server_url, tracking["uri"])
        if plan.get("api_url"):
            plan["api_url"] = _on(server_url, plan["api_url"])
    return plan, before + after


def _on(server_url: str, url: str) -> str:
    """`url`'s path (and query) on `server_url`: the server's own loopback URL as this node reaches it."""
    parts = urlsplit(url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return server_url.rstrip("/") + rest
