"""The agent's stdlib HTTP client against a real server on 127.0.0.1: JSON and byte bodies, kept-alive
connections (and one the server closed meanwhile), timeouts, https, and how the agent reads it all:
no answer → ServerGone after looking for the server again, a 5xx → ServerBusy."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cible.agent.agent import Agent, ServerBusy, ServerGone
from cible.agent.http import AgentHttp, TransportError
from cible.testing import wait_until


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 0.5  # the server drops a connection idle this long (as uvicorn does after 5 s)
    seen: list[dict] = []

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.seen.append({"method": self.command, "path": parts.path, "query": parse_qs(parts.query),
                          "port": self.client_address[1], "body": body, "headers": dict(self.headers)})
        if parts.path.startswith("/status/"):  # /status/<code>[/anything]
            self._answer(int(parts.path.split("/")[2]), {"error": "as asked"})
        elif parts.path == "/slow":
            time.sleep(float(parse_qs(parts.query)["s"][0]))
            self._answer(200, {"slept": True})
        else:
            self._answer(200, {"echo": json.loads(body) if self.headers.get("Content-Type") == "application/json"
                               else len(body)})

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def _serving(wrap: ssl.SSLContext | None = None) -> Iterator[tuple[str, list[dict]]]:
    seen: list[dict] = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if wrap is not None:
        server.socket = wrap.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if wrap else 'http'}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_json_in_and_out_over_one_kept_connection():
    http = AgentHttp()
    with _serving() as (url, seen):
        first = http.request("POST", f"{url}/api/heartbeat", json={"runs": [], "wait_s": 0},
                             headers={"Authorization": "Bearer t"})
        second = http.request("POST", f"{url}/api/heartbeat", json={"runs": [1]})
    http.close()
    assert first.status_code == 200 and first.json() == {"echo": {"runs": [], "wait_s": 0}}
    assert second.json() == {"echo": {"runs": [1]}}
    assert seen[0]["headers"]["Authorization"] == "Bearer t"
    assert seen[0]["headers"]["Content-Type"] == "application/json"
    assert seen[0]["port"] == seen[1]["port"]  # the same connection: kept alive


def test_byte_chunks_with_params_and_a_path_that_needs_escaping():
    http = AgentHttp()
    with _serving() as (url, seen):
        answer = http.request("PUT", f"{url}/runs/j1/files/user_logs/a b%c é.txt", content=b"x" * 1000,
                              params={"attempt": 2, "offset": 4096})
    http.close()
    assert answer.json() == {"echo": 1000}
    assert seen[0]["path"] == "/runs/j1/files/user_logs/a%20b%25c%20%C3%A9.txt"
    assert seen[0]["query"] == {"attempt": ["2"], "offset": ["4096"]}


@pytest.mark.parametrize("seen_before_use", [True, False], ids=["seen-before-use", "seen-when-sent"])
def test_a_connection_the_server_closed_while_kept_is_replaced(seen_before_use: bool, monkeypatch):
    if not seen_before_use:  # the close lands between the look and the send: the request gets no answer
        monkeypatch.setattr("cible.agent.http._closed_by_peer", lambda sock: False)
    http = AgentHttp()
    with _serving() as (url, seen):
        http.request("GET", f"{url}/one")
        wait_until(lambda: _closed_by_server(http), 10, interval=0.02,
                   message="the server to close the kept connection (its idle timeout)")
        answer = http.request("POST", f"{url}/two", json={"n": 2})
    http.close()
    assert answer.json() == {"echo": {"n": 2}}
    assert [s["path"] for s in seen] == ["/one", "/two"]  # sent once, on a new connection
    assert seen[0]["port"] != seen[1]["port"]


def test_the_timeout_bounds_each_request_and_a_long_poll_passes_a_longer_one():
    http = AgentHttp(timeout=0.3)
    with _serving() as (url, _):
        started = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            http.request("GET", f"{url}/slow?s=5")
        assert time.monotonic() - started < 3  # not the handler's 5 s
        assert http.request("GET", f"{url}/slow?s=0.6", timeout=2.0).json() == {"slept": True}
    http.close()


def test_no_server_is_a_transport_error_and_an_answer_is_never_one():
    http = AgentHttp(timeout=2.0)
    with pytest.raises(TransportError, match="refused"):
        http.request("GET", f"http://127.0.0.1:{_free_port()}/x")
    with _serving() as (url, _):
        answer = http.request("GET", f"{url}/status/503")
    assert answer.status_code == 503 and answer.json() == {"error": "as asked"}
    with pytest.raises(Exception, match="HTTP 503"):
        answer.raise_for_status()
    with pytest.raises(ValueError, match="not an http"):
        http.request("GET", "ftp://127.0.0.1/x")
    http.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a test certificate")
def test_https_with_a_context_that_trusts_the_server(tmp_path: Path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    with _serving(server_side) as (url, seen):
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):  # the default context: system CAs
            AgentHttp(timeout=5).request("GET", f"{url}/x")
        trusting = AgentHttp(timeout=5, ssl_context=ssl.create_default_context(cafile=str(cert)))
        first = trusting.request("POST", f"{url}/a", json={"tls": True})
        trusting.request("GET", f"{url}/b")
        trusting.close()
    assert first.json() == {"echo": {"tls": True}}
    assert seen[-1]["port"] == seen[-2]["port"]


# -- how the agent reads it -----------------------------------------------------------------------
class _Limits:
    def usage(self) -> dict:
        return {}


def test_the_agent_calls_a_5xx_busy_and_no_answer_gone_after_reading_its_url_file_again(tmp_path: Path):
    with _serving() as (url, seen):
        url_file = tmp_path / "server_url"
        url_file.write_text(url + "\n")
        agent = Agent(node_id="n1", root=tmp_path, url=f"http://127.0.0.1:{_free_port()}", token="tok",
                      limits=_Limits(), url_file=url_file)
        with pytest.raises(ServerGone) as gone:
            agent._call("POST", "/heartbeat", json={"runs": []})
        assert not isinstance(gone.value, ServerBusy)
        assert agent.url == url  # looked for again where the provider keeps the URL
        assert agent._call("POST", "/heartbeat", json={"runs": []}).json() == {"echo": {"runs": []}}
        assert seen[-1]["path"] == "/api/v1/agent/nodes/n1/heartbeat"
        assert seen[-1]["headers"]["Authorization"] == "Bearer tok"
        agent.url = f"{url}/status/502"
        with pytest.raises(ServerBusy, match="502"):
            agent._call("POST", "/heartbeat", json={})
        agent.http.close()


def _closed_by_server(http: AgentHttp) -> bool:
    """Whether the one connection `http` keeps has been closed by the server (EOF waiting on it)."""
    import select
    import socket

    [conn] = [c for kept in http._idle.values() for c in kept]
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return bool(readable) and conn.sock.recv(1, socket.MSG_PEEK) == b""
