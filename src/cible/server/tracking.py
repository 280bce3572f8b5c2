"""MLflow's own tracking server, run as a supervised child, behind the workspace token.

The workspace keeps its MLflow runs in ``$CIBLE_HOME/mlflow/`` (``mlflow.db``, a SQLite
tracking and registry store, and ``artifacts/``, served by MLflow's artifact proxy). MLflow
itself is never imported by the workspace server: `TrackingServer` starts MLflow's server in a
child process (``python -m cible.server.tracking HOME PORT``, one process: MLflow's FastAPI app
on a single uvicorn worker) on 127.0.0.1, with the static prefix ``/mlflow`` so the child serves
the very paths the workspace proxies (tracking_proxy). The child answers only requests that
carry a secret this server handed it on its stdin, so no other local process can read or write
the workspace's runs behind the workspace's token check.

Nothing is lost when either process dies: runs are in SQLite on disk, a dead child is
restarted on next use, and MLflow clients retry a 503 or a refused connection. The child holds
a pipe from the server on its stdin and ends itself when the pipe closes, so it does not
outlive the workspace server, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import hmac
import http.client
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cible.core.errors import TrackingUnavailableError
from cible.workspace import restrict_mode

if TYPE_CHECKING:  # imported on first use: the workspace server starts without it
    import httpx

log = logging.getLogger("cible.server.tracking")

PREFIX = "/mlflow"
HEALTH_PATH = f"{PREFIX}/health"
API = f"{PREFIX}/api/2.0/mlflow"
DEFAULT_WAIT_S = 60.0  # how long a proxied request waits for a child that is (re)starting
RESTART_MIN_INTERVAL_S = 2.0  # a child that keeps dying is not respawned more often than this
LOG_ROTATE_BYTES = 10 * 1024 * 1024

# The child answers only requests that carry the secret it was given on its stdin at start: any
# other local process reaching its loopback port gets a 403 (the workspace's token guards the proxy).
SECRET_HEADER = "x-cible-tracking-secret"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrackingServer:
    """MLflow's tracking server for one workspace: a child process, started and restarted on demand.

    The workspace server starts it on first use: `ensure_running()` (or `start()`) returns at once
    (the child needs seconds to import MLflow); `ready(timeout)` and `await wait_ready(timeout)`
    start it when it does not run and wait for it. Every use restarts a child that died, unless
    `stop()` was called. Thread-safe.
    """

    def __init__(self, home: Path, *, python: str | None = None) -> None:
        self.home = Path(home)
        self.dir = self.home / "mlflow"
        self.db_path = self.dir / "mlflow.db"
        self.artifacts_dir = self.dir / "artifacts"
        self.log_path = self.dir / "server.log"
        self.python = python or sys.executable
        self.restarts = 0  # children respawned after dying (not counting the first start)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None
        self._ready_proc: subprocess.Popen | None = None  # the child that answered its health check
        self._last_spawn = float("-inf")
        self._stopped = False
        self._clients: dict[int, httpx.AsyncClient] = {}  # one per event loop (see client())
        self.secret = secrets.token_urlsafe(32)  # only this process and its child know it

    @property
    def auth_headers(self) -> dict[str, str]:
        """What every request to the child carries."""
        return {SECRET_HEADER: self.secret}

    # -- facts ---------------------------------------------------------------
    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.db_path}"

    @property
    def url(self) -> str | None:
        """The child's direct base URL (http://127.0.0.1:PORT), or None before the first start.

        MLflow answers under /mlflow there too: the tracking URI of a direct client is
        ``url + "/mlflow"``; each request carries `auth_headers`.
        """
        return f"http://127.0.0.1:{self._port}" if self._port else None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def is_ready(self) -> bool:
        """True while the child that answered its health check still runs (no I/O)."""
        proc = self._proc
        return proc is not None and proc is self._ready_proc and proc.poll() is None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Spawn the child if it does not run; returns without waiting for it."""
        with self._lock:
            self._stopped = False
            self._ensure_locked(force=True)

    def ensure_running(self) -> subprocess.Popen | None:
        """The running child, respawning a dead one (at most every RESTART_MIN_INTERVAL_S)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        with self._lock:
            return self._ensure_locked(force=False)

    def _ensure_locked(self, force: bool) -> subprocess.Popen | None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if self._stopped:
            return None
        if proc is not None:
            if not force and time.monotonic() - self._last_spawn < RESTART_MIN_INTERVAL_S:
                return None
            log.warning("the MLflow tracking server (pid %s) exited with %s; restarting it (log: %s)",
                        proc.pid, proc.returncode, self.log_path)
            self.restarts += 1
        self._spawn()
        return self._proc

    def command(self, port: int) -> list[str]:
        """The child's command line (tests replace it with a fake upstream)."""
        return [self.python, "-m", "cible.server.tracking", str(self.home), str(port)]

    def _spawn(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        restrict_mode(self.dir, 0o700)  # MLflow's database and artifacts: the server's alone
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_suffix(".log.1"))
        except FileNotFoundError:
            pass
        port = _free_port()
        env = dict(os.environ)
        env.pop("CIBLE_TOKEN", None)
        env["PYTHONUNBUFFERED"] = "1"
        with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
            logf.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting on 127.0.0.1:{port}\n".encode())
            logf.flush()
            # stdin is a pipe that only this process holds: when it closes (stop(), or this
            # process dies however it dies) the child reads EOF and ends itself.
            # Own session: a Ctrl-C meant for the server's terminal does not hit it mid-request.
            proc = subprocess.Popen(
                self.command(port), stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT,
                env=env, cwd=self.dir, start_new_session=True,
            )
        try:  # the secret goes down the pipe: never on a command line or in an environment
            proc.stdin.write(self.secret.encode() + b"\n")
            proc.stdin.flush()
        except OSError:  # it died at once: seen as any dead child is
            pass
        self._ready_proc = None
        self._port = port
        self._proc = proc
        self._last_spawn = time.monotonic()
        log.info("MLflow tracking server starting: pid %s on 127.0.0.1:%s", proc.pid, port)

    def stop(self, timeout: float = 10.0) -> None:
        """End the child (SIGTERM to its process group, SIGKILL after `timeout`); no restart after."""
        with self._lock:
            self._stopped = True
            proc, self._proc, self._ready_proc = self._proc, None, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if proc.poll() is None:
            # The whole group (the child leads a session of its own): whatever it started goes too.
            # (Signalled only while the leader is unreaped, so the group id cannot be reused.)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()

    async def aclose(self) -> None:
        """Close the proxy's HTTP clients (call from the app's lifespan, before `stop()`)."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await client.aclose()
            except RuntimeError:  # its event loop is gone
                pass

    # -- readiness -------------------------------------------------------------
    def ready(self, timeout: float = 0.0) -> bool:
        """Whether the child answers; polls its health check for up to `timeout` seconds (blocking)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.ensure_running()
            if proc is not None:
                if self.is_ready and proc is self._proc:
                    return True
                if self._health_sync():
                    self._mark_ready(proc)
                    return True
            if time.monotonic() >= deadline or self._stopped:
                return False
            time.sleep(0.1)  # polling a starting process, bounded by the deadline

    async def wait_ready(self, timeout: float = DEFAULT_WAIT_S) -> bool:
        """`ready` for the event loop: never blocks it."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.ensure_running()
            if proc is not None:
                if self.is_ready and proc is self._proc:
                    return True
                if await self._health_async():
                    self._mark_ready(proc)
                    return True
            if time.monotonic() >= deadline or self._stopped:
                return False
            await asyncio.sleep(0.1)  # polling a starting process, bounded by the deadline

    def _mark_ready(self, proc: subprocess.Popen) -> None:
        with self._lock:
            if proc is self._proc and proc.poll() is None:
                if self._ready_proc is not proc:
                    log.info("MLflow tracking server ready: pid %s at %s", proc.pid, self.url)
                self._ready_proc = proc

    def _health_sync(self) -> bool:
        port = self._port
        if port is None:
            return False
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", HEALTH_PATH, headers=self.auth_headers)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    async def _health_async(self) -> bool:
        import httpx

        url = self.url
        if url is None:
            return False
        try:
            response = await self.client().get(url + HEALTH_PATH, timeout=2)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    def client(self) -> httpx.AsyncClient:
        """The proxy's HTTP client for the running event loop (kept: connections are reused)."""
        import httpx

        from cible.client.http import tls_verify

        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=10, read=None, write=None, pool=None),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                follow_redirects=False, trust_env=False, headers=self.auth_headers, verify=tls_verify(self.url),
            )
            self._clients[id(loop)] = client
        return client

    def unavailable_message(self) -> str:
        if self._stopped:
            return "the workspace's MLflow tracking server is stopped (the workspace server is shutting down)"
        message = "the workspace's MLflow tracking server is not answering yet; retry shortly"
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            message = (f"the workspace's MLflow tracking server exited with code {proc.returncode}; "
                       f"see {self.log_path}{_tail(self.log_path)}")
        return message


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 5) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            last = fh.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return ""
    return (": ...\n" + "\n".join(last)) if last else ""


# -- reading a run, for `cible job show` ------------------------------------------------
def run_metrics(tracking: TrackingServer, run_id: str, *, timeout: float = 10.0) -> dict[str, Any] | None:
    """The run's latest metrics, its params, ids, MLflow status and artifact URI; None if no such run.

    Raises TrackingUnavailableError when the child does not answer within `timeout`.
    """
    import httpx

    from cible.client.http import tls_verify

    if not tracking.ready(timeout):
        raise TrackingUnavailableError(tracking.unavailable_message())
    try:
        response = httpx.get(f"{tracking.url}{API}/runs/get", params={"run_id": run_id}, timeout=timeout,
                             trust_env=False, headers=tracking.auth_headers, verify=tls_verify(tracking.url))
    except httpx.HTTPError as exc:
        raise TrackingUnavailableError(f"the workspace's MLflow tracking server did not answer: {exc}") from None
    if response.status_code == 404 or (response.status_code == 400 and "DOES_NOT_EXIST" in response.text):
        return None
    if response.status_code != 200:
        raise TrackingUnavailableError(
            f"the MLflow tracking server answered {response.status_code} for run {run_id}: {response.text[:500]}")
    run = response.json()["run"]
    info, data = run.get("info", {}), run.get("data", {})
    return {
        "run_id": info.get("run_id") or run_id,
        "experiment_id": info.get("experiment_id"),
        "run_name": info.get("run_name"),
        "status": info.get("status"),
        "artifact_uri": info.get("artifact_uri"),
        # runs/get returns each metric's latest value (highest step, then latest timestamp)
        "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
        "params": {p["key"]: p["value"] for p in data.get("params", [])},
    }


def metric_history(tracking: TrackingServer, run_id: str, key: str, *, timeout: float = 10.0) -> list[float]:
    """Every value of metric `key` the run logged, in logged order (by step, then time); [] if none.

    Raises TrackingUnavailableError when the child does not answer within `timeout`.
    """
    return metric_points(tracking, run_id, key, timeout=timeout)[1]


def metric_points(tracking: TrackingServer, run_id: str, key: str, *,
                  timeout: float = 10.0) -> tuple[list[int], list[float]]:
    """Metric `key` as the run logged it: (steps, values), in logged order (by step, then time);
    ([], []) if none. The studio's charts draw it (x = step).

    Raises TrackingUnavailableError when the child does not answer within `timeout`.
    """
    import httpx

    from cible.client.http import tls_verify

    if not tracking.ready(timeout):
        raise TrackingUnavailableError(tracking.unavailable_message())
    try:
        response = httpx.get(f"{tracking.url}{API}/metrics/get-history", timeout=timeout, trust_env=False,
                             params={"run_id": run_id, "metric_key": key, "max_results": 25000},
                             headers=tracking.auth_headers, verify=tls_verify(tracking.url))
    except httpx.HTTPError as exc:
        raise TrackingUnavailableError(f"the workspace's MLflow tracking server did not answer: {exc}") from None
    if response.status_code in (400, 404) and "DOES_NOT_EXIST" in response.text:
        return [], []
    if response.status_code != 200:
        raise TrackingUnavailableError(
            f"the MLflow tracking server answered {response.status_code} for run {run_id}: {response.text[:500]}")
    metrics = response.json().get("metrics", [])
    metrics.sort(key=lambda m: (int(m.get("step", 0)), int(m.get("timestamp", 0))))
    return [int(m.get("step", 0)) for m in metrics], [float(m["value"]) for m in metrics]


# -- the child: MLflow's server in one process -------------------------------------------
# Names that MLflow's CLI sets for its workers (mlflow.server.constants / handlers); verified
# against the installed MLflow before use: an MLflow whose internals differ is not served, since
# its own `mlflow server` could not be kept behind the secret.
_MLFLOW_ENV_NAMES = {
    "BACKEND_STORE_URI_ENV_VAR": "_MLFLOW_SERVER_FILE_STORE",
    "REGISTRY_STORE_URI_ENV_VAR": "_MLFLOW_SERVER_REGISTRY_STORE",
    "ARTIFACT_ROOT_ENV_VAR": "_MLFLOW_SERVER_ARTIFACT_ROOT",
    "SERVE_ARTIFACTS_ENV_VAR": "_MLFLOW_SERVER_SERVE_ARTIFACTS",
    "ARTIFACTS_DESTINATION_ENV_VAR": "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
}
_STATIC_PREFIX_ENV = "_MLFLOW_STATIC_PREFIX"


def _child_main(home: Path, port: int) -> int:
    """`python -m cible.server.tracking HOME PORT`: serve the workspace's MLflow store on 127.0.0.1:PORT."""
    store = home / "mlflow"
    backend = f"sqlite:///{store / 'mlflow.db'}"
    artifacts = str(store / "artifacts")
    if not stat.S_ISFIFO(os.fstat(0).st_mode):
        print("cible: the tracking child is started by the workspace server (its secret comes on stdin)",
              file=sys.stderr)
        return 2
    secret = sys.stdin.buffer.readline().strip()
    _watch_stdin()
    values = {
        "_MLFLOW_SERVER_FILE_STORE": backend,
        "_MLFLOW_SERVER_REGISTRY_STORE": backend,
        "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": artifacts,
        _STATIC_PREFIX_ENV: PREFIX,
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
    }
    os.environ.update(values)  # before MLflow is imported: its routes read the prefix at import
    # MLflow's background job runner (LLM judges, trace rollups) is not needed here: one process.
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    try:
        from mlflow.server import constants, handlers

        known = all(getattr(constants, attr) == name for attr, name in _MLFLOW_ENV_NAMES.items())
        known = known and handlers.STATIC_PREFIX_ENV_VAR == _STATIC_PREFIX_ENV
        import mlflow.server.fastapi_app  # noqa: F401  (the app uvicorn serves)
    except (ImportError, AttributeError):
        known = False
    if not known:
        print("cible: this MLflow's server internals are not the ones cible knows (mlflow.server.fastapi_app); "
              "install a supported MLflow: pip install 'mlflow>=3.5'", flush=True)
        return 3
    handlers.initialize_backend_stores(backend, backend, "mlflow-artifacts:/")  # creates/verifies tables

    import uvicorn
    from mlflow.server.fastapi_app import app

    uvicorn.run(SecretGate(app, secret), host="127.0.0.1", port=port, workers=1,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    return 0


class SecretGate:
    """ASGI: only requests carrying the secret reach MLflow (the workspace server's proxy sends it)."""

    def __init__(self, app, secret: bytes) -> None:  # noqa: ANN001
        self.app = app
        self.secret = secret

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] in ("http", "websocket"):
            given = dict(scope["headers"]).get(SECRET_HEADER.encode(), b"")
            if not self.secret or not hmac.compare_digest(given, self.secret):
                if scope["type"] == "http":
                    await send({"type": "http.response.start", "status": 403,
                                "headers": [(b"content-type", b"text/plain")]})
                    await send({"type": "http.response.body",
                                "body": b"MLflow here answers the cible workspace server only\n"})
                return
        await self.app(scope, receive, send)


def _watch_stdin() -> None:
    """End this process when the server's pipe on stdin closes (the server stopped or died)."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
        time.sleep(15)  # then no longer than this (a daemon thread: gone if it exits first)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m cible.server.tracking CIBLE_HOME PORT", file=sys.stderr)
        sys.exit(2)
    sys.exit(_child_main(Path(sys.argv[1]), int(sys.argv[2])))
