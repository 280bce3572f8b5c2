"""What a job's run token, or a user's token, may do in MLflow: read anything, write only into its own runs.

A run is the job's when its ``cible.job`` tag names the job. The proxy sets that tag itself on
every run a job token creates (the launcher's run, and nested runs the command starts), and a job
token may not set, overwrite or delete it, so a job cannot claim another's run. A logged model is
the job's when the run it was made from (its ``source_run_id``) is. A user (an Owner excepted) is held
the same way: their runs are those of the jobs they submitted, and those their token created (the
proxy tags them ``cible.user``, which no one else may set either).

Writes are allowed by name only (`WRITES`, checked against MLflow 3.17's routes: ``get_endpoints``
in mlflow/server/handlers.py), each with where it names its run or model; every run and model id
a write's body names must be the job's, not only the one MLflow is expected to use (MLflow takes
``run_id or run_uuid``, and a body's model id over the path's in some handlers). Any other write
(deleting experiments, registry renames, traces, the UI's upload-artifact, the assistant, the
gateway, MLflow's jobs) is refused. The proxy has already refused paths whose meaning could
change on the way to MLflow (dot segments, encoded slashes): the path judged here is the one
MLflow routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

JOB_TAG = "cible.job"
USER_TAG = "cible.user"
PROTECTED_TAGS = (JOB_TAG, USER_TAG)  # set by the proxy on runs/create only
BODY_LIMIT = 1 << 20  # the most a job's REST call may send: the policy reads it whole (log-batch's own cap is less)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Where a write names what it touches.
NEW = "new"  # nothing of a run: an experiment, a registered model's name, a run to be created (tagged here)
RUN = "run"  # run_id (or run_uuid) in the JSON body
SOURCE_RUN = "source_run"  # source_run_id in the body: a logged model made from that run
RUN_OR_MODEL = "run_or_model"  # run_id or model_id in the body (registering models:/<model id> names no run)
MODEL = "model"  # a logged model's id in the path ({id}), owned through its source run
ARTIFACT = "artifact"  # the artifact path ({path}): <experiment>/<run id>/... or <experiment>/models/<model id>/...

# The writes a job's token may make: (method, "<API version>/<route>") -> where it names its run.
# MLflow serves each at /api/... and at /ajax-api/... (its web UI's twin).
WRITES = {
    ("POST", "2.0/mlflow/runs/create"): NEW,
    ("POST", "2.0/mlflow/runs/update"): RUN,
    ("POST", "2.0/mlflow/runs/log-metric"): RUN,
    ("POST", "2.0/mlflow/runs/log-parameter"): RUN,
    ("POST", "2.0/mlflow/runs/set-tag"): RUN,
    ("POST", "2.0/mlflow/runs/delete-tag"): RUN,
    ("POST", "2.0/mlflow/runs/log-batch"): RUN,
    ("POST", "2.0/mlflow/runs/log-model"): RUN,
    ("POST", "2.0/mlflow/runs/log-inputs"): RUN,
    ("POST", "2.0/mlflow/runs/outputs"): RUN,  # MLflow 3's log_outputs
    ("POST", "2.0/mlflow/experiments/create"): NEW,
    ("POST", "2.0/mlflow/experiments/restore"): NEW,  # the launcher restores its deleted experiment
    ("POST", "2.0/mlflow/registered-models/create"): NEW,
    ("POST", "2.0/mlflow/model-versions/create"): RUN_OR_MODEL,
    ("POST", "2.0/mlflow/logged-models"): SOURCE_RUN,
    ("PATCH", "2.0/mlflow/logged-models/{id}"): MODEL,  # finalize
    ("PATCH", "2.0/mlflow/logged-models/{id}/tags"): MODEL,
    ("POST", "2.0/mlflow/logged-models/{id}/params"): MODEL,
    ("PUT", "2.0/mlflow-artifacts/artifacts/{path}"): ARTIFACT,
    ("POST", "2.0/mlflow-artifacts/mpu/create/{path}"): ARTIFACT,
    ("POST", "2.0/mlflow-artifacts/mpu/complete/{path}"): ARTIFACT,
    ("POST", "2.0/mlflow-artifacts/mpu/abort/{path}"): ARTIFACT,
}
# Reads that MLflow takes as POST (a search's filter is a JSON body).
POST_READS = frozenset({
    "2.0/mlflow/runs/search", "2.0/mlflow/experiments/search", "2.0/mlflow/logged-models/search",
    "2.0/mlflow/registered-models/get-latest-versions", "3.0/mlflow/datasets/search", "3.0/mlflow/traces/search",
})
# Body keys that name a run or a logged model, with their protobuf JSON names (MLflow accepts both).
RUN_KEYS = ("run_id", "runId", "run_uuid", "runUuid")
SOURCE_RUN_KEYS = ("source_run_id", "sourceRunId")
MODEL_KEYS = ("model_id", "modelId")

_NAMES = {RUN: "run_id", SOURCE_RUN: "source_run_id", RUN_OR_MODEL: "run_id or model_id"}
# Matched whole (fullmatch): "$" would also match before a final newline.
_ROUTE = re.compile(r"/(?:ajax-)?api/(?P<version>[23]\.0)/(?P<route>.+?)/?")
_MODEL_ROUTE = re.compile(r"mlflow/logged-models/(?P<id>[^/]+)(?P<rest>/tags|/params)?")
_ARTIFACT_ROUTE = re.compile(r"(?P<kind>mlflow-artifacts/(?:artifacts|mpu/(?:create|complete|abort)))/(?P<path>.+)")
# Even its GETs act: a session's stream runs the assistant (an agent with the server's powers).
_ASSISTANT = re.compile(r"^/(?:ajax-)?api/[23]\.0/mlflow/assistant(?:/|$)")
_RUN_ARTIFACT = re.compile(r"^[^/]+/(?P<run>[0-9a-f]{32})/")
_MODEL_ARTIFACT = re.compile(r"^[^/]+/models/(?P<model>[^/]+)/")


@dataclass(frozen=True)
class Decision:
    refusal: str | None = None  # why the request is refused, or None
    body: bytes | None = None  # the body to forward instead of the client's (runs/create's tag)
    status: int = 403  # of a refusal: 403, or 400 for a body that is no JSON object


Owner = Callable[[str], Awaitable[str | None]]  # a run's (or a logged model's) job, None if not a job's


@dataclass(frozen=True)
class Actor:
    """Whose writes are judged: a job's run token, or a user's token (an Owner's is not judged)."""

    tag: str  # the tag each run it creates gets (JOB_TAG or USER_TAG), valued `name`
    name: str
    who: str  # as a refusal names it
    rule: str  # and what it may write, said after the refusal
    owns_run: Callable[[str], Awaitable[bool]]
    owns_model: Callable[[str], Awaitable[bool]]


def job_actor(job: str, run_owner: Owner, model_owner: Owner) -> Actor:
    async def owns_run(run: str) -> bool:
        return await run_owner(run) == job

    async def owns_model(model: str) -> bool:
        return await model_owner(model) == job

    return Actor(JOB_TAG, job, f"the run token of job '{job}'", "a job's token writes into its own MLflow runs only",
                 owns_run, owns_model)


class OwnerLookupError(Exception):
    """MLflow could not say whose a run or a logged model is (it failed: the proxy answers 503)."""


class _Refused(Exception):
    def __init__(self, why: str, status: int = 403) -> None:
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class _Route:
    key: str  # "<version>/<route>" with {id} / {path} for a logged model's id / an artifact path
    model: str | None = None
    artifact: str | None = None


def needs_body(method: str, path: str) -> bool:
    """Whether the policy reads the request's JSON body: an allowed REST write (not an artifact upload)."""
    route = _route(path)
    return route is not None and WRITES.get((method, route.key)) not in (None, ARTIFACT)


async def decide(job: str, method: str, path: str, body: bytes | None, run_owner: Owner, model_owner: Owner,
                 query: str = "") -> Decision:
    """The decision for a request of job `job`'s token to MLflow's `path` (below /mlflow; `query` undecoded)."""
    return await decide_for(job_actor(job, run_owner, model_owner), method, path, body, query)


async def decide_for(actor: Actor, method: str, path: str, body: bytes | None, query: str = "") -> Decision:
    """The decision for a request of `actor` to MLflow's `path` (below /mlflow; `query` undecoded)."""
    try:
        return await _decide(actor, method, path, body, query)
    except _Refused as refused:
        return Decision(refusal=f"{actor.who} may not {method} /mlflow{path}: {refused}; {actor.rule}",
                        status=refused.status)


async def _decide(actor: Actor, method: str, path: str, body: bytes | None, query: str) -> Decision:
    if _ASSISTANT.match(path):
        raise _Refused("MLflow's assistant is the workspace's")
    if method in READ_METHODS:
        return Decision()
    route = _route(path)
    if route is None:
        raise _Refused("it is not a route of MLflow's REST API that a job writes to")
    if method == "POST" and route.key in POST_READS:
        return Decision()
    where = WRITES.get((method, route.key))
    if where is None:
        raise _Refused("a job's token may not make this write")
    if any(key in RUN_KEYS for key, _ in parse_qsl(query, keep_blank_values=True)):
        raise _Refused("a write names its run in its body, not in its query string")
    if where == ARTIFACT:
        await _own_artifact(actor, route.artifact or "")
        return Decision()
    payload = _payload(body)
    endpoint = route.key.removeprefix("2.0/mlflow/")
    runs, sources, models = _ids(payload, RUN_KEYS), _ids(payload, SOURCE_RUN_KEYS), _ids(payload, MODEL_KEYS)
    if where in _NAMES and not {RUN: runs, SOURCE_RUN: sources, RUN_OR_MODEL: runs + models}[where]:
        raise _Refused(f"it names no run ({_NAMES[where]})")
    runs += sources
    models += [route.model] if route.model is not None else []
    if endpoint == "runs/log-batch":
        models += [m for metric in _list_of_objects(payload, "metrics") for m in _ids(metric, MODEL_KEYS)]
        if any(tag.get("key") in PROTECTED_TAGS for tag in _list_of_objects(payload, "tags")):
            raise _Refused(f"the {' and '.join(PROTECTED_TAGS)} tags are the workspace's")
    if endpoint in ("runs/set-tag", "runs/delete-tag") and payload.get("key") in PROTECTED_TAGS:
        raise _Refused(f"the {payload.get('key')} tag is the workspace's")
    for run in runs:
        if not await actor.owns_run(run):
            raise _Refused(f"run '{run}' is not one of {_its(actor)}")
    for model in models:
        if not await actor.owns_model(model):
            raise _Refused(f"logged model '{model}' is not one of {_its(actor)}")
    if endpoint == "runs/create":
        return Decision(body=_tagged(payload, actor))
    return Decision()


def _its(actor: Actor) -> str:
    return "this job's" if actor.tag == JOB_TAG else "this user's"


def _route(path: str) -> _Route | None:
    """The table key of a REST route (below /mlflow), with its logged model's id or artifact path."""
    match = _ROUTE.fullmatch(path)
    if match is None:
        return None
    version, route = match["version"], match["route"]
    artifact = _ARTIFACT_ROUTE.fullmatch(route)
    if artifact is not None:
        return _Route(f"{version}/{artifact['kind']}/{{path}}", artifact=artifact["path"])
    model = _MODEL_ROUTE.fullmatch(route)
    if model is not None and model["id"] != "search":  # logged-models/search is a route, not a model
        return _Route(f"{version}/mlflow/logged-models/{{id}}{model['rest'] or ''}", model=model["id"])
    return _Route(f"{version}/{route}")


def _payload(body: bytes | None) -> dict[str, Any]:
    """The body's JSON object (empty for no body); a body that is not one is refused (400)."""
    try:
        payload = json.loads((body or b"{}").decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise _Refused("its body is not UTF-8", 400) from None
    except RecursionError:
        raise _Refused("its body is nested too deeply", 400) from None
    except ValueError as exc:  # JSONDecodeError, a repeated key, a number too long
        raise _Refused(f"its body is not valid JSON ({exc})", 400) from None
    if not isinstance(payload, dict):
        raise _Refused("its body is not a JSON object", 400)
    return payload


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins: a body that repeats one is refused.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key is repeated")
    return result


def _ids(payload: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The ids that `keys` give (unset, null or empty ones are MLflow's "not given")."""
    ids = []
    for key in keys:
        value = payload.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise _Refused(f"its '{key}' is not a string", 400)
        ids.append(value)
    return ids


def _list_of_objects(payload: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = payload.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _Refused(f"its '{key}' is not a list of objects", 400)
    return items


def _tagged(payload: dict[str, Any], actor: Actor) -> bytes:
    """runs/create's body, with the actor's tag in place of any workspace tag the client sent."""
    tags = [tag for tag in _list_of_objects(payload, "tags") if tag.get("key") not in PROTECTED_TAGS]
    try:
        return json.dumps({**payload, "tags": [*tags, {"key": actor.tag, "value": actor.name}]}).encode()
    except (RecursionError, ValueError):
        raise _Refused("its body cannot be written back as JSON", 400) from None


async def _own_artifact(actor: Actor, path: str) -> None:
    run = _RUN_ARTIFACT.match(path)
    model = _MODEL_ARTIFACT.match(path)
    if run is not None:
        owned = await actor.owns_run(run["run"])
    elif model is not None:
        owned = await actor.owns_model(model["model"])
    else:
        raise _Refused("an artifact is written under a run or a logged model")
    if not owned:
        raise _Refused(f"it writes into artifacts that are not {_its(actor)}")
