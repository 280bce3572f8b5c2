"""What a job's run token may do in MLflow: read anything, write only into its own runs.

A run is the job's when its ``cible.job`` tag names the job. The proxy sets that tag itself on
every run a job token creates (the launcher's run, and nested runs the command starts), so a job
cannot claim another's run. A write names the run it touches (``run_id``/``run_uuid`` in its JSON
body, the run's folder in an artifact path, or a logged model made from the run); a write that
names no run of the job's own is refused, as is one that only the workspace should make
(deleting experiments, renaming registered models).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

JOB_TAG = "cible.job"
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# Writes that create something without naming a run: the job's experiment, a model's name.
CREATES = {"experiments/create", "registered-models/create"}
_API = re.compile(r"^/(?:ajax-)?api/[23]\.0/mlflow/(?P<endpoint>.+?)/?$")
_ARTIFACTS = re.compile(r"^/(?:ajax-)?api/2\.0/mlflow-artifacts/(?:artifacts|mpu/\w+)/(?P<path>.+)$")
_LOGGED_MODEL = re.compile(r"^logged-models/(?P<model>[^/]+)")
# In the artifact store: <experiment>/<run id>/artifacts/... and <experiment>/models/<model id>/...
_RUN_ARTIFACT = re.compile(r"^[^/]+/(?P<run>[0-9a-f]{32})/")
_MODEL_ARTIFACT = re.compile(r"^[^/]+/models/(?P<model>[^/]+)/")


@dataclass(frozen=True)
class Decision:
    refusal: str | None = None  # why the request is refused (403), or None
    body: bytes | None = None  # the body to forward instead of the client's (runs/create's tag)


Owner = Callable[[str], Awaitable[str | None]]  # a run's (or a logged model's) job, None if not a job's


def needs_body(method: str, path: str) -> bool:
    """Whether the policy reads the request's JSON body (writes to the REST API, not artifact uploads)."""
    return method not in READ_METHODS and _API.match(path) is not None


async def decide(job: str, method: str, path: str, body: bytes | None, run_owner: Owner,
                 model_owner: Owner) -> Decision:
    """The decision for a request of job `job`'s token to MLflow's `path` (below /mlflow)."""
    if method in READ_METHODS:
        return Decision()
    artifact = _ARTIFACTS.match(path)
    if artifact is not None:
        return await _artifact_write(job, artifact["path"], run_owner, model_owner)
    api = _API.match(path)
    if api is None:
        return _refuse(job, method, path, "it is not part of MLflow's REST API")
    endpoint = api["endpoint"]
    if endpoint.rsplit("/", 1)[-1].startswith("search") or endpoint.startswith("metrics/get-history"):
        return Decision()  # reads sent as POST
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return _refuse(job, method, path, "its body is not JSON")
    if not isinstance(payload, dict):
        return _refuse(job, method, path, "its body is not a JSON object")
    if endpoint == "runs/create":
        tags = [t for t in payload.get("tags") or [] if not (isinstance(t, dict) and t.get("key") == JOB_TAG)]
        payload["tags"] = [*tags, {"key": JOB_TAG, "value": job}]
        return Decision(body=json.dumps(payload).encode())
    if endpoint in CREATES:
        return Decision()
    model = _LOGGED_MODEL.match(endpoint)
    run = payload.get("run_id") or payload.get("run_uuid") or payload.get("source_run_id")
    if model is not None:
        owner = await model_owner(model["model"])
    elif isinstance(run, str) and run:
        owner = await run_owner(run)
    elif endpoint == "logged-models" and not run:
        return _refuse(job, method, path, "a logged model made by a job names its run (source_run_id)")
    else:
        return _refuse(job, method, path, "it names no MLflow run of this job")
    return Decision() if owner == job else _refuse(job, method, path, "it touches a run of another job")


async def _artifact_write(job: str, path: str, run_owner: Owner, model_owner: Owner) -> Decision:
    run = _RUN_ARTIFACT.match(path)
    model = _MODEL_ARTIFACT.match(path)
    if run is not None:
        owner = await run_owner(run["run"])
    elif model is not None:
        owner = await model_owner(model["model"])
    else:
        return _refuse(job, "PUT", path, "an artifact is written under a run or a logged model")
    return Decision() if owner == job else _refuse(job, "PUT", path, "it writes into another job's artifacts")


def _refuse(job: str, method: str, path: str, why: str) -> Decision:
    return Decision(refusal=f"the run token of job '{job}' may not {method} /mlflow{path}: {why}; a job's token "
                            "writes into its own MLflow runs only")
