"""MLflow through the workspace's /mlflow: a job's run token reads anything and writes only its own runs.

The policy (tracking_policy.decide) alone, and the proxy in front of an in-process fake MLflow for
what only the proxy does: paths whose meaning could change on the way, the body cap, the headers
it drops and an MLflow that answers the owner lookups oddly. Requests go straight through ASGI
(an HTTP client would resolve the dot segments these tests send).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx
import pytest
from fastapi import FastAPI

from cible.server.auth import TokenAuthMiddleware
from cible.server.errors import install_error_handlers
from cible.server.guard import RequestGuard
from cible.server.settings import ServerSettings
from cible.server.tokens import Tokens
from cible.server.tracking_policy import BODY_LIMIT, JOB_TAG, POST_READS, WRITES, decide
from cible.server.tracking_proxy import tracking_router

TOKEN = "workspace-token"
RUN_A, RUN_B, RUN_C = "a" * 32, "b" * 32, "c" * 32  # job-a's, job-b's, no job's
OWNERS = {RUN_A: "job-a", RUN_B: "job-b"}
MODELS = {"m-1": RUN_A, "m-2": RUN_B}  # logged model -> its source run
API, API3, ARTIFACTS = "/api/2.0/mlflow", "/api/3.0/mlflow", "/api/2.0/mlflow-artifacts"


# -- the policy alone --------------------------------------------------------------------------
def decide_for(method: str, path: str, body: Any = None, query: str = "", job: str = "job-a"):
    async def run_owner(run_id: str) -> str | None:
        return OWNERS.get(run_id)

    async def model_owner(model_id: str) -> str | None:
        return OWNERS.get(MODELS.get(model_id, ""))

    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return asyncio.run(decide(job, method, path, raw, run_owner, model_owner, query))


def request_of(method: str, key: str, run: str, model: str) -> tuple[str, str, dict]:
    """A request for table entry `key` that names `run` (or `model`) where that write names it."""
    where = WRITES[(method, key)]
    version, route = key.split("/", 1)
    path = f"/api/{version}/{route}".replace("{id}", model).replace("{path}", f"0/{run}/artifacts/x.bin")
    body = {"run": {"run_id": run}, "source_run": {"source_run_id": run}, "model": {"model_id": model},
            "run_or_model": {"run_id": run}, "new": {"name": "e", "experiment_id": "0"}, "artifact": {}}[where]
    return method, path, body


@pytest.mark.parametrize(("method", "key"), sorted(WRITES))
@pytest.mark.parametrize("prefix", ["", "/ajax-"])
def test_every_allowed_write_passes_for_the_jobs_own_run(method, key, prefix):
    method, path, body = request_of(method, key, RUN_A, "m-1")
    path = path.replace("/api/", prefix + "api/", 1) if prefix else path
    decision = decide_for(method, path, body)
    assert decision.refusal is None, (path, decision.refusal)


@pytest.mark.parametrize(("method", "key"), sorted(k for k, where in WRITES.items() if where != "new"))
@pytest.mark.parametrize(("run", "model"), [(RUN_B, "m-2"), (RUN_C, "m-3")])  # another job's, no job's
def test_every_allowed_write_is_refused_for_a_run_not_the_jobs(method, key, run, model):
    method, path, body = request_of(method, key, run, model)
    decision = decide_for(method, path, body)
    assert decision.refusal is not None and decision.status == 403, path
    assert "job 'job-a'" in decision.refusal


@pytest.mark.parametrize("key", sorted(POST_READS))
def test_reads_and_the_posts_that_are_reads_pass(key):
    version, route = key.split("/", 1)
    assert decide_for("POST", f"/api/{version}/{route}", {"filter": "x"}).refusal is None
    assert decide_for("POST", f"/ajax-api/{version}/{route}", {}).refusal is None
    for method in ("GET", "HEAD", "OPTIONS"):
        assert decide_for(method, f"{API}/runs/get", query=f"run_id={RUN_B}").refusal is None


@pytest.mark.parametrize(("method", "path", "body", "query"), [
    # only the table's writes: a run of its own named in a write the table lacks is no licence
    ("POST", f"{API}/experiments/delete", {"experiment_id": "0", "run_id": RUN_A}, ""),
    ("DELETE", f"{API}/registered-models/delete", {"name": "m", "run_id": RUN_A}, ""),
    ("POST", f"{API}/registered-models/rename", {"name": "m", "new_name": "n", "run_id": RUN_A}, ""),
    ("PATCH", f"{API}/registered-models/update", {"name": "m", "run_id": RUN_A}, ""),
    ("POST", f"{API}/experiments/update", {"experiment_id": "0", "new_name": "x"}, ""),
    ("POST", f"{API}/runs/delete", {"run_id": RUN_A}, ""),
    ("DELETE", f"{API}/logged-models/m-1", None, ""),
    ("DELETE", f"{API}/logged-models/m-1/tags/k", None, ""),
    ("DELETE", f"{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/model.pkl", None, ""),
    # traces, not yet
    ("POST", f"{API3}/traces", {"trace": {}}, ""),
    ("POST", f"{API}/traces", {"request_id": "t"}, ""),
    ("PATCH", f"{API3}/traces/tr-1/tags", {"key": "k"}, ""),
    ("POST", f"{API3}/traces/delete-traces", {"experiment_id": "0"}, ""),
    ("POST", f"{API}/traces/link-to-run", {"run_id": RUN_A, "trace_ids": ["t"]}, ""),
    ("POST", "/v1/traces", {}, ""),
    # the UI's upload: its run is in the query string
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact", b"data", f"run_uuid={RUN_A}&path=x"),
    # the assistant (its GETs act too), the gateway, MLflow's jobs, graphql
    ("POST", "/ajax-api/3.0/mlflow/assistant/message", {"message": "hi"}, ""),
    ("GET", "/ajax-api/3.0/mlflow/assistant/sessions/s1/stream", None, ""),
    ("PUT", "/ajax-api/3.0/mlflow/assistant/config", {}, ""),
    ("POST", "/gateway/mlflow/v1/chat/completions", {}, ""),
    ("POST", f"{API3}/gateway/secrets/create", {}, ""),
    ("POST", "/ajax-api/3.0/jobs/search", {}, ""),
    ("POST", "/graphql", {"query": "mutation"}, ""),
    # POST reads by exact name, not by how they start
    ("POST", "/ajax-api/2.0/mlflow/experiments/search-datasets", {}, ""),
    ("POST", f"{API}/metrics/get-history", {"run_id": RUN_A}, ""),
    ("POST", f"{API}/metrics/get-history/../../experiments/delete", {"experiment_id": "0"}, ""),
    ("POST", f"{API}/runs/search/../delete", {"run_id": RUN_B}, ""),
    # a write's run in the query string
    ("POST", f"{API}/runs/log-metric", {"run_id": RUN_A, "key": "k", "value": 1}, f"run_id={RUN_B}"),
    ("POST", f"{API}/runs/log-metric", {"run_id": RUN_A, "key": "k", "value": 1}, f"run%5Fuuid={RUN_B}"),
    ("PUT", f"{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/x", None, f"run_id={RUN_B}"),
    # mpu: only create/complete/abort, and an artifact is under a run or a logged model
    ("POST", f"{ARTIFACTS}/mpu/other/0/{RUN_A}/artifacts/x", {}, ""),
    ("PUT", f"{ARTIFACTS}/artifacts/somewhere-else.txt", None, ""),
    ("PUT", f"{ARTIFACTS}/artifacts/0/{RUN_A}", None, ""),
])
def test_writes_outside_the_table_are_refused(method, path, body, query):
    decision = decide_for(method, path, body, query)
    assert decision.refusal is not None and decision.status == 403, (method, path)


@pytest.mark.parametrize("body", [
    {"run_id": RUN_A, "run_uuid": RUN_B},  # MLflow takes run_id or run_uuid: both must be the job's
    {"run_uuid": RUN_A, "runId": RUN_B},  # a protobuf JSON name is the same field to MLflow
    {"runUuid": RUN_B},
    {"run_id": RUN_A, "model_id": "m-2", "key": "k", "value": 1},  # a metric of another job's model
    {"run_id": RUN_A, "source_run_id": RUN_B},
])
def test_every_run_and_model_a_body_names_must_be_the_jobs(body):
    assert decide_for("POST", f"{API}/runs/log-metric", body).refusal is not None


def test_a_logged_models_id_in_the_body_is_checked_as_well_as_the_paths():
    # MLflow's finalize uses the body's model_id, not the path's
    assert decide_for("PATCH", f"{API}/logged-models/m-1", {"model_id": "m-2", "status": 2}).refusal
    assert decide_for("POST", f"{API}/logged-models/m-1/params", {"modelId": "m-2"}).refusal
    assert decide_for("PATCH", f"{API}/logged-models/m-1", {"model_id": "m-1", "status": 2}).refusal is None
    assert decide_for("POST", f"{API}/model-versions/create", {"run_id": RUN_A, "model_id": "m-2"}).refusal
    # registering models:/<model id> names the model, not its run
    assert decide_for("POST", f"{API}/model-versions/create", {"name": "n", "model_id": "m-1"}).refusal is None
    assert decide_for("POST", f"{API}/model-versions/create", {"name": "n", "model_id": "m-2"}).refusal
    assert decide_for("POST", f"{API}/model-versions/create", {"name": "n", "source": "x"}).refusal
    batch = {"run_id": RUN_A, "metrics": [{"key": "k", "value": 1, "model_id": "m-2"}]}
    assert decide_for("POST", f"{API}/runs/log-batch", batch).refusal  # log-batch logs model metrics too
    batch["metrics"][0]["model_id"] = "m-1"
    assert decide_for("POST", f"{API}/runs/log-batch", batch).refusal is None


def test_a_logged_models_artifacts_are_its_source_runs_jobs():
    assert decide_for("PUT", f"{ARTIFACTS}/artifacts/0/models/m-1/artifacts/MLmodel").refusal is None
    upload = "/ajax-api/2.0/mlflow-artifacts/mpu/create/0/models/m-1/artifacts/w.bin"
    assert decide_for("POST", upload, {}).refusal is None
    assert decide_for("PUT", f"{ARTIFACTS}/artifacts/0/models/m-2/artifacts/MLmodel").refusal
    assert decide_for("PUT", f"{ARTIFACTS}/artifacts/0/models/m-3/artifacts/MLmodel").refusal  # no such model


@pytest.mark.parametrize(("path", "body"), [
    (f"{API}/runs/set-tag", {"run_id": RUN_A, "key": JOB_TAG, "value": "job-b"}),
    (f"{API}/runs/set-tag", {"run_id": RUN_A, "key": JOB_TAG, "value": "job-a"}),
    (f"{API}/runs/delete-tag", {"run_id": RUN_A, "key": JOB_TAG}),
    (f"{API}/runs/log-batch", {"run_id": RUN_A, "tags": [{"key": "x", "value": "1"}, {"key": JOB_TAG, "value": "b"}]}),
    ("/ajax-api/2.0/mlflow/runs/set-tag", {"run_uuid": RUN_A, "key": JOB_TAG, "value": "job-b"}),
])
def test_a_job_cannot_set_or_delete_the_ownership_tag(path, body):
    decision = decide_for("POST", path, body)
    assert decision.refusal is not None and JOB_TAG in decision.refusal
    other = json.loads(json.dumps(body).replace(JOB_TAG, "mine"))
    assert decide_for("POST", path, other).refusal is None  # any other tag is the job's to set


def test_a_run_a_job_creates_is_tagged_as_its_own_whatever_it_says():
    body = {"experiment_id": "0", "tags": [{"key": JOB_TAG, "value": "job-b"}, {"key": "other", "value": "1"}]}
    decision = decide_for("POST", f"{API}/runs/create", body)
    assert decision.refusal is None
    tags = json.loads(decision.body)["tags"]
    assert {"key": "other", "value": "1"} in tags
    assert [t for t in tags if t["key"] == JOB_TAG] == [{"key": JOB_TAG, "value": "job-a"}]
    assert json.loads(decide_for("POST", f"{API}/runs/create", {"experiment_id": "0"}).body)["tags"] == [
        {"key": JOB_TAG, "value": "job-a"}]


@pytest.mark.parametrize(("path", "body"), [
    (f"{API}/runs/create", {"experiment_id": "0", "tags": 5}),
    (f"{API}/runs/create", {"experiment_id": "0", "tags": "cible.job"}),
    (f"{API}/runs/create", {"experiment_id": "0", "tags": [1, None]}),
    (f"{API}/runs/create", {"experiment_id": "0", "tags": {"key": JOB_TAG}}),
    (f"{API}/runs/log-batch", {"run_id": RUN_A, "tags": [[JOB_TAG, "b"]]}),
    (f"{API}/runs/log-batch", {"run_id": RUN_A, "metrics": "x"}),
    (f"{API}/runs/log-metric", {"run_id": 5}),
    (f"{API}/runs/log-metric", {"run_id": [RUN_A]}),
    (f"{API}/runs/create", b"[" * 100_000 + b"]" * 100_000),  # nested past Python's recursion limit
    (f"{API}/runs/log-metric", b"\xff\xfe{\x00}\x00"),  # not UTF-8
    (f"{API}/runs/log-metric", b"run_id=" + RUN_A.encode()),  # not JSON
    (f"{API}/runs/log-metric", b'"{\\"run_id\\": \\"' + RUN_B.encode() + b'\\"}"'),  # JSON in a string
    (f"{API}/runs/log-metric", b"[]"),
    (f"{API}/runs/log-metric", f'{{"run_id": "{RUN_A}", "run_id": "{RUN_B}"}}'.encode()),  # a key twice
    (f"{API}/runs/log-metric", b'{"run_id": "' + RUN_A.encode() + b'", "value": ' + b"9" * 5000 + b"}"),
])
def test_malformed_bodies_are_a_400_not_an_exception(path, body):
    decision = decide_for("POST", path, body)
    assert decision.refusal is not None and decision.status == 400, decision


# -- the proxy in front of a fake MLflow -----------------------------------------------------------
class FakeMlflow:
    """MLflow's routes that the owner lookups use, and an echo of every other request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.run_answer: tuple[int, bytes] | None = None  # instead of runs/get's usual answer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = self.answer(scope, body)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def answer(self, scope: dict, body: bytes) -> tuple[int, bytes]:
        path = scope["path"].removeprefix("/mlflow")
        if scope["method"] == "GET" and path == f"{API}/runs/get":
            if self.run_answer is not None:
                return self.run_answer
            run = parse_qs(scope["query_string"].decode())["run_id"][0]
            tags = [{"key": JOB_TAG, "value": OWNERS[run]}] if run in OWNERS else []
            return (200, json.dumps({"run": {"data": {"tags": tags}}}).encode()) if run != RUN_C else (404, b"{}")
        if scope["method"] == "GET" and path.startswith(f"{API}/logged-models/"):
            model = path.rsplit("/", 1)[1]
            info = {"model": {"info": {"source_run_id": MODELS[model]}}} if model in MODELS else {}
            return (200 if info else 404), json.dumps(info).encode()
        self.seen.append({"method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"],
                          "headers": dict(scope["headers"]), "body": body})
        return 200, b"{}"


class StubTracking:
    """What tracking_router uses of a TrackingServer, with the fake in process."""

    url = "http://mlflow.test"

    def __init__(self, upstream: FakeMlflow) -> None:
        self.upstream = upstream

    async def wait_ready(self, timeout: float) -> bool:
        return True

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(self.upstream))

    def ensure_running(self) -> None:
        pass

    def unavailable_message(self) -> str:
        return "not answering"


@pytest.fixture
def mlflow() -> FakeMlflow:
    return FakeMlflow()


@pytest.fixture
def proxy(mlflow: FakeMlflow):
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(tracking_router(StubTracking(mlflow), wait_s=1))
    return TokenAuthMiddleware(app, Tokens(TOKEN))


def send(app: Any, method: str, raw_path: str, body: bytes | list[bytes] = b"", query: str = "",
         token: str = TOKEN, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One request straight into the ASGI app, as uvicorn would hand it over: (status, JSON answer)."""
    chunks = body if isinstance(body, list) else [body]
    framing = {"transfer-encoding": "chunked"} if isinstance(body, list) else {"content-length": str(len(body))}
    all_headers = {"host": "ws.test", "authorization": f"Bearer {token}", **framing, **(headers or {})}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": unquote(raw_path), "raw_path": raw_path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(k.encode(), v.encode()) for k, v in all_headers.items()],
             "client": ("127.0.0.1", 5000), "server": ("ws.test", 80)}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def record(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, record))
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(answer) if answer else {}


JOB_A = Tokens(TOKEN).job("job-a")


@pytest.mark.parametrize("raw_path", [
    f"/mlflow{API}/metrics/get-history/../../experiments/delete",
    f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/../../0/{RUN_B}/artifacts/x",
    f"/mlflow{API}/runs/log-metric/./",
    f"/mlflow{API}/runs/search/%2e%2e/delete",
    f"/mlflow{API}/runs/search/%2E./delete",
    f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts%2F..%2F..%2F{RUN_B}/x",
    f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/..%5c..%5C{RUN_B}/x",
    f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/..\\{RUN_B}/x",
    f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/%252e%252e/x",  # encoded twice
    f"/mlflow{API}//runs/delete",
    f"/mlflow{API}/runs/delete//",
    f"/mlflow{API}/runs/log-metric%0a",
])
@pytest.mark.parametrize("who", ["workspace", "job"])
def test_paths_whose_meaning_could_change_are_refused_for_every_token(proxy, mlflow, raw_path, who):
    status, answer = send(proxy, "POST", raw_path, json.dumps({"run_id": RUN_A}).encode(),
                          token=TOKEN if who == "workspace" else JOB_A)
    assert status == 400 and answer["error"]["code"] == "InvalidRequest", answer
    assert set(answer["error"]) == {"code", "message", "details"}
    assert mlflow.seen == []  # nothing reached MLflow


def test_the_path_checked_is_the_path_forwarded(proxy, mlflow):
    raw = f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/a%20b%5B1%5D.txt"
    assert send(proxy, "PUT", raw, b"data", token=JOB_A)[0] == 200
    assert send(proxy, "GET", "/mlflow/")[0] == 200  # one trailing slash is fine
    assert [(s["raw_path"], s["path"]) for s in mlflow.seen] == [
        (raw.encode(), unquote(raw)), (b"/mlflow/", "/mlflow/")]


def test_forwarding_headers_are_dropped(proxy, mlflow):
    spoofed = {"x-forwarded-for": "127.0.0.1", "X-Forwarded-Host": "localhost", "x-forwarded-proto": "https",
               "x-real-ip": "127.0.0.1", "Forwarded": "for=127.0.0.1", "x-kept": "1"}
    for token in (TOKEN, JOB_A):
        assert send(proxy, "GET", f"/mlflow{API}/experiments/search", token=token, headers=spoofed)[0] == 200
    for seen in mlflow.seen:
        assert seen["headers"][b"x-kept"] == b"1"
        assert not {k.decode() for k in seen["headers"]} & {h.lower() for h in spoofed if h != "x-kept"}


def test_a_jobs_write_reaches_mlflow_with_its_tag(proxy, mlflow):
    body = {"experiment_id": "0", "tags": [{"key": JOB_TAG, "value": "job-b"}]}
    assert send(proxy, "POST", f"/mlflow{API}/runs/create", json.dumps(body).encode(), token=JOB_A)[0] == 200
    forwarded = json.loads(mlflow.seen[0]["body"])
    assert forwarded["tags"] == [{"key": JOB_TAG, "value": "job-a"}]
    assert mlflow.seen[0]["headers"][b"content-length"] == str(len(mlflow.seen[0]["body"])).encode()
    status, answer = send(proxy, "POST", f"/mlflow{API}/runs/create", b'{"tags": 5}', token=JOB_A)
    assert status == 400 and answer["error"]["code"] == "InvalidRequest"
    status, answer = send(proxy, "POST", f"/mlflow{API}/experiments/delete", b'{"experiment_id": "0"}', token=JOB_A)
    assert status == 403 and answer["error"]["code"] == "Forbidden"
    assert len(mlflow.seen) == 1


def test_a_jobs_rest_body_is_capped_at_1_mib_but_not_its_artifacts(proxy, mlflow):
    big = json.dumps({"run_id": RUN_A, "metrics": [], "pad": "x" * BODY_LIMIT}).encode()
    for body in (big, [big[:1000], big[1000:]]):  # declared, and streamed in chunks
        status, answer = send(proxy, "POST", f"/mlflow{API}/runs/log-batch", body, token=JOB_A)
        assert status == 413 and answer["error"]["code"] == "PayloadTooLarge" and "1 MiB" in answer["error"]["message"]
    artifact = f"/mlflow{ARTIFACTS}/artifacts/0/{RUN_A}/artifacts/model.pkl"
    assert send(proxy, "PUT", artifact, [b"x" * BODY_LIMIT, b"x" * 10], token=JOB_A)[0] == 200  # streamed on
    assert send(proxy, "POST", f"/mlflow{API}/runs/log-batch", big)[0] == 200  # the workspace's own limits apply
    assert [len(s["body"]) for s in mlflow.seen] == [BODY_LIMIT + 10, len(big)]


@pytest.mark.parametrize(("answer", "status"), [
    ((500, b"boom"), 503),  # MLflow failing: the client retries
    ((200, b"<html>"), 503),
    ((200, b"[" * 100_000), 503),
    ((200, b"[]"), 403),  # not the shape expected: no owner
    ((200, b'{"run": []}'), 403),
    ((200, b'{"run": {"data": {"tags": "cible.job"}}}'), 403),
    ((200, b'{"run": {"data": {"tags": [1, {"key": "cible.job", "value": 7}]}}}'), 403),
    ((404, b"not json"), 403),
])
def test_odd_answers_to_the_owner_lookup_are_a_403_or_a_503(proxy, mlflow, answer, status):
    mlflow.run_answer = answer
    body = json.dumps({"run_id": RUN_A, "key": "k", "value": 1}).encode()
    got, error = send(proxy, "POST", f"/mlflow{API}/runs/log-metric", body, token=JOB_A)
    assert got == status, error
    assert error["error"]["code"] == ("TrackingUnavailable" if status == 503 else "Forbidden")
    assert mlflow.seen == []


def test_a_logged_model_id_that_would_change_the_lookup_url_is_no_models(proxy, mlflow):
    for model in ("m-1%3Fx=1", "m-1%23", "m-1%20"):
        body = json.dumps({"status": 2}).encode()
        status, _ = send(proxy, "PATCH", f"/mlflow{API}/logged-models/{model}", body, token=JOB_A)
        assert status == 403, model
    assert send(proxy, "PATCH", f"/mlflow{API}/logged-models/m-1", b'{"model_id": "m-1"}', token=JOB_A)[0] == 200


def test_the_upload_limit_covers_mlflows_artifact_routes_only(tmp_path):
    guard = RequestGuard(None, ServerSettings(home=tmp_path, max_request_bytes=10, max_upload_bytes=1000))
    for path, limit in ((f"/mlflow{ARTIFACTS}/artifacts/0/x", 1000),
                        ("/mlflow/ajax-api/2.0/mlflow-artifacts/mpu/x", 1000),
                        (f"/mlflow{API}/runs/log-batch/mlflow-artifacts/x", 10),  # not an artifact route
                        ("/mlflow/x/mlflow-artifacts/y", 10)):
        assert guard.limit_of({"method": "POST", "path": path})[0] == limit, path


def test_a_run_token_that_no_longer_counts_is_refused_before_mlflow(mlflow):
    """The proxy asks whether the token's job is still that submission, and not long ended."""
    asked = []

    def refusal(job: str, salt: str) -> str | None:
        asked.append((job, salt))
        return None if salt == "current" else "this token is of an earlier job named 'job-a'"

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(tracking_router(StubTracking(mlflow), wait_s=1, run_token_refusal=refusal))
    proxy = TokenAuthMiddleware(app, Tokens(TOKEN))
    status, answer = send(proxy, "GET", f"/mlflow{API}/runs/get", query=f"run_id={RUN_A}",
                          token=Tokens(TOKEN).job("job-a", "earlier"))
    assert status == 403 and "earlier job" in answer["error"]["message"]
    status, _ = send(proxy, "GET", f"/mlflow{API}/runs/get", query=f"run_id={RUN_A}",
                     token=Tokens(TOKEN).job("job-a", "current"))
    assert status == 200  # answered by MLflow
    send(proxy, "GET", f"/mlflow{API}/runs/get", query=f"run_id={RUN_A}", token=Tokens(TOKEN).job("job-a", "current"))
    assert asked == [("job-a", "earlier"), ("job-a", "current")]  # the answer is kept a few seconds


# -- a user's token: their own jobs' runs and the runs they made; an Owner's: any ----------------------
USER_RUN = "d" * 32  # a run kim made with her own token (tagged cible.user)
CREATORS = {"job-a": "kim", "job-b": "lee"}
USERS = {"kim-token": ("kim", "AzureML Data Scientist"), "boss-token": ("boss", "Owner")}


@pytest.fixture
def user_proxy(mlflow: FakeMlflow):
    from cible.server.tokens import Scope
    from cible.server.tracking_policy import USER_TAG

    answer = mlflow.answer

    def with_user_runs(scope: dict, body: bytes) -> tuple[int, bytes]:
        asked = scope["query_string"].decode()
        if scope["method"] == "GET" and scope["path"].endswith("/runs/get") and USER_RUN in asked:
            return 200, json.dumps({"run": {"data": {"tags": [{"key": USER_TAG, "value": "kim"}]}}}).encode()
        return answer(scope, body)

    mlflow.answer = with_user_runs
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(tracking_router(StubTracking(mlflow), wait_s=1, job_creator=CREATORS.get))
    return TokenAuthMiddleware(app, Tokens(TOKEN), user_of=lambda bearer: Scope(
        "user", USERS[bearer][0], role=USERS[bearer][1]) if bearer in USERS else None)


def test_a_user_writes_into_their_own_jobs_runs_and_their_own_runs_only(user_proxy, mlflow) -> None:
    from cible.server.tracking_policy import USER_TAG

    def log(run: str, token: str = "kim-token") -> tuple[int, dict]:
        return send(user_proxy, "POST", f"/mlflow{API}/runs/log-metric",
                    json.dumps({"run_id": run, "key": "m", "value": 1, "timestamp": 0}).encode(), token=token)

    assert log(RUN_A)[0] == 200 and log(USER_RUN)[0] == 200  # her job's run, and the run she made
    status, refused = log(RUN_B)  # lee's job's
    assert status == 403 and refused["error"]["message"].startswith(
        f"user 'kim' may not POST /mlflow{API}/runs/log-metric: run '{RUN_B}' is not one of this user's")
    assert log(RUN_C)[0] == 403  # no one's
    assert log(RUN_B, token="boss-token")[0] == 200  # an Owner writes anywhere
    status, _ = send(user_proxy, "POST", f"/mlflow{API}/runs/set-tag",
                     json.dumps({"run_id": USER_RUN, "key": USER_TAG, "value": "lee"}).encode(), token="kim-token")
    assert status == 403  # the ownership tag is the workspace's
    mlflow.seen.clear()
    made = send(user_proxy, "POST", f"/mlflow{API}/runs/create",
                json.dumps({"experiment_id": "0", "tags": [{"key": JOB_TAG, "value": "job-b"}]}).encode(),
                token="kim-token")
    assert made[0] == 200
    assert json.loads(mlflow.seen[-1]["body"])["tags"] == [{"key": USER_TAG, "value": "kim"}]  # hers, no job's
