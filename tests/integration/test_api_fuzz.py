"""A property-based fuzz run of the live OpenAPI (schemathesis): whatever a client sends, the server
never answers 5xx, and each refusal is the error envelope.

Every operation of /api/v1/openapi.json gets schemathesis's coverage and fuzzing phases (valid and
invalid inputs) against an app built in-process (SQLite, no reconcilers) and seeded through its
own API: a cluster with a node running a job, an instance, a local job, a blob, a snapshot, assets
and a quota request. On top of what the schema alone gives, a share of the cases are "grounded":
their path parameters are names that exist and their body is a valid spec with one part replaced,
removed or added, so the run reaches past "not found" and "invalid spec" into the services.
It runs with the workspace token, then with a node's token and a job's run token (refused outside
their scope: a 401/403, never a failure).

Reproducible and bounded: SEED and the max_examples of RUNS decide every request.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from cible.core.models.records import ClusterHandle, NodeInfo
from cible.server.app import create_app
from cible.server.services.artifacts import ARTIFACTS
from cible.server.services.blobs import manifest_bytes
from cible.server.settings import ServerSettings
from cible.server.store.rows import JobRow, NodeRow
from cible.testing import FrozenClock

SEED = 20260101
# max_examples per operation, by token; scoped tokens are refused at the door on most routes.
RUNS = {"workspace": 80, "node": 20, "job": 10}
TOKEN = "fuzz-workspace-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
NODE, CLUSTER_JOB, NEW = "n1", "j1", "fuzz-new"

BLOB = b"print('hello')\n"
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
FILES = {"hello.py": {"sha256": BLOB_SHA, "size": len(BLOB), "mode": 0o644}}
SNAPSHOT = f"cible://snapshots/{hashlib.sha256(manifest_bytes(FILES)).hexdigest()}"
CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
INSTANCE = {"type": "computeinstance", "size": "Standard_DS1_v2",
            "schedules": {"compute_start_stop": [{"action": "stop", "trigger": {
                "type": "cron", "expression": "0 18 * * *", "time_zone": "Europe/Paris"}}]}}
JOB = {"command": "python hello.py --n ${{inputs.n}}", "compute": "azureml:cpu-cluster", "code": SNAPSHOT,
       "environment": "azureml:fuzz-env@latest", "environment_variables": {"A": "1"},
       "inputs": {"n": 3, "data": {"type": "uri_file", "path": "azureml:iris@latest"}},
       "outputs": {"out": {"type": "uri_folder"}}, "resources": {"instance_count": 1},
       "distribution": {"type": "pytorch", "process_count_per_instance": 1}, "limits": {"timeout": 600},
       "experiment_name": "fuzz", "display_name": "fuzz", "tags": {"t": "v"}}
ASSETS = {"data": {"type": "uri_file", "path": f"{SNAPSHOT}/hello.py"},
          "models": {"path": f"{SNAPSHOT}/hello.py"},
          "environments": {"image": "python:3.11-slim", "conda_file": {"dependencies": ["python=3.11"]}}}
# Valid bodies of the routes whose schema says little ("any object") or whose fields go together.
BODIES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("PUT", "/api/v1/jobs/{name}"): [JOB],
    ("POST", "/api/v1/jobs/{name}:validate"): [JOB],
    ("PATCH", "/api/v1/jobs/{name}"): [{"display_name": "d", "description": "x", "tags": {"t": "w"}}],
    ("PUT", "/api/v1/computes/{name}"): [CLUSTER, INSTANCE],
    ("PATCH", "/api/v1/computes/{name}"): [{"min_instances": 0, "max_instances": 3, "idle_time_before_scale_down": 60}],
    ("POST", "/api/v1/agent/nodes/{node_id}/heartbeat"): [{
        "runs": [{"job": CLUSTER_JOB, "attempt": 1}], "wait_s": 0.05, "usage": {"cpu": 0.5},
        "address": "127.0.0.1", "sessions": ["s"], "last_activity_at": "2026-01-01T00:00:00Z", "disk": {"free": 1}}],
    ("POST", "/api/v1/agent/nodes/{node_id}/runs/{job_name}/report"): [{
        "attempt": 1, "node_rank": 0, "history": ["Preparing", "Running"], "exit_code": 0, "ended": False}],
    ("POST", "/api/v1/snapshots"): [{"files": FILES}],
    ("POST", "/api/v1/blobs:missing"): [{"sha256": [BLOB_SHA, "0" * 64]}],
    ("POST", "/api/v1/computes/{name}:snooze"): [{"minutes": 30}],
    ("PUT", "/api/v1/quotas/{scope}"): [{"vcpus": 32}],
    ("POST", "/api/v1/quotas/{scope}/requests"): [{"vcpus": 96, "reason": "fuzz"}],
}
# Names that exist once the app is seeded (see `seeded_app`), or that a PUT may create, by the
# operation's path prefix and path parameter.
KNOWN: dict[str, dict[str, list[Any]]] = {
    "/api/v1/computes/": {"name": ["cpu-cluster", "ci1", NEW], "node_id": [NODE]},
    "/api/v1/jobs/": {"name": [CLUSTER_JOB, "hello", NEW],
                      "path": [f"{ARTIFACTS}/user_logs/std_log.txt", "named-outputs/out/x", "artifacts/../x"]},
    "/api/v1/agent/": {"node_id": [NODE], "job_name": [CLUSTER_JOB],
                       "path": ["user_logs/std_log.txt", "outputs/result.txt", "../escape"]},
    "/api/v1/sizes/": {"name": ["Standard_DS1_v2", "Standard_NC6s_v3"]},
    "/api/v1/blobs/": {"sha256": [BLOB_SHA]},
    "/api/v1/quota": {"scope": ["total", "low_priority", "standardDSv2Family"], "request_id": [1]},
    "/api/v1/{kind}/": {"kind": list(ASSETS), "name": ["iris", "fuzz-env", NEW], "version": ["1", "7", "latest"]},
    "/api/v1/models/": {"name": ["iris", NEW], "version": ["1", "latest"],
                        "path": ["iris/hello.py", "iris/../x", "other/hello.py"]},
}
TRICKY = ["", " ", ".", "..", "../../etc/passwd", "a" * 300, "azureml:nope", "azureml:iris@latest",
          "${{inputs.n}}", "cible://snapshots/../x", "-1", "1e400", "\x00", "\u202e", "null"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([2**63, -(2**63) - 1, 2**31, 0, -1])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | st.sampled_from(TRICKY),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_REMOVE = object()


def _spots(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every place in a JSON document: the key path to each dict entry and list item."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield (*path, key)
        yield from _spots(item, (*path, key))


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    """A copy of `value` with the item at `path` replaced by `new`, or removed when it is `_REMOVE`."""
    copy = dict(value) if isinstance(value, dict) else list(value)
    head, rest = path[0], path[1:]
    if rest:
        copy[head] = _replaced(value[head], rest, new)
    elif new is _REMOVE:
        del copy[head]
    else:
        copy[head] = new
    return copy


def mutations(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`body` as is, with one part replaced by any JSON value or removed, or with a key added."""
    replace = st.tuples(st.sampled_from(list(_spots(body))), JSON | st.just(_REMOVE))
    added = st.tuples(st.text(max_size=12), JSON)
    return (st.just(body) | replace.map(lambda where: _replaced(body, *where))
            | added.map(lambda kv: {**body, kv[0]: kv[1]}))


# The asset routes that take a spec (archive and restore take no body).
REGISTRATIONS = ("/api/v1/{kind}/{name}/versions", "/api/v1/{kind}/{name}/versions/{version}")


def grounded(operation: schemathesis.APIOperation, case: schemathesis.Case) -> st.SearchStrategy:
    """`case` with some of its path parameters the names that exist and, for the routes of BODIES
    (and the assets'), a mutated valid body."""
    if not isinstance(case.path_parameters, dict):  # a negative case can make them anything
        return st.just(case)
    known = next((names for prefix, names in KNOWN.items() if operation.path.startswith(prefix)), {})
    params = st.fixed_dictionaries({key: st.sampled_from([*known[key], value]) if key in known else st.just(value)
                                    for key, value in case.path_parameters.items()})

    def with_body(path_parameters: dict[str, Any]) -> st.SearchStrategy:
        bodies = BODIES.get((operation.method.upper(), operation.path))
        if operation.path in REGISTRATIONS and operation.method.upper() in ("POST", "PUT"):
            bodies = [ASSETS.get(path_parameters.get("kind"), ASSETS["data"])]
        body = st.sampled_from(bodies).flatmap(mutations) if bodies else st.just(case.body)
        return body.map(lambda b: operation.Case(path_parameters=path_parameters, query=case.query,
                                                 headers=case.headers, body=b, media_type=case.media_type))

    return params.flatmap(with_body)


def seeded_app(home: Path) -> FastAPI:
    """An app seeded through its own API (and the store, for a node running a cluster job)."""
    settings = ServerSettings(home=home, database_url=f"sqlite:///{home / 'fuzz.db'}", tracking=False,
                              default_compute="local", node_heartbeat_timeout_s=0.3)  # long-polls of 0.1 s
    app = create_app(settings, TOKEN, FrozenClock(NOW), reconcile=False)
    api = TestClient(app, headers=AUTH, raise_server_exceptions=False)

    def ok(response) -> dict[str, Any]:
        assert response.status_code < 300, (response.request.method, response.request.url, response.text)
        return response.json() if response.content else {}

    ok(api.put(f"/api/v1/blobs/{BLOB_SHA}", content=BLOB))
    assert ok(api.post("/api/v1/snapshots", json={"files": FILES}))["uri"] == SNAPSHOT
    ok(api.post("/api/v1/data/iris/versions", json=ASSETS["data"]))
    ok(api.put("/api/v1/environments/fuzz-env/versions/1", json=ASSETS["environments"]))
    ok(api.put("/api/v1/models/iris/versions/1", json=ASSETS["models"]))
    ok(api.put("/api/v1/computes/cpu-cluster", json=CLUSTER))
    ok(api.put("/api/v1/computes/ci1", json=INSTANCE))
    ok(api.put("/api/v1/quotas/total", json={"vcpus": 64}))
    ok(api.post("/api/v1/quotas/total/requests", json={"vcpus": 128, "reason": "fuzz"}))
    ok(api.put("/api/v1/jobs/hello", json={**JOB, "compute": "local"}))
    ok(api.put(f"/api/v1/jobs/{CLUSTER_JOB}", json=JOB))
    handle = {"runner": "cluster", "job_name": CLUSTER_JOB, "compute": "cpu-cluster", "attempt": 1,
              "nodes": [NODE], "node_addrs": ["127.0.0.1"], "master_port": 12345}
    with app.state.store.session() as session:
        session.add(NodeRow(node_id=NODE, compute="cpu-cluster", provider="local", state="running",
                            job_name=CLUSTER_JOB, address="127.0.0.1", info=NodeInfo(), created_at=NOW,
                            updated_at=NOW))
        row = session.get(JobRow, CLUSTER_JOB)
        row.status = "Running"
        row.run = row.run.model_copy(update={"handle": ClusterHandle(**handle)})
    logs = app.state.settings.paths.run_dir(CLUSTER_JOB) / ARTIFACTS / "user_logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "std_log.txt").write_text("hello\n")
    return app


def live_openapi() -> dict[str, Any]:
    """The document /api/v1/openapi.json serves. It depends on the routes only, and is read at
    collection (from a throwaway workspace) so that pytest lists one test per operation."""
    with tempfile.TemporaryDirectory() as home:
        settings = ServerSettings(home=Path(home), database_url=f"sqlite:///{home}/openapi.db", tracking=False)
        app = create_app(settings, TOKEN, reconcile=False)
        try:
            response = TestClient(app, headers=AUTH).get("/api/v1/openapi.json")
        finally:
            app.state.store.close()
    assert response.status_code == 200, response.text
    return response.json()


schema = schemathesis.openapi.from_dict(live_openapi(), config=schemathesis.Config.from_dict({
    "seed": SEED,
    "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},  # coverage, then fuzzing
    "generation": {"database": "none"},
}))


@schema.hook
def before_generate_case(context, strategy):
    return strategy | strategy.flatmap(lambda case: grounded(context.operation, case))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], FastAPI]]:
    """A freshly seeded app for each token the module fuzzes with, made on first use."""
    apps: dict[str, FastAPI] = {}

    def app_for(who: str) -> FastAPI:
        if who not in apps:
            apps[who] = seeded_app(tmp_path_factory.mktemp(f"fuzz-{who}") / "ws")
        return apps[who]

    yield app_for
    for app in apps.values():
        app.state.store.close()


def call(case: schemathesis.Case, app: FastAPI, token: str, reach: str = "/") -> None:
    """One generated request: never a 5xx, each refusal the error envelope, and no success outside
    `reach`, the paths the token may use."""
    response = case.call(app=app, headers={"Authorization": f"Bearer {token}"})
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        assert response.headers.get("content-type") == ["application/json"], (response.status_code, response.headers)
        body = response.json()
        assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    else:
        path = unquote(urlsplit(response.request.url).path)  # as the server's auth sees it
        assert path.startswith(reach), f"{response.status_code} on {path}: beyond what the token may reach"


# The same cases everywhere: Hypothesis's `ci` profile would derandomize (another seed) under CI.
FUZZ = settings(derandomize=False, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@settings(FUZZ, max_examples=RUNS["workspace"])
def test_no_request_of_the_workspace_makes_the_server_fail(case: schemathesis.Case, seeded) -> None:
    call(case, seeded("workspace"), TOKEN)


@schema.parametrize()
@settings(FUZZ, max_examples=RUNS["node"])
def test_no_request_with_a_node_token_makes_the_server_fail(case: schemathesis.Case, seeded) -> None:
    app = seeded("node")
    call(case, app, app.state.tokens.node(NODE), reach=f"/api/v1/agent/nodes/{NODE}/")


@schema.parametrize()
@settings(FUZZ, max_examples=RUNS["job"])
def test_no_request_with_a_run_token_makes_the_server_fail(case: schemathesis.Case, seeded) -> None:
    app = seeded("job")
    call(case, app, app.state.tokens.job(CLUSTER_JOB), reach="/mlflow/")  # no route of the API
