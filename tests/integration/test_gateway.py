"""The gateway as a real HTTP server on 127.0.0.1, in front of real replica processes (tiny uvicorn apps
that say which replica answered). Slow replicas sleep on purpose: that is the thing under test; the
tests themselves never sleep to wait, they poll with deadlines."""

from __future__ import annotations

import http.client
import json
import random
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cible.server.gateway import DeploymentRoute, EndpointRoute, Gateway, Replica, RouteTable
from cible.testing import wait_until

# One replica: answers /score with who it is, what it got and (on request) slowly, with a status, chunked;
# GET /count says how many /score requests have arrived.
REPLICA_APP = r'''
import asyncio, json, socket, sys, uvicorn
name, default_sleep = sys.argv[1], float(sys.argv[2])
arrived = [0]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = dict(scope["headers"])
    if scope["path"] == "/count":
        return await reply(send, 200, {"count": arrived[0]})
    if scope["path"] == "/swagger.json":
        return await reply(send, 200, {"swagger": name})
    arrived[0] += 1
    sleep = float(headers.get(b"x-test-sleep", default_sleep))
    if sleep:
        await asyncio.sleep(sleep)
    answer = {"replica": name, "bytes": len(body), "method": scope["method"], "path": scope["path"],
              "query": scope["query_string"].decode(), "auth": headers.get(b"authorization", b"").decode(),
              "pin": headers.get(b"azureml-model-deployment", b"").decode(),
              "custom": headers.get(b"x-custom", b"").decode()}
    if b"x-test-chunked" in headers:
        data = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data[:10], "more_body": True})
        await send({"type": "http.response.body", "body": data[10:]})
        return
    await reply(send, int(headers.get(b"x-test-status", b"200")), answer)

async def reply(send, status, obj):
    data = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off", access_log=False, log_level="warning")
uvicorn.Server(config).run(sockets=[sock])
'''

KEY = "k-good"


class ReplicaProcess:
    def __init__(self, script: Path, name: str, sleep_s: float = 0.0) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(script), name, str(sleep_s)], stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), f"replica {name} did not start"
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._answers, timeout=20, message=f"replica {name} to answer")

    def _answers(self) -> bool:
        try:
            return request(self.port, "/count", method="GET")[0] == 200
        except OSError:
            return False

    def count(self) -> int:
        return json.loads(request(self.port, "/count", method="GET")[2])["count"]

    def replica(self) -> Replica:
        return Replica(self.name, self.url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def request(port: int, path: str, body: bytes = b"{}", headers: dict[str, str] | None = None,
            method: str = "POST", timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body if method != "GET" else None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def score(port: int, endpoint: str = "ep", key: str | None = KEY, **kwargs) -> tuple[int, dict[str, str], bytes]:
    headers = dict(kwargs.pop("headers", None) or {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return request(port, f"/endpoints/{endpoint}/score", headers=headers, **kwargs)


def answered_by(resp: tuple[int, dict[str, str], bytes]) -> str:
    return json.loads(resp[2])["replica"]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> Iterator[dict[str, ReplicaProcess]]:
    script = tmp_path_factory.mktemp("replica") / "replica_app.py"
    script.write_text(REPLICA_APP)
    started: dict[str, ReplicaProcess] = {}
    try:
        for name, sleep_s in (("blue-0", 0.0), ("green-0", 0.0), ("shadow-0", 2.0)):
            started[name] = ReplicaProcess(script, name, sleep_s)
        started["_script"] = script  # type: ignore[assignment]
        yield started
    finally:
        for replica in started.values():
            if isinstance(replica, ReplicaProcess):
                replica.stop()


class Credentials:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.demands: list[tuple[str, str]] = []

    def check(self, endpoint: str, auth_mode: str, bearer: str) -> bool:
        self.calls.append((endpoint, auth_mode, bearer))
        return bearer == KEY

    def on_demand(self, endpoint: str, deployment: str) -> None:
        self.demands.append((endpoint, deployment))


@pytest.fixture
def creds() -> Credentials:
    return Credentials()


@pytest.fixture
def gateway(creds: Credentials) -> Iterator[Gateway]:
    gw = Gateway(creds.check, creds.on_demand, max_body_bytes=1000, rng=random.Random(5))
    gw.start("127.0.0.1", 0)
    try:
        yield gw
    finally:
        gw.stop()


def table(*endpoints: EndpointRoute) -> RouteTable:
    return RouteTable({e.name: e for e in endpoints})


def endpoint(deployments: list[DeploymentRoute], traffic: dict[str, int], name: str = "ep", auth: str = "key",
             mirror: dict[str, int] | None = None) -> EndpointRoute:
    return EndpointRoute(name, auth, {d.name: d for d in deployments}, traffic, mirror or {})


def blue_green(replicas, blue: int = 50, green: int = 50, **settings) -> EndpointRoute:
    return endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),), **settings),
                     DeploymentRoute("green", (replicas["green-0"].replica(),), **settings)],
                    {"blue": blue, "green": green})


# ---- auth --------------------------------------------------------------------------------------------


def test_a_key_endpoint_wants_a_good_bearer_credential(gateway, replicas, creds) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    port = gateway.port
    status, headers, _ = score(port, key=None)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert score(port, key="wrong")[0] == 401
    assert request(port, "/endpoints/ep/score", headers={"Authorization": KEY})[0] == 401  # raw key: not Bearer
    ok = score(port)
    assert ok[0] == 200 and answered_by(ok) == "blue-0"
    assert ("ep", "key", KEY) in creds.calls and ("ep", "key", "wrong") in creds.calls
    assert json.loads(ok[2])["auth"] == "", "the credential must not reach the scoring script"


def test_an_auth_none_endpoint_needs_no_credential(gateway, replicas, creds) -> None:
    gateway.publish(table(endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),))], {"blue": 100},
                                   auth="none")))
    assert score(gateway.port, key=None)[0] == 200
    assert creds.calls == []


# ---- routing -----------------------------------------------------------------------------------------


def test_traffic_is_split_by_weight_over_many_requests(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 50, 50)))
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)  # one keep-alive connection
    seen: Counter = Counter()
    for _ in range(400):
        conn.request("POST", "/endpoints/ep/score", body=b"{}", headers={"Authorization": f"Bearer {KEY}"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        replica = json.loads(body)["replica"]
        assert response.getheader("azureml-model-deployment") == replica.split("-")[0]
        seen[replica] += 1
    conn.close()
    assert 150 <= seen["blue-0"] <= 250 and seen["blue-0"] + seen["green-0"] == 400, seen


def test_the_deployment_header_pins_even_a_zero_traffic_deployment(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    port = gateway.port
    for _ in range(5):
        pinned = score(port, headers={"azureml-model-deployment": "green"})
        assert pinned[0] == 200 and answered_by(pinned) == "green-0"
        assert pinned[1]["azureml-model-deployment"] == "green"
        assert json.loads(pinned[2])["pin"] == "green"  # the header reaches the scoring script too
    assert {answered_by(score(port)) for _ in range(10)} == {"blue-0"}


def test_unknown_endpoint_deployment_and_paths_are_404(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas)))
    port = gateway.port
    status, _, body = score(port, headers={"azureml-model-deployment": "purple"})
    assert status == 404 and b"purple" in body
    assert score(port, endpoint="nope")[0] == 404
    assert request(port, "/endpoints/ep/predict")[0] == 404
    assert request(port, "/score")[0] == 404


def test_no_traffic_and_no_replicas_are_503(gateway, replicas) -> None:
    idle = endpoint([DeploymentRoute("blue", ())], {"blue": 100}, name="idle")
    gateway.publish(table(blue_green(replicas, 0, 0), idle))
    assert score(gateway.port)[0] == 503
    status, headers, _ = score(gateway.port, endpoint="idle")
    assert status == 503 and headers["azureml-model-deployment"] == "blue"


def test_query_custom_headers_swagger_and_the_endpoint_root(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    port = gateway.port
    status, _, body = request(port, "/endpoints/ep/score?verbose=1",
                              headers={"Authorization": f"Bearer {KEY}", "X-Custom": "abc"})
    answer = json.loads(body)
    assert status == 200 and answer["query"] == "verbose=1" and answer["custom"] == "abc"
    assert answer["path"] == "/score"
    status, _, body = request(port, "/endpoints/ep/swagger.json", method="GET",
                              headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200 and json.loads(body) == {"swagger": "blue-0"}
    assert request(port, "/endpoints/ep/", method="GET")[0] == 200
    get = request(port, "/endpoints/ep/score", method="GET", headers={"Authorization": f"Bearer {KEY}"})
    assert get[0] == 200 and json.loads(get[2])["method"] == "GET"


def test_a_chunked_replica_answer_is_passed_on_whole(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    status, headers, body = score(gateway.port, headers={"x-test-chunked": "1"})
    assert status == 200 and answered_by((status, headers, body)) == "blue-0"
    assert int(headers["content-length"]) == len(body)


# ---- limits ------------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    port = gateway.port
    fits = score(port, body=b"x" * 1000)
    assert fits[0] == 200 and json.loads(fits[2])["bytes"] == 1000
    assert score(port, body=b"x" * 1001)[0] == 413
    # without a Content-Length (chunked upload): counted while read
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/endpoints/ep/score", body=iter([b"x" * 600, b"x" * 600]),
                 headers={"Authorization": f"Bearer {KEY}"}, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert Gateway(lambda *a: True, lambda *a: None).max_body_bytes == 1536 * 1024


def test_busy_slots_queue_then_429(gateway, replicas) -> None:
    blue = replicas["blue-0"].replica()
    gateway.publish(table(
        endpoint([DeploymentRoute("blue", (blue,), max_concurrent_requests_per_instance=1, max_queue_wait_ms=200)],
                 {"blue": 100}),
        endpoint([DeploymentRoute("blue", (blue,), max_concurrent_requests_per_instance=1,
                                  max_queue_wait_ms=10000)], {"blue": 100}, name="patient")))
    port = gateway.port
    results: dict[str, tuple] = {}

    def slow(tag: str, name: str) -> None:
        results[tag] = score(port, endpoint=name, headers={"x-test-sleep": "1.5"})

    first = threading.Thread(target=slow, args=("first", "ep"))
    first.start()
    wait_until(lambda: gateway.stats("ep")["blue"]["in_flight"] == 1, timeout=10, message="the slot to be taken")
    started = time.monotonic()
    status, headers, _ = score(port)
    waited = time.monotonic() - started
    assert status == 429 and headers["azureml-model-deployment"] == "blue"
    assert 0.15 <= waited < 1.4, waited
    first.join(10)
    assert results["first"][0] == 200

    # a queue long enough: the second request waits for the first and is served
    first = threading.Thread(target=slow, args=("first", "patient"))
    first.start()
    wait_until(lambda: gateway.stats("patient")["blue"]["in_flight"] == 1, timeout=10, message="the slot")
    second = threading.Thread(target=lambda: results.__setitem__("second", score(port, endpoint="patient")))
    second.start()
    wait_until(lambda: gateway.stats("patient")["blue"]["queued"] == 1, timeout=10, message="a queued request")
    first.join(10)
    second.join(10)
    assert results["first"][0] == 200 and results["second"][0] == 200
    assert gateway.stats("ep")["blue"]["errors"] == 1


def test_past_the_request_timeout_is_408_and_the_deployment_goes_on(gateway, replicas) -> None:
    gateway.publish(table(endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),),
                                                    request_timeout_ms=300)], {"blue": 100})))
    started = time.monotonic()
    status, headers, body = score(gateway.port, headers={"x-test-sleep": "10"})
    assert status == 408 and b"300 ms" in body and headers["azureml-model-deployment"] == "blue"
    assert time.monotonic() - started < 5  # not the replica's 10 s
    assert score(gateway.port)[0] == 200


def test_a_replica_error_is_passed_through_with_the_model_error_headers(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    status, headers, body = score(gateway.port, headers={"x-test-status": "500"})
    assert status == 500 and answered_by((status, headers, body)) == "blue-0"
    assert headers["ms-azureml-model-error-statuscode"] == "500"
    assert headers["ms-azureml-model-error-reason"] == "model_error"
    assert headers["azureml-model-deployment"] == "blue"
    ok = score(gateway.port)
    assert ok[0] == 200 and "ms-azureml-model-error-statuscode" not in ok[1]


def test_a_replica_killed_mid_request_is_424_never_a_hang(gateway, replicas) -> None:
    doomed = ReplicaProcess(replicas["_script"], "doomed-0")
    try:
        gateway.publish(table(
            endpoint([DeploymentRoute("red", (doomed.replica(),), request_timeout_ms=60000)], {"red": 100}),
            endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),))], {"blue": 100}, name="other")))
        port = gateway.port
        assert score(port)[0] == 200  # a pooled keep-alive connection to it now exists
        result: dict[str, tuple] = {}
        caller = threading.Thread(target=lambda: result.__setitem__("r", score(port, headers={"x-test-sleep": "30"})))
        caller.start()
        wait_until(lambda: gateway.stats("ep")["red"]["in_flight"] == 1, timeout=30, message="the request in flight")
        doomed.stop()  # SIGKILL mid-request
        # A gateway that hung would wait out the 60 s request timeout; the bounds below stay well
        # under it and well over what a loaded 2-core machine needs.
        caller.join(30)
        assert not caller.is_alive(), "the gateway hung on a dead replica"
        status, headers, _ = result["r"]
        assert status == 424 and headers["ms-azureml-model-error-reason"] == "replica_unreachable"
        # its port is closed now: refused at once, still 424
        started = time.monotonic()
        assert score(port)[0] == 424
        assert time.monotonic() - started < 30
        # and the gateway serves on
        assert score(port, endpoint="other")[0] == 200
        assert gateway.stats("ep")["red"]["errors"] == 2
    finally:
        doomed.stop()


class RawReplica(socketserver.ThreadingTCPServer):
    """A hand-written HTTP/1.1 replica for what a well-behaved server never does. `mode`:
    "close-second": answers the first request of each connection, closes on the second without a word
    (what a keep-alive timeout racing with a request looks like); "close": closes on every request;
    "garbage": answers something that is not HTTP; "eof": a body delimited by closing the connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _RawHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RawHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: RawReplica = self.server  # type: ignore[assignment]
        stream = self.request.makefile("rb")
        on_this_connection = 0
        while True:
            length = None
            line = stream.readline()
            if not line:
                return
            while line not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                line = stream.readline()
            stream.read(length or 0)
            server.requests += 1
            on_this_connection += 1
            if server.mode == "close" or (server.mode == "close-second" and on_this_connection == 2):
                return
            if server.mode == "garbage":
                self.request.sendall(b"SPEAKING IN TONGUES\r\n\r\n")
                return
            body = json.dumps({"replica": "raw", "on_connection": on_this_connection}).encode()
            if server.mode == "eof":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body)
                return
            self.request.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


@pytest.mark.parametrize("mode", ["close-second", "close", "garbage", "eof"])
def test_resending_and_replicas_that_misbehave(gateway, mode: str) -> None:
    raw = RawReplica(mode)
    try:
        gateway.publish(table(endpoint([DeploymentRoute("raw", (Replica("raw-0", raw.url),))], {"raw": 100})))
        answers = [score(gateway.port) for _ in range(3)]
        if mode == "close-second":
            # the reused connection closed before any answer: resent once, on a fresh connection
            assert [a[0] for a in answers] == [200] * 3
            assert [json.loads(a[2])["on_connection"] for a in answers] == [1, 1, 1]
            assert raw.requests == 5
        elif mode == "close":
            # a fresh connection that closes is a dead replica: 424, and never sent twice
            assert [a[0] for a in answers] == [424] * 3 and raw.requests == 3
        elif mode == "garbage":
            assert [a[0] for a in answers] == [502] * 3 and raw.requests == 3
        else:
            assert [a[0] for a in answers] == [200] * 3 and answered_by(answers[0]) == "raw"
    finally:
        raw.shutdown()
        raw.server_close()


# ---- the HTTP side -----------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, until: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send `data` as is and read until the gateway closes or `until` has arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        while not (until and until in got):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pipelined_requests_are_answered_in_order(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    one = (b"POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nx-test-sleep: %s\r\n"
           b"Content-Length: 2\r\n\r\n{}")
    data = one % (KEY.encode(), b"0.3") + one % (KEY.encode(), b"0") + b"GET /endpoints/ep/ HTTP/1.1\r\nHost: x\r\n\r\n"
    got = raw_exchange(gateway.port, data, until=b"Healthy")
    assert got.count(b"HTTP/1.1 200 OK") == 3
    first, second = got.index(b'"replica"'), got.index(b'"replica"', got.index(b'"replica"') + 1)
    assert first < second < got.index(b"Healthy")


def test_expect_continue_connection_close_and_http_1_0(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    port = gateway.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"abcd")
        got = b""
        while b'"bytes": 4' not in got:
            got += sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 OK")
    # a refused request with Expect gets its answer at once, not a 100
    got = raw_exchange(port, b"POST /endpoints/ep/score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 4\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 401")
    got = raw_exchange(port, b"GET /endpoints/ep/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and b"connection: close" in got.lower()  # and it closed: recv ended
    got = raw_exchange(port, b"GET /endpoints/ep/ HTTP/1.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200") and b"Healthy" in got


def test_malformed_requests_and_huge_headers_are_refused(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    assert raw_exchange(gateway.port, b"THIS IS NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET /endpoints/ep/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw_exchange(gateway.port, huge).startswith(b"HTTP/1.1 431")
    assert score(gateway.port)[0] == 200


def test_a_header_line_that_never_ends_is_refused_before_it_grows_and_a_long_pipeline_is_answered(
        gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /endpoints/ep/ HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        got = b""
        try:
            for _ in range(64):  # 4 MiB of one header value, never ended: refused long before the end
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while chunk := sock.recv(65536):
            got += chunk
        assert got.startswith(b"HTTP/1.1 431")
    many = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * 3000 + b"GET /endpoints/ep/ HTTP/1.1\r\nHost: x\r\n\r\n"
    got = raw_exchange(gateway.port, many, until=b"Healthy", timeout=30)
    assert got.count(b"HTTP/1.1 404") == 3000 and got.endswith(b"Healthy\"}")  # in order, no recursion


def test_a_big_upload_over_the_limit_gets_its_413_not_a_reset(gateway, replicas) -> None:
    gateway.publish(table(blue_green(replicas, 100, 0)))
    status, headers, _ = score(gateway.port, body=b"x" * (4 * 1024 * 1024))
    assert status == 413 and headers.get("connection") == "close"


def test_idle_client_connections_are_closed(creds, replicas) -> None:
    gw = Gateway(creds.check, creds.on_demand, keep_alive_s=1)
    port = gw.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /endpoints/ep/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 404")
            started = time.monotonic()
            assert sock.recv(65536) == b""  # blocks until the gateway closes the idle connection
            assert time.monotonic() - started < 5
    finally:
        gw.stop()


# ---- mirror ------------------------------------------------------------------------------------------


def test_mirrored_copies_reach_the_shadow_without_slowing_the_caller(gateway, replicas) -> None:
    shadow = replicas["shadow-0"]  # sleeps 2 s on every request
    before = shadow.count()
    route = endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),)),
                      DeploymentRoute("shadow", (shadow.replica(),), max_concurrent_requests_per_instance=200,
                                      request_timeout_ms=10000)],
                     {"blue": 100, "shadow": 0}, mirror={"shadow": 20})
    gateway.publish(table(route))
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    slowest = 0.0
    for _ in range(200):
        started = time.monotonic()
        conn.request("POST", "/endpoints/ep/score", body=b"{}", headers={"Authorization": f"Bearer {KEY}"})
        response = conn.getresponse()
        body = response.read()
        slowest = max(slowest, time.monotonic() - started)
        assert response.status == 200 and json.loads(body)["replica"] == "blue-0"
        assert response.getheader("azureml-model-deployment") == "blue"
    conn.close()
    assert slowest < 1.0, f"a caller waited {slowest:.2f} s: the 2 s shadow slowed it"
    copies = shadow.count() - before
    assert 20 <= copies <= 65, copies  # 20 % of 200, binomial sd ~5.7
    # the copies finish in the background and are counted for the shadow
    wait_until(lambda: gateway.stats("ep")["shadow"]["in_flight"] == 0, timeout=15, message="copies to finish")
    shadow_stats = gateway.stats("ep")["shadow"]
    assert shadow_stats["p50_ms"] >= 1900 and shadow_stats["errors"] == 0
    # pinned requests are never copied
    before = shadow.count()
    for _ in range(30):
        assert score(gateway.port, headers={"azureml-model-deployment": "blue"})[0] == 200
    assert shadow.count() == before


# ---- scale from zero and publishing ------------------------------------------------------------------


def test_scale_from_zero_waits_for_the_first_replica(gateway, replicas, creds) -> None:
    cold = endpoint([DeploymentRoute("blue", (), scale_from_zero=True)], {"blue": 100})
    gateway.publish(table(cold))
    result: dict[str, tuple] = {}
    caller = threading.Thread(target=lambda: result.__setitem__("r", score(gateway.port)))
    caller.start()
    wait_until(lambda: ("ep", "blue") in creds.demands, timeout=10, message="on_demand to be called")
    wait_until(lambda: gateway.stats("ep")["blue"]["queued"] == 1, timeout=10, message="the request to wait")
    assert caller.is_alive() and "r" not in result
    warm = endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),), scale_from_zero=True)], {"blue": 100})
    gateway.publish(table(warm))
    caller.join(10)
    assert result["r"][0] == 200 and answered_by(result["r"]) == "blue-0"


def test_publishing_while_requests_are_in_flight_drops_none(gateway, replicas) -> None:
    gateway.publish(table(endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),),
                                                    max_concurrent_requests_per_instance=8)], {"blue": 100})))
    port = gateway.port
    results: list[tuple] = []
    callers = [threading.Thread(target=lambda: results.append(score(port, headers={"x-test-sleep": "0.8"})))
               for _ in range(4)]
    for caller in callers:
        caller.start()
    wait_until(lambda: gateway.stats("ep")["blue"]["in_flight"] == 4, timeout=10, message="4 requests in flight")
    # blue's replica leaves the table and green takes the traffic, while blue's requests are in flight
    gateway.publish(table(endpoint([DeploymentRoute("blue", ()),
                                    DeploymentRoute("green", (replicas["green-0"].replica(),))],
                                   {"blue": 0, "green": 100})))
    assert answered_by(score(port)) == "green-0"
    for caller in callers:
        caller.join(10)
    assert [r[0] for r in results] == [200] * 4 and {answered_by(r) for r in results} == {"blue-0"}


def test_stats_show_requests_latencies_errors_and_mean_in_flight(gateway, replicas) -> None:
    gateway.publish(table(endpoint([DeploymentRoute("blue", (replicas["blue-0"].replica(),),
                                                    max_concurrent_requests_per_instance=4)], {"blue": 100})))
    port = gateway.port
    for _ in range(20):
        assert score(port)[0] == 200
    for _ in range(3):
        assert score(port, headers={"x-test-status": "503"})[0] == 503
    callers = [threading.Thread(target=score, args=(port,), kwargs={"headers": {"x-test-sleep": "1"}})
               for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    stats = gateway.stats("ep")["blue"]
    assert stats["requests_per_s"] > 0 and stats["errors"] == 3
    assert 0 < stats["p50_ms"] < 500 and stats["p99_ms"] >= 900
    assert stats["in_flight"] == 0 and stats["queued"] == 0
    mean = gateway.in_flight("ep", "blue", window_s=10)
    assert 0.1 < mean < 0.5, mean  # two 1 s requests in a 10 s window: ~0.2
    assert gateway.stats("nope") == {} and gateway.in_flight("ep", "nope") == 0.0


def test_stop_is_clean_frees_the_port_and_a_restart_serves_the_last_table(creds, replicas) -> None:
    gw = Gateway(creds.check, creds.on_demand)
    gw.publish(table(blue_green(replicas, 100, 0)))  # before start: applied when it starts
    port = gw.start("127.0.0.1", 0)
    assert score(port)[0] == 200
    threads = threading.active_count()
    gw.stop()
    assert threading.active_count() <= threads - 1
    with pytest.raises(OSError):
        request(port, "/endpoints/ep/score", timeout=2)
    port = gw.start("127.0.0.1", 0)
    try:
        assert answered_by(score(port)) == "blue-0"
    finally:
        gw.stop()
