"""Online scoring: one small scikit-learn model behind each server, loaded by wrk; ratios to a floor in the same round.

The model is perf-anchors' (§1, Appendix A): a LogisticRegression on make_classification(20000 x 20), saved
with joblib (bench/serving/make_model.py). Bodies: 1 row and 1,000 rows of 20 floats, `{"data": [[...]]}`
(MLflow gets the same numbers as `{"inputs": [[...]]}`, its own envelope). Every server runs 1 worker
process, one server at a time. Per server and round: start it, POST until its first 200 (the ready time),
warm up (--warmup s of wrk at c=8 with the 1000-row body), then 4 cells of --seconds each: {1, 1000 rows}
x {c=1, c=32}, each `wrk -t1 -cC --latency --timeout 10s -s bench/serving/post.lua` (wrk shares the 2 cores
with the server: every server pays the same tax). The servers, in this order each round:

  floor           FastAPI + orjson + model.predict on uvicorn (uvloop + httptools), bench/serving/floor_app.py
  azmlinfsrv      azureml-inference-server-http with Azure's sample-shaped score.py (stdlib json), in its own
                  venv made with uv under ~/.cache/cible-bench/venvs (skipped, with the reason, if that fails)
  mlflow          `mlflow models serve --env-manager local -w 1` of the same estimator saved as an MLflow model
  replica json    `python -m cible.serving` with that score.py, run as a replica is (--model-path/--model-name/
                  --entry-script/--app-root), hit directly
  replica orjson  the same with score_orjson.py: score.py parsing with orjson instead of json (a 1000-row
                  body spends ~9 ms in json.loads and ~0.7 ms in orjson.loads: the in-process costs line)
  gateway json    a cible endpoint (auth_mode key) through the gateway: a real cible server in a temporary
                  workspace (CIBLE_TRACKING=0), one deployment of the model + score.py, instance_type
                  Standard_DS1_v2, the host's Python (an Azure ML base image), request_settings
                  max_concurrent_requests_per_instance 64 / max_queue_wait_ms 5000 / request_timeout_ms 60000
                  (Azure's default of 1 concurrent request would answer 429 at c=32); wrk sends the key
  gateway orjson  the same with score_orjson.py (a fresh workspace: one server at a time)

Printed per cell: requests/s, p50 and p99 (wrk's latency distribution; p99 is loose on a shared machine),
non-2xx answers, socket errors, the ratio to the floor's requests/s in the same round, the CPU time of the
server's processes per request (robust to other work on the machine, unlike req/s) and how much of the
machine other work took during the cell ("others"; a cell over --noisy % is run again, up to --retries
times, and the quietest attempt kept: req/s on a shared 2-core machine swings 2x with it); then the p50
each server adds over the floor at c=1, and a summary against issue 16's targets: a replica >= 0.9x the
floor, through the gateway >= 0.8x at c=32, added p50 <= 0.5 ms (1 row, c=1), no collapse at c=32 (its
req/s >= the same server's at c=1), and the peers' ratios. With --rounds N > 1 the tables are per round,
then the medians (of req/s, p50, p99 and of the per-round ratios). Quote the ratios, not the req/s.

    .venv/bin/python bench/serving.py [--seconds 5] [--warmup 2] [--rounds 1] [--json out.json] [--keep]
        [--noisy 25] [--retries 2]
        [--servers floor,azmlinfsrv,mlflow,replica-json,replica-orjson,gateway-json,gateway-orjson]

Needs wrk (`apt-get install -y wrk`; exits 2 without it) and uv for the azmlinfsrv venv. Every process
it starts is ended at the end (process groups), also on Ctrl-C or an error. The work folder (model, logs,
workspaces) is removed at the end unless --keep or a server was skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
HELPERS = BENCH / "serving"
sys.path.insert(0, str(HELPERS))
from harness import CpuWatch, Processes, end_tree, free_port, process_tree, wait_ready, wrk  # noqa: E402
from report import aggregate, print_medians, print_round, summary  # noqa: E402

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, HELPERS)]  # no shadowing

import psutil  # noqa: E402

VENV_BIN = Path(sys.executable).parent
PEER_VENVS = Path(os.environ.get("CIBLE_BENCH_VENVS", Path.home() / ".cache" / "cible-bench" / "venvs"))
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"  # host Python, nothing to build
REQUEST_SETTINGS = {"max_concurrent_requests_per_instance": 64, "max_queue_wait_ms": 5000,
                    "request_timeout_ms": 60000}
ALL_SERVERS = ("floor", "azmlinfsrv", "mlflow", "replica-json", "replica-orjson", "gateway-json", "gateway-orjson")
LABELS = {
    "floor": "floor: FastAPI+orjson (uvicorn)",
    "azmlinfsrv": "azureml-inference-server-http",
    "mlflow": "mlflow models serve",
    "replica-json": "cible replica, score.py json",
    "replica-orjson": "cible replica, score.py orjson",
    "gateway-json": "cible gateway, score.py json",
    "gateway-orjson": "cible gateway, score.py orjson",
}
SCRIPTS = {"json": "score.py", "orjson": "score_orjson.py"}
CELLS = ((1, 1), (1, 32), (1000, 1), (1000, 32))


@dataclass
class Target:
    url: str
    envelope: str = "data"  # the payload files: p<rows>_<envelope>.json
    auth_key: str | None = None
    proc: subprocess.Popen | None = None
    note: str = ""
    tree: Callable[[], list] | None = None  # the server's processes (for CPU accounting); else proc's tree

    def processes(self) -> list:
        if self.tree is not None:
            return self.tree()
        return process_tree(self.proc.pid) if self.proc is not None else []


@dataclass
class Bench:
    work: Path
    args: argparse.Namespace
    procs: Processes = field(default_factory=Processes)
    round: int = 0

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}-r{self.round}.log"

    def code_dir(self, variant: str) -> Path:
        """A folder holding the variant's script as score.py (what a deployment's code folder holds)."""
        folder = self.work / f"code-{variant}"
        if not folder.exists():
            folder.mkdir()
            shutil.copy(HELPERS / SCRIPTS[variant], folder / "score.py")
        return folder


# ---- the servers: each a context manager yielding a Target once its process is started -----------------

@contextlib.contextmanager
def floor(b: Bench) -> Iterator[Target]:
    port = free_port()
    env = {**os.environ, "MODEL_FILE": str(b.work / "model" / "model_lr.joblib")}
    proc = b.procs.start([str(VENV_BIN / "uvicorn"), "floor_app:app", "--app-dir", str(HELPERS), "--host", "127.0.0.1",
                          "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
                          "--log-level", "warning", "--no-access-log"], b.log("floor"), env=env, cwd=b.work)
    try:
        yield Target(f"http://127.0.0.1:{port}/score", proc=proc)
    finally:
        b.procs.stop(proc)


def azmlinfsrv_venv(b: Bench) -> Path:
    """The peer's own venv (its Flask/gunicorn pins stay out of the project's), with the project's scikit-learn
    and numpy versions so that the joblib file loads. Made once; raises RuntimeError with uv's message."""
    import numpy
    import sklearn

    venv = PEER_VENVS / f"azmlinfsrv-sklearn{sklearn.__version__}-numpy{numpy.__version__}"
    if (venv / ".complete").exists():
        return venv
    uv = shutil.which("uv", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if uv is None:
        raise RuntimeError("uv is not installed (pip install uv)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    for cmd in ([uv, "venv", "-q", "--clear", "-p", sys.executable, str(venv)],
                [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "azureml-inference-server-http",
                 f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}", "joblib"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    (venv / ".complete").write_text("ok\n")
    return venv


@contextlib.contextmanager
def azmlinfsrv(b: Bench) -> Iterator[Target]:
    venv = azmlinfsrv_venv(b)
    port, health = free_port(), free_port()
    env = {**os.environ, "AZUREML_MODEL_DIR": str(b.work)}  # holds model/model_lr.joblib, as on Azure
    proc = b.procs.start([str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(b.code_dir("json") / "score.py"),
                          "--model_dir", str(b.work), "--port", str(port), "--health_port", str(health),
                          "--worker_count", "1"], b.log("azmlinfsrv"), env=env, cwd=b.work)
    try:
        yield Target(f"http://127.0.0.1:{port}/score", proc=proc, note=f"(venv {venv})")
    finally:
        b.procs.stop(proc)


@contextlib.contextmanager
def mlflow(b: Bench) -> Iterator[Target]:
    port = free_port()
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # it execs `uvicorn`
    proc = b.procs.start([str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(b.work / "mlflow_lr"),
                          "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                         b.log("mlflow"), env=env, cwd=b.work)
    try:
        yield Target(f"http://127.0.0.1:{port}/invocations", envelope="inputs", proc=proc)
    finally:
        b.procs.stop(proc)


def replica(variant: str) -> Callable[[Bench], contextlib.AbstractContextManager[Target]]:
    @contextlib.contextmanager
    def start(b: Bench) -> Iterator[Target]:
        state = b.work / f"replica-{variant}-r{b.round}" / "state.json"
        state.parent.mkdir(parents=True, exist_ok=True)
        state.unlink(missing_ok=True)  # a stale one would give an old port
        proc = b.procs.start([sys.executable, "-m", "cible.serving", "--host", "127.0.0.1", "--port", "0",
                              "--state-file", str(state), "--model-path", str(b.work / "model"), "--model-name",
                              "model", "--entry-script", "score.py", "--app-root", str(b.code_dir(variant))],
                             b.log(f"replica-{variant}"), cwd=b.work)
        try:
            deadline = time.monotonic() + b.args.ready_timeout
            while not state.exists():  # the port is known once the state file is written
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no state file (exit code {proc.poll()})")
                time.sleep(0.05)  # polling a starting process, bounded by the deadline
            port = json.loads(state.read_text())["port"]
            yield Target(f"http://127.0.0.1:{port}/score", proc=proc)
        finally:
            b.procs.stop(proc)
    return start


def gateway(variant: str) -> Callable[[Bench], contextlib.AbstractContextManager[Target]]:
    @contextlib.contextmanager
    def start(b: Bench) -> Iterator[Target]:
        home = Path(tempfile.mkdtemp(prefix=f"ws-{variant}-r{b.round}-", dir=b.work))
        saved = {k: os.environ.get(k) for k in ("CIBLE_HOME", "CIBLE_TRACKING", "CIBLE_URL", "CIBLE_TOKEN",
                                                "CIBLE_DATABASE_URL")}
        for k in ("CIBLE_URL", "CIBLE_TOKEN", "CIBLE_DATABASE_URL"):
            os.environ.pop(k, None)
        os.environ.update(CIBLE_HOME=str(home), CIBLE_TRACKING="0")  # what the server it starts inherits
        from cible import MLClient

        client = None
        try:
            client = MLClient(home=home)
            name = f"bench-{variant}"
            client.online_endpoints.begin_create_or_update({"name": name, "auth_mode": "key"}).result()
            client.online_deployments.begin_create_or_update({
                "name": "blue", "endpoint_name": name, "model": {"path": str(b.work / "model")},
                "code_configuration": {"code": str(b.code_dir(variant)), "scoring_script": "score.py"},
                "environment": {"image": BASE_IMAGE}, "instance_type": "Standard_DS1_v2", "instance_count": 1,
                "request_settings": REQUEST_SETTINGS,
                "readiness_probe": {"initial_delay": 1, "period": 2, "failure_threshold": 60},
                "liveness_probe": {"initial_delay": 1, "period": 10},
            }, all_traffic=True).result(timeout=b.args.ready_timeout)
            endpoint = client.online_endpoints.get(name)
            key = client.online_endpoints.get_keys(name)["primaryKey"]
            yield Target(endpoint["scoring_uri"], auth_key=key, note=f"(workspace {home.name})",
                         tree=lambda: workspace_processes(home))
        finally:
            stop_workspace(home, client)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return start


def workspace_processes(home: Path) -> list[psutil.Process]:
    """The processes of a workspace: its server, agents, launchers and replicas (they name it or inherit it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and (str(home) in " ".join(proc.info["cmdline"] or ())
                                            or proc.environ().get("CIBLE_HOME") == str(home)):
                found.append(proc)
    return found


def stop_workspace(home: Path, client) -> None:
    """The endpoint deleted (its replicas stopped), the server stopped, then every process that still
    belongs to the workspace ended by its id."""
    before = workspace_processes(home)
    if client is not None:
        with contextlib.suppress(Exception):
            for endpoint in client.online_endpoints.list():
                client.online_endpoints.begin_delete(endpoint["name"]).result()
        client.close()
    subprocess.run([sys.executable, "-m", "cible", "server", "stop", "--home", str(home)], capture_output=True,
                   env={**os.environ, "CIBLE_HOME": str(home)}, timeout=60, check=False)
    left = [p for p in {*before, *workspace_processes(home)} if p.is_running()]
    if left:
        end_tree(left[0].pid, grace_s=5, extra=left[1:])


SERVERS = {"floor": floor, "azmlinfsrv": azmlinfsrv, "mlflow": mlflow, "replica-json": replica("json"),
           "replica-orjson": replica("orjson"), "gateway-json": gateway("json"), "gateway-orjson": gateway("orjson")}


# ---- measuring ------------------------------------------------------------------------------------------

def measure(b: Bench, name: str) -> list[dict]:
    """One server, one round: its four cells (or one record saying why it was skipped)."""
    base = {"round": b.round, "server": name, "label": LABELS[name]}
    t0 = time.monotonic()
    try:
        with SERVERS[name](b) as target:
            first = (b.work / f"p1_{target.envelope}.json").read_bytes()
            headers = {"Authorization": f"Bearer {target.auth_key}"} if target.auth_key else {}
            _, answer = wait_ready(target.url, first, headers, target.proc, b.args.ready_timeout)
            base |= {"ready_s": round(time.monotonic() - t0, 2), "answer": answer[:80].decode(errors="replace")}
            print(f"  {LABELS[name]:<32} ready in {base['ready_s']:.1f} s; answers {base['answer']!r} "
                  f"{target.note}", flush=True)
            big = b.work / f"p1000_{target.envelope}.json"
            if b.args.warmup > 0:
                wrk(target.url, big, 8, b.args.warmup, target.auth_key)
            cells = []
            for rows, c in CELLS:
                best = None
                for attempt in range(1, b.args.retries + 2):  # a noisy cell again; the quietest attempt kept
                    watch = CpuWatch(target.processes)
                    result = wrk(target.url, b.work / f"p{rows}_{target.envelope}.json", c, b.args.seconds,
                                 target.auth_key)
                    result |= watch.stop(result["requests"]) | {"attempts": attempt}
                    if best is None or result["others_pct"] < best["others_pct"]:
                        best = result | {"attempts": attempt}
                    if result["others_pct"] <= b.args.noisy:
                        break
                cells.append({**base, "rows": rows, "c": c, **best})
            return cells
    except Exception as exc:  # noqa: BLE001 - whatever stops one server skips its row, not the benchmark
        reason = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        print(f"  {LABELS[name]:<32} SKIPPED: {reason} (log: {b.log(name)})", flush=True)
        return [{**base, "skipped": reason}]


def with_ratios(cells: list[dict]) -> None:
    """ratio: req/s over the floor's in the same round and cell; added_p50_ms: p50 over the floor's."""
    floor_of = {(c["round"], c["rows"], c["c"]): c for c in cells if c["server"] == "floor" and "rps" in c}
    for cell in cells:
        ref = floor_of.get((cell["round"], cell.get("rows"), cell.get("c")))
        if ref is not None and "rps" in cell:
            cell["ratio"] = round(cell["rps"] / ref["rps"], 3)
            if cell["p50_ms"] is not None and ref["p50_ms"] is not None:
                cell["added_p50_ms"] = round(cell["p50_ms"] - ref["p50_ms"], 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration of each cell, whole s (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up s at c=8, 1000 rows; 0: none (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; with 3, the medians table (default 1)")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS), help="which, in this order each round")
    parser.add_argument("--noisy", type=float, default=25,
                        help="a cell during which other work used more than this %% of the machine's CPUs is run "
                             "again (default 25)")
    parser.add_argument("--retries", type=int, default=2, help="at most this many times; the quietest attempt "
                                                               "is kept (default 2; 0: never)")
    parser.add_argument("--ready-timeout", type=float, default=240, help="seconds to wait for a first 200")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, model); else removed")
    parser.add_argument("--json", type=Path, help="write every cell, the medians and the summary here")
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {', '.join(ALL_SERVERS)}")
    if shutil.which("wrk") is None:
        print("wrk is not installed: it is the load generator of this benchmark. Install it with\n"
              "    apt-get install -y wrk        (Debian/Ubuntu; or build it from github.com/wg/wrk)",
              file=sys.stderr)
        return 2

    def on_term(signum, frame):  # noqa: ANN001 - SIGTERM ends like Ctrl-C: through the finally below
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="cible-bench-serving-"))
    (work / "logs").mkdir()
    b = Bench(work, args)
    cells: list[dict] = []
    result = None
    started = time.time()
    meta = {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "seconds": args.seconds,
            "warmup": args.warmup, "rounds": args.rounds, "servers": servers, "work": str(work)}
    print(f"serving benchmark: {len(servers)} servers x {args.rounds} round(s) x 4 cells of {args.seconds} s; "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}; work folder {work}", flush=True)
    try:
        made = subprocess.run([sys.executable, str(HELPERS / "make_model.py"), str(work)], capture_output=True,
                              text=True, check=True, cwd=work)
        meta["in_process_ms"] = json.loads(made.stdout.strip().splitlines()[-1])
        print("in-process costs (median ms):", json.dumps(meta["in_process_ms"]), flush=True)
        for rnd in range(1, args.rounds + 1):
            b.round = rnd
            print(f"\nround {rnd}/{args.rounds}", flush=True)
            mine = []
            for name in servers:
                mine += measure(b, name)
            with_ratios(mine)
            cells += mine
            print_round(mine, rnd, LABELS)
        print_medians(cells, servers, LABELS, args.rounds)
        result = summary(cells, servers, LABELS)
    except KeyboardInterrupt:
        print("\ninterrupted: ending the servers", file=sys.stderr)
        return 130
    finally:
        b.procs.stop_all()
        meta["load_avg_end"] = os.getloadavg()
        if args.json:
            doc = {"meta": meta, "cells": cells, "medians": aggregate(cells, servers), "summary": result}
            args.json.write_text(json.dumps(doc, indent=1, default=str))
    keep = args.keep or any("skipped" in c for c in cells)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.time() - started:.0f} s; load avg at the end {os.getloadavg()[0]:.2f}"
          + (f"; logs in {work / 'logs'}" if keep else "") + (f"; JSON in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
