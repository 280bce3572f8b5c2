"""Online endpoint behaviours against a real server: rolling updates under load, in-place scaling,
autoscaling on in-flight requests, scale to zero and back, mirrored traffic, a replica that dies
mid-request, a liveness restart, aml_token auth and an MLflow model served without code.

Replicas are real scoring-server processes (`python -m cible.serving`) on nodes of the local
provider, requests real HTTP through the gateway on 127.0.0.1. One workspace and server for the
module; each endpoint serves the tests that follow one another on it, as a user would build it up.
The scoring script is tiny (no model) and does what a test asks of it through its input: sleep,
crash, stop itself.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration_support import served_workspace, wait_until

from cible import MLClient

DEPLOY_TIMEOUT_S = 120
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"  # an Azure ML base image: the host Python
SCORE_PY = textwrap.dedent(
    """
    import json, os, signal, time

    def init():
        time.sleep(float(os.environ.get("INIT_SLEEP_S", "0")))  # a slow cold start
        print(f"init: {os.environ.get('WHO')} {os.environ.get('VERSION')}", flush=True)

    def run(raw_data):
        data = json.loads(raw_data)
        who = os.environ.get("WHO", "?")
        log = os.environ.get("REQUEST_LOG")
        if log:  # one line per request this replica got (the mirror test counts them)
            with open(log, "a") as fh:
                fh.write(f"{data.get('n', '-')}\\n")
        if data.get("crash"):
            os._exit(1)
        if data.get("stop"):
            os.kill(os.getpid(), signal.SIGSTOP)
        delay = float((data.get("sleep") or {}).get(who, 0)) or float(os.environ.get("SLEEP_S", "0"))
        if delay:
            time.sleep(delay)
        return {"who": who, "version": os.environ.get("VERSION", "?"), "replica": os.environ.get("AZUREML_RUN_ID")}
    """
)

SAVE_MLFLOW_MODEL = textwrap.dedent(
    """
    import sys
    import mlflow.sklearn
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LinearRegression().fit(x, 2 * x["a"] + 3 * x["b"] + 1)  # y = 2a + 3b + 1
    mlflow.sklearn.save_model(model, sys.argv[1], pip_requirements=["scikit-learn"])  # no inference: quicker
    """
)


# ---- the workspace --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with served_workspace(tmp_path_factory.mktemp("ws")) as home:
        yield home


@pytest.fixture(scope="module")
def ml(home: Path) -> Any:
    client = MLClient(home=home)
    yield client
    client.close()


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("code")
    (root / "score.py").write_text(SCORE_PY)
    return root


@pytest.fixture(scope="module", autouse=True)
def mlflow_model_saving(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An MLflow model folder (mlflow.sklearn.save_model), saved by a process started with the module:
    importing mlflow takes many seconds, spent while the first tests wait for their replicas."""
    path = tmp_path_factory.mktemp("mlflow") / "linear"
    process = subprocess.Popen([sys.executable, "-c", SAVE_MLFLOW_MODEL, str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    yield process, path
    if process.poll() is None:
        process.kill()
        process.wait()


def deployment(code: Path, endpoint: str, name: str, **extra: Any) -> dict[str, Any]:
    spec = {"name": name, "endpoint_name": endpoint,
            "code_configuration": {"code": str(code), "scoring_script": "score.py"},
            "environment": {"image": IMAGE}, "instance_type": "Standard_DS1_v2", "instance_count": 1,
            "environment_variables": {"WHO": name, "VERSION": "v1"},
            "request_settings": {"request_timeout_ms": 3000},
            "readiness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 30},
            "liveness_probe": {"initial_delay": 1, "period": 1, "timeout": 1, "failure_threshold": 3}}
    return {**spec, **extra}


class Caller:
    """An endpoint's scoring URI with its credential: `post` answers whatever the status."""

    def __init__(self, ml: MLClient, endpoint: str) -> None:
        self.uri = ml.online_endpoints.get(endpoint)["scoring_uri"]
        keys = ml.online_endpoints.get_keys(endpoint)
        self.headers = {"Content-Type": "application/json",
                        "Authorization": f"Bearer {keys.get('primaryKey') or keys.get('accessToken')}"}
        self.client = httpx.Client(timeout=30)

    def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.client.post(self.uri, content=json.dumps(body), headers={**self.headers, **headers})


class Load:
    """Callers that send requests one after another until stopped; every answer is kept in order."""

    def __init__(self, caller_of: Callable[[], Caller], body: dict[str, Any], clients: int = 1) -> None:
        self.body = body
        self.answers: list[tuple[int, dict[str, Any] | str, float]] = []  # (status, body, seconds)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(caller_of(),), daemon=True)
                         for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _loop(self, caller: Caller) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                answer = caller.post(self.body)
                status = answer.status_code
                content = answer.json() if status == 200 else answer.text
            except httpx.HTTPError as exc:
                status, content = -1, repr(exc)
            with self._lock:
                self.answers.append((status, content, time.monotonic() - t0))

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def replicas(self) -> set[str]:
        """The replicas that answered so far."""
        with self._lock:
            return {a[1]["replica"] for a in self.answers if a[0] == 200}


def replicas(ml: MLClient, name: str, endpoint: str) -> list[dict[str, Any]]:
    return ml.online_deployments.get(name, endpoint)["replicas"]


def ready(ml: MLClient, name: str, endpoint: str) -> dict[str, dict[str, Any]]:
    """The Ready replicas, by name."""
    return {r["name"]: r for r in replicas(ml, name, endpoint) if r["ready"]}


# ---- rolling updates and in-place scaling (endpoint `roll`) -------------------------------------


# Requests that take a while, several at each replica at once (max_concurrent_requests_per_instance 4):
# some are queued in a replica's scoring server when it is retired, and must still be answered.
STEADY = {"n": 1, "sleep": {"blue": 0.1}}


def test_a_rolling_update_under_steady_load_fails_no_request(ml: MLClient, code: Path):
    ml.online_endpoints.begin_create_or_update({"name": "roll", "auth_mode": "key"}).result()
    blue = deployment(code, "roll", "blue", instance_count=2,
                      request_settings={"max_concurrent_requests_per_instance": 4, "request_timeout_ms": 3000})
    ml.online_deployments.begin_create_or_update(blue, all_traffic=True).result(timeout=DEPLOY_TIMEOUT_S)
    old = ready(ml, "blue", "roll")
    assert len(old) == 2
    caller = Caller(ml, "roll")
    with Load(lambda: caller, STEADY, clients=6) as load:
        wait_until(lambda: load.count() >= 5, timeout=30, message="the load to start")
        ml.online_deployments.begin_update("blue", "roll", set=["environment_variables.VERSION=v2"]).result(
            timeout=DEPLOY_TIMEOUT_S)
        settled = load.count()
        wait_until(lambda: load.count() >= settled + 5, timeout=30, message="answers after the update")
    failures = [a for a in load.answers if a[0] != 200]
    assert not failures, f"{len(failures)} of {len(load.answers)} requests failed during the update: {failures[:5]}"
    versions = [a[1]["version"] for a in load.answers]
    assert versions[0] == "v1" and "v2" in versions[settled:]
    # Succeeded once the new replicas serve; the old ones drain a moment (out of the routes, answering what
    # the gateway had already sent them, so a v1 answer may still come back just after), then go.
    now = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(replicas(ml, "blue", "roll")), timeout=30,
                     message="the old replicas gone")
    assert all(r["ready"] and r["generation"] == 2 for r in now), now
    assert not set(old) & {r["name"] for r in now}
    after = [caller.post({"n": i}) for i in range(10)]
    assert [(a.status_code, a.json()["version"]) for a in after] == [(200, "v2")] * 10  # only the new version


def test_instance_count_changes_are_applied_in_place(ml: MLClient):
    generation = ml.online_deployments.get("blue", "roll")["generation"]
    two = set(ready(ml, "blue", "roll"))
    caller = Caller(ml, "roll")
    with Load(lambda: caller, STEADY, clients=6) as load:
        ml.online_deployments.begin_update("blue", "roll", set=["instance_count=1"]).result(timeout=DEPLOY_TIMEOUT_S)
        one = wait_until(lambda: (lambda r: r if len(r) == 1 and len(replicas(ml, "blue", "roll")) == 1 else None)(
            ready(ml, "blue", "roll")), timeout=30, message="one replica left")
        assert set(one) <= two  # one of the two stopped; the other kept serving
        ml.online_deployments.begin_update("blue", "roll", set=["instance_count=2"]).result(timeout=DEPLOY_TIMEOUT_S)
        again = ready(ml, "blue", "roll")
        assert len(again) == 2 and set(one) <= set(again)  # one more started beside it
        ml.online_deployments.begin_update("blue", "roll", set=["instance_count=1"]).result(timeout=DEPLOY_TIMEOUT_S)
        wait_until(lambda: len(replicas(ml, "blue", "roll")) == 1, timeout=30, message="back to one replica")
    failures = [a for a in load.answers if a[0] != 200]
    assert not failures, f"{len(failures)} of {len(load.answers)} requests failed while scaling: {failures[:5]}"
    deployment_now = ml.online_deployments.get("blue", "roll")
    assert deployment_now["generation"] == generation
    assert all(r["generation"] == generation for r in deployment_now["replicas"])
    assert set(r["name"] for r in deployment_now["replicas"]) <= set(again)
    assert {a[1]["version"] for a in load.answers} == {"v2"}  # served by the same generation throughout


def test_a_replica_killed_mid_request_answers_quickly_and_is_replaced(ml: MLClient):
    ml.online_deployments.begin_update("blue", "roll", set=["instance_count=2"]).result(timeout=DEPLOY_TIMEOUT_S)
    before = set(ready(ml, "blue", "roll"))
    caller = Caller(ml, "roll")
    t0 = time.monotonic()
    answer = caller.post({"crash": True})
    assert answer.status_code in (502, 424), answer.text
    assert time.monotonic() - t0 < 5
    assert answer.headers.get("ms-azureml-model-error-reason")
    # The gateway keeps serving: the other replica answers, and the dead one is replaced.
    assert wait_until(lambda: caller.post({"n": 1}).status_code == 200, timeout=10)
    replaced = wait_until(lambda: (lambda r: r if len(r) == 2 and len(set(r) - before) == 1 else None)(
        ready(ml, "blue", "roll")), timeout=60, message="a new replica ready in the dead one's place")
    assert len(before & set(replaced)) == 1
    statuses = [caller.post({"n": i}).status_code for i in range(10)]
    assert statuses == [200] * 10


def test_a_replica_whose_liveness_probe_fails_is_restarted(ml: MLClient):
    before = set(ready(ml, "blue", "roll"))
    caller = Caller(ml, "roll")
    stopped = caller.post({"stop": True})  # the replica stops itself (SIGSTOP): its GET / no longer answers
    assert stopped.status_code == 408, stopped.text  # request_timeout_ms 3000
    restarted = wait_until(lambda: [r for r in replicas(ml, "blue", "roll") if "liveness" in (r["reason"] or "")],
                           timeout=30, message="a replica restarted for its liveness probe")
    assert restarted[0]["name"] in before and restarted[0]["state"] in ("Stopping", "Stopped"), restarted
    after = wait_until(lambda: (lambda r: r if len(r) == 2 and len(set(r) - before) == 1 else None)(
        ready(ml, "blue", "roll")), timeout=60, message="a new replica ready in the stopped one's place")
    assert restarted[0]["name"] not in after
    # The stopped process is ended (SIGTERM waits while it is stopped; the SIGKILL after the grace does not).
    assert wait_until(lambda: ml.jobs.get(restarted[0]["name"])["status"] in ("Canceled", "Failed"), timeout=30)
    assert wait_until(lambda: caller.post({"n": 1}).status_code == 200, timeout=10)


# ---- mirrored traffic (endpoint `roll`, green as the shadow) ------------------------------------


def test_mirrored_traffic_reaches_the_shadow_without_slowing_the_caller(ml: MLClient, code: Path, tmp_path: Path):
    log = tmp_path / "green.log"
    green = deployment(code, "roll", "green")
    green["environment_variables"]["REQUEST_LOG"] = str(log)
    ml.online_deployments.begin_create_or_update(green).result(timeout=DEPLOY_TIMEOUT_S)
    ml.online_endpoints.begin_update("roll", traffic={"blue": 100, "green": 0}, mirror_traffic={"green": 50}).result()
    assert ml.online_endpoints.get("roll")["mirror_traffic"] == {"green": 50}
    caller = Caller(ml, "roll")
    n = 200
    answers = [caller.post({"n": i}) for i in range(n)]
    assert all(a.status_code == 200 and a.json()["who"] == "blue" for a in answers)

    def received() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    assert wait_until(lambda: received() >= 0.35 * n, timeout=10, message="green to get about half")
    assert received() <= 0.65 * n, f"green got {received()} of {n} requests"

    # A slow shadow (2 s a request) does not slow the caller: copies are never waited for.
    slow = {"sleep": {"green": 2}}
    t0 = time.monotonic()
    for _ in range(10):
        answer = caller.post(slow)
        assert answer.status_code == 200 and answer.json()["who"] == "blue"
    assert time.monotonic() - t0 < 10, "the caller waited for the mirror"  # 20 s if it had
    ml.online_endpoints.begin_update("roll", mirror_traffic={}).result()


# ---- autoscaling and scale to zero (endpoint `auto`) ------------------------------------------


def test_autoscaling_adds_replicas_under_in_flight_load(ml: MLClient, code: Path):
    """Scale-down waits 60 s (SCALE_DOWN_DELAY_S) by design: not waited for here; that decision is
    covered with a fake clock in tests/unit/planning/test_replicas.py
    (test_scale_down_waits_for_the_cool_down_and_keeps_the_windows_peak,
    test_a_burst_during_the_cool_down_starts_it_again)."""
    ml.online_endpoints.begin_create_or_update({"name": "auto", "auth_mode": "key"}).result()
    spec = deployment(code, "auto", "busy",
                      scale_settings={"type": "target_utilization", "min_instances": 1, "max_instances": 3,
                                      "polling_interval": 1, "target_concurrency": 1},
                      request_settings={"max_concurrent_requests_per_instance": 4, "max_queue_wait_ms": 5000,
                                        "request_timeout_ms": 10000},
                      # run() holds the replica's event loop, so GET / waits behind up to 4 × 0.3 s of
                      # requests: Azure's probe timeout (2 s), not 1 s, or a busy replica is "dead".
                      liveness_probe={"initial_delay": 1, "period": 1, "timeout": 2, "failure_threshold": 3})
    spec["environment_variables"]["SLEEP_S"] = "0.3"
    ml.online_deployments.begin_create_or_update(spec, all_traffic=True).result(timeout=DEPLOY_TIMEOUT_S)
    assert len(ready(ml, "busy", "auto")) == 1
    caller = Caller(ml, "auto")
    with Load(lambda: caller, {"n": 1}, clients=4) as load:
        wait_until(lambda: (ml.online_deployments.get("busy", "auto")["desired_instances"] or 0) > 1, timeout=30,
                   message="the desired count to rise")
        wait_until(lambda: len(ready(ml, "busy", "auto")) >= 2, timeout=60, message="a second replica ready")
        wait_until(lambda: len(load.replicas()) >= 2, timeout=10, message="answers from the new replicas")
    assert all(a[0] == 200 for a in load.answers), [a for a in load.answers if a[0] != 200][:5]


def test_a_deployment_scales_to_zero_when_idle_and_back_on_a_request(ml: MLClient, code: Path):
    ml.online_endpoints.begin_create_or_update({"name": "auto", "auth_mode": "key"}).result()
    spec = deployment(code, "auto", "sleepy",
                      scale_settings={"type": "target_utilization", "min_instances": 0, "max_instances": 1,
                                      "idle_time_before_scale_to_zero": 2})
    # A cold start longer than the gateway's demand window (app.DEMAND_WINDOW_S, 5 s) and the idle window.
    spec["environment_variables"]["INIT_SLEEP_S"] = "6"
    ml.online_deployments.begin_create_or_update(spec).result(timeout=DEPLOY_TIMEOUT_S)
    caller = Caller(ml, "auto")
    first = caller.post({"n": 1}, **{"azureml-model-deployment": "sleepy"})
    assert first.status_code == 200 and first.json()["who"] == "sleepy"
    wait_until(lambda: not replicas(ml, "sleepy", "auto"), timeout=30, message="no replica left")
    assert ml.online_deployments.get("sleepy", "auto")["desired_instances"] == 0
    t0 = time.monotonic()
    answer = caller.post({"n": 2}, **{"azureml-model-deployment": "sleepy"})  # held while a replica starts
    assert answer.status_code == 200, answer.text
    assert answer.json()["who"] == "sleepy" and answer.json()["replica"] != first.json()["replica"]
    assert time.monotonic() - t0 < 60
    assert len(ready(ml, "sleepy", "auto")) == 1


# ---- aml_token auth and an MLflow model without code (endpoint `tok`) ---------------------------


@pytest.fixture(scope="module")
def mlflow_model(mlflow_model_saving: tuple[subprocess.Popen, Path]) -> Path:
    process, path = mlflow_model_saving
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    return path


def test_an_mlflow_model_is_served_without_code_in_its_own_environment(ml: MLClient, mlflow_model: Path):
    ml.online_endpoints.begin_create_or_update({"name": "tok", "auth_mode": "aml_token"}).result()
    spec = {"name": "nocode", "endpoint_name": "tok", "model": {"path": str(mlflow_model), "type": "mlflow_model"},
            "instance_type": "Standard_DS1_v2", "instance_count": 1,
            "readiness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 60},
            "liveness_probe": {"initial_delay": 1, "period": 1}}
    ml.online_deployments.begin_create_or_update(spec, all_traffic=True).result(timeout=DEPLOY_TIMEOUT_S)
    caller = Caller(ml, "tok")
    answer = caller.post({"input_data": {"columns": ["a", "b"], "index": [0], "data": [[4.0, 1.0]]}})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()
    predictions = predictions.get("predictions", predictions) if isinstance(predictions, dict) else predictions
    assert predictions == [pytest.approx(12.0)]
    # Served in the model's own environment (its conda.yaml), as Azure builds it: not the host's Python.
    assert "[cible] inline environment: " in ml.online_deployments.get_logs("nocode", "tok", lines=200)


def test_aml_token_credentials_open_the_endpoint_and_nothing_else_does(ml: MLClient):
    credentials = ml.online_endpoints.get_keys("tok")
    assert set(credentials) >= {"accessToken", "expiryTimeUtc", "tokenType"}
    assert credentials["expiryTimeUtc"] > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    uri = ml.online_endpoints.get("tok")["scoring_uri"]
    body = json.dumps({"input_data": {"columns": ["a", "b"], "index": [0], "data": [[1.0, 0.0]]}})

    def call(bearer: str) -> int:
        return httpx.post(uri, content=body, timeout=30, headers={"Content-Type": "application/json",
                                                                   "Authorization": f"Bearer {bearer}"}).status_code

    token = credentials["accessToken"]
    assert call(token) == 200
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert call(tampered) == 401
    expires, _, mac = token.partition(".")
    assert call(f"{int(expires) + 3600}.{mac}") == 401  # a later expiry under the old signature
    assert call(base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")) == 401  # key-shaped
    assert httpx.post(uri, content=body, timeout=30).status_code == 401
