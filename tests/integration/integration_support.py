"""Helpers shared by the integration tests: polling with a deadline, a local http server, process checks,
and running the launcher on a hand-built plan."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from cible.server.services.blobs import BlobService
from cible.testing import wait_until  # noqa: F401  (re-exported for the tests)


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 (directory index pages included); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Gate:
    """`arrived` is set when a request comes in; the answer waits for `release`."""

    def __init__(self) -> None:
        self.arrived, self.release = threading.Event(), threading.Event()


@contextmanager
def gated_http_file(body: bytes = b"slow data\n") -> Iterator[tuple[Gate, str]]:
    """An http file on 127.0.0.1 whose download hangs until the test releases it."""
    gate = Gate()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            gate.arrived.set()
            gate.release.wait(timeout=30)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gate, f"http://127.0.0.1:{server.server_address[1]}/slow.csv"
    finally:
        gate.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- running the launcher on a hand-built plan (test_launcher, test_distributed) ------------------
LAUNCH_TIMEOUT_S = 60


def put_snapshot(blob_root: Path, files: dict[str, str | bytes], executable: tuple[str, ...] = ()) -> str:
    """Store `files` as blobs plus a manifest, as the upload endpoints do; return the snapshot id."""
    blobs = BlobService(blob_root)
    entries = {}
    for rel, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        digest = hashlib.sha256(data).hexdigest()
        blobs.put(digest, [data])
        entries[rel] = {"sha256": digest, "size": len(data), "mode": 0o755 if rel in executable else 0o644}
    return blobs.put_snapshot(entries)


class LauncherRun:
    """A run directory with its plan, and what the launcher left there."""

    def __init__(self, root: Path, command: str, **plan: Any) -> None:
        self.root = root
        self.dir = root / "run"
        self.dir.mkdir(parents=True)
        self.blob_root = root / "blobs"
        self.blob_root.mkdir(exist_ok=True)
        self.plan: dict[str, Any] = {
            "version": 1,
            "job_name": "test_job_123",
            "experiment_name": "exp-launcher",
            "workspace": "local",
            "compute": "local",
            "command": command,
            "code": None,
            "inputs": {},
            "outputs": {},
            "environment_variables": {},
            "timeout": None,
            "blob_root": str(self.blob_root),
            "environment": {"kind": "host"},
            "env_cache": str(root / "envs"),
        }
        self.plan.update(plan)

    def code(self, files: dict[str, str], **kw: Any) -> None:
        self.plan["code"] = {"snapshot": put_snapshot(self.blob_root, files, **kw)}

    def write_plan(self) -> None:
        (self.dir / "plan.json").write_text(json.dumps(self.plan))

    def start(self) -> subprocess.Popen:
        self.write_plan()
        return subprocess.Popen(
            [sys.executable, "-m", "cible.launch", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def cancel(self, launcher: subprocess.Popen, how: str) -> None:
        """Cancel the running launcher as the server would (`cancel_file` or `sigterm`); wait for its end."""
        if how == "cancel_file":
            (self.dir / "cancel.requested").touch()
        else:
            launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=LAUNCH_TIMEOUT_S)

    def cancel_tree(self, how: str, pids_dir: Path, names: list[str]) -> tuple[dict[str, Any], list[int]]:
        """Start the run, wait until it is Running and its command wrote a pid to pids_dir/<name> for each
        name, check they (and the launcher's child shell, when it reports one) are alive, cancel as the
        server would (`how`, see `cancel`), and wait until every one of them is gone. Returns the final
        state and the pids. The launcher is killed should anything fail, so no test leaves one behind."""
        launcher = self.start()
        try:
            def ready() -> list[int] | None:
                files = [pids_dir / n for n in names]
                if "Running" not in self.statuses() or not all(f.exists() and f.read_text().strip() for f in files):
                    return None
                return [int(f.read_text()) for f in files]

            pids = wait_until(ready, timeout=20, message=f"the processes {names} to start")
            if "child_pid" in self.state():
                pids.append(self.state()["child_pid"])
            assert all(process_alive(p) for p in pids)
            self.cancel(launcher, how)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        for pid in pids:
            wait_until(lambda p=pid: not process_alive(p), timeout=10, message=f"pid {pid} to be gone")
        return self.state(), pids

    def run(self) -> dict[str, Any]:
        proc = self.start()
        out, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
        assert proc.returncode == 0, f"launcher exited {proc.returncode}: {out.decode(errors='replace')}"
        return self.state()

    def state(self) -> dict[str, Any]:
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def statuses(self) -> list[str]:
        return [h["status"] for h in self.state().get("history", [])]

    @property
    def log(self) -> str:
        path = self.dir / "artifacts" / "user_logs" / "std_log.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def system_log(self) -> str:
        path = self.dir / "artifacts" / "system_logs" / "launcher.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> dict[str, str]:
        """Every user log (std_log.txt, std_log_process_<k>.txt) by file name."""
        user_logs = self.dir / "artifacts" / "user_logs"
        return {p.name: p.read_text(errors="replace") for p in sorted(user_logs.glob("*.txt"))}


# -- a workspace for sweeps and pipelines --------------------------------------------------------
@contextmanager
def served_workspace(home: Path, **env: str) -> Iterator[Path]:
    """CIBLE_HOME=`home` (with `env` set) for a server the SDK starts; at the end the server is stopped
    (killed if it will not stop) and the nodes it left are killed."""
    import os

    import pytest

    from cible.testing import kill_nodes

    with pytest.MonkeyPatch.context() as mp:
        for var in ("CIBLE_URL", "CIBLE_TOKEN", "CIBLE_DATABASE_URL"):
            mp.delenv(var, raising=False)
        mp.setenv("CIBLE_HOME", str(home))
        for name, value in env.items():
            mp.setenv(name, value)
        try:
            yield home
        finally:
            info = home / "server.json"
            pid = json.loads(info.read_text())["pid"] if info.exists() else None
            subprocess.run([sys.executable, "-m", "cible", "server", "stop", "--home", str(home)],
                           env={**os.environ, "CIBLE_HOME": str(home)}, capture_output=True, timeout=60)
            if pid is not None and process_alive(pid):
                os.kill(pid, 9)
            kill_nodes(home)
            # Launchers on `local` run detached from the server (a --local replica's scoring server among them).
            root = str(home)
            for proc in psutil.process_iter(["cmdline"]):
                if any(part == root or f"{root}/" in part for part in proc.info["cmdline"] or ()):
                    try:
                        proc.kill()
                    except psutil.Error:
                        pass


@contextmanager
def tracked_workspace(home: Path) -> Iterator[Path]:
    """A served workspace with MLflow tracking on (a sweep reads its trials' metric there) and `local`
    as the default compute."""
    with served_workspace(home, CIBLE_DEFAULT_COMPUTE="local", CIBLE_TRACKING="1") as served:
        yield served


@contextmanager
def client_with_cluster(home: Path) -> Iterator[Any]:
    """An MLClient of the workspace at `home`, with a 2-node cluster `cpu-cluster` on the local provider."""
    from cible import MLClient

    ml = MLClient(home=home)
    ml.compute.begin_create_or_update({"name": "cpu-cluster", "type": "amlcompute", "size": "Standard_DS1_v2",
                                       "min_instances": 0, "max_instances": 2,
                                       "idle_time_before_scale_down": 600}).result()
    try:
        yield ml
    finally:
        ml.close()


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write each `relative path: text` (dedented) under `root`."""
    import textwrap

    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def ended(client: Any, name: str, timeout: float) -> dict[str, Any]:
    """Job `name` once it has ended (asserting it did within `timeout`)."""
    job = client.jobs.wait(name, timeout=timeout)
    assert job["status"] in ("Completed", "Failed", "Canceled"), f"job {name} still {job['status']}"
    return job
