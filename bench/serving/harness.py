"""The parts of bench/serving.py that are not about one server: starting and ending processes, waiting for a
server's first 200, running wrk and reading its report."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

HERE = Path(__file__).resolve().parent
POST_LUA = HERE / "post.lua"
POLL_S = 0.05


class Processes:
    """Every process the benchmark starts, each the leader of its own session and process group, so that
    ending it ends what it forked too (uvicorn, gunicorn and MLflow run their workers as children)."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        with open(log, "ab") as handle:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, start_new_session=True)
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc in self._running:
            self._running.remove(proc)
        end_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)

    def stop_all(self) -> None:
        for proc in list(reversed(self._running)):
            self.stop(proc)


def end_tree(pid: int, grace_s: float = 10.0, extra: list[psutil.Process] = ()) -> None:
    """SIGTERM to the process group led by `pid` and to every descendant of `pid` (one that started a
    session of its own is not in the group), then SIGKILL to whatever is left after `grace_s`."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        procs = []
    procs += [p for p in extra if p not in procs]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path or "/", body, {"Content-Type": "application/json", **headers})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def wait_ready(url: str, body: bytes, headers: dict[str, str], proc: subprocess.Popen | None,
               timeout_s: float) -> tuple[float, bytes]:
    """POST `body` every POLL_S until the first 200: (seconds waited, its answer). Raises RuntimeError
    when `proc` exits first or nothing answers 200 within `timeout_s`."""
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout_s:
        try:
            status, answer = post(url, body, headers)
            if status == 200:
                return time.monotonic() - t0, answer
            last = f"HTTP {status}: {answer[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before answering 200 (last: {last})")
        time.sleep(POLL_S)  # polling a starting server, bounded by the deadline
    raise RuntimeError(f"no 200 within {timeout_s:.0f} s (last: {last})")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]


def parse_wrk(out: str) -> dict:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    result = {"rps": float(rps.group(1))}
    for q in ("50", "99"):
        found = re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{q}_ms"] = _ms(found.group(1)) if found else None
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(found.group(1)) if found else 0
    found = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = found.group(1).strip() if found else ""
    found = re.search(r"(\d+) requests in", out)
    result["requests"] = int(found.group(1)) if found else 0
    return result


def wrk(url: str, body: Path, connections: int, seconds: int, auth_key: str | None = None) -> dict:
    """One wrk run (1 thread, `connections` connections, --latency, 10 s request timeout; wrk takes whole seconds)."""
    env = {**os.environ, "BODY": str(body), "AUTH_KEY": auth_key or ""}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency", "--timeout", "10s",
           "-s", str(POST_LUA), url]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def _busy_s(times) -> float:  # noqa: ANN001 - psutil's cpu_times tuple
    return sum(getattr(times, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def _cpu_s(proc: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        t = proc.cpu_times()
        return t.user + t.system
    return 0.0


class CpuWatch:
    """CPU seconds over one cell: the server's processes (`tree()`), this process and its reaped children (wrk),
    and the machine as a whole. What is left over is other work on the machine (a shared one is noisy):
    `others_pct` of all its CPUs. `server_ms_per_request` is robust to that noise, unlike req/s."""

    def __init__(self, tree) -> None:  # noqa: ANN001 - () -> list[psutil.Process]
        import resource

        self._resource = resource
        self._t0 = time.monotonic()
        self._machine0 = _busy_s(psutil.cpu_times())
        self._procs = [(p, _cpu_s(p)) for p in tree()]
        self._mine0 = self._mine()

    def _mine(self) -> float:
        me = self._resource.getrusage(self._resource.RUSAGE_SELF)
        kids = self._resource.getrusage(self._resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def stop(self, requests: int) -> dict:
        wall = time.monotonic() - self._t0
        machine = _busy_s(psutil.cpu_times()) - self._machine0
        server = sum(max(0.0, _cpu_s(p) - before) for p, before in self._procs)
        load = self._mine() - self._mine0  # wrk (reaped) and this process
        others = max(0.0, machine - server - load)
        return {"others_pct": round(100 * others / (wall * (os.cpu_count() or 1)), 1),
                "server_cpu_s": round(server, 3),
                "server_ms_per_request": round(1e3 * server / requests, 4) if requests else None}


def process_tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []
