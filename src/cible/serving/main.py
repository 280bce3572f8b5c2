"""`python -m cible.serving`: the command line of one replica.

```
python -m cible.serving [--host H] [--port P] [--state-file PATH]
       [--model-path STAGED_PATH [--model-name BASENAME]]   # AZUREML_MODEL_DIR: a folder holding BASENAME
       [--entry-script score.py] [--app-root DIR]           # else AZUREML_ENTRY_SCRIPT / AML_APP_ROOT (else cwd)
       [--mlflow-model]                                     # no script: serve the MLflow model in the model dir
       [--reload]                                           # re-import the script (and init()) when it changes
       [--request-timeout-ms N]                             # else SCORING_TIMEOUT_MS (else 3600000)
```
A flag wins over the environment variable Azure's server reads for the same thing; the variable is
the fallback (`--port`: SERVER_PORT, else 0 = any free port; `--host`: CIBLE_NODE_ADDRESS, the
address the launcher gives a replica's node, else 127.0.0.1). The script sees AML_APP_ROOT,
AZUREML_ENTRY_SCRIPT (absolute) and AZUREML_MODEL_DIR set as Azure sets them.

Order: bind the port (a clash fails at once), import the script and run `init()`, start uvicorn, and
once it listens write the state file and print one banner line to stdout. The state file, written
atomically (and again after every `--reload`):

    {"port": 8123, "pid": 4242, "ready": true, "error": null}

`ready: false` with `error` when the script cannot be served or its init() raised: the server keeps
running and answers `GET /` with 503 and that message, so probes fail and the log (stderr) holds the
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import logging
import os
import socket
import sys
import tempfile
import time
from typing import Any

import uvicorn

from cible.serving.app import DEFAULT_TIMEOUT_MS, ScoringApp, ServingState
from cible.serving.model_dir import model_folder
from cible.serving.reload import ScriptWatcher
from cible.serving.script import entry_script_path, forget_modules_under, load_entry_script, start
from cible.serving.shims import install_import_names

logger = logging.getLogger("cible.serving")
KEEP_ALIVE_S = 75  # idle keep-alive: longer than a gateway pool's idle time, so the pool closes first


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cible.serving",
                                     description="cible's scoring server: one online-deployment replica.")
    parser.add_argument("--host", help="address to bind (default: CIBLE_NODE_ADDRESS, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default: SERVER_PORT, else 0 = any free port)")
    parser.add_argument("--state-file", help="where to write {port, pid, ready, error} once listening")
    parser.add_argument("--model-path", help="the model's folder or file (as staged for the replica)")
    parser.add_argument("--model-name", help="its name under AZUREML_MODEL_DIR (default: the path's last part)")
    parser.add_argument("--entry-script", help="the scoring script, relative to the app root (default: "
                                               "AZUREML_ENTRY_SCRIPT, else the module `main`)")
    parser.add_argument("--app-root", help="the scoring code's folder (default: AML_APP_ROOT, else the cwd)")
    parser.add_argument("--mlflow-model", action="store_true",
                        help="no script: serve the MLflow model in the model dir")
    parser.add_argument("--reload", action="store_true", help="re-import the script and rerun init() when it changes")
    parser.add_argument("--request-timeout-ms", type=int, help="run()'s timeout (default: SCORING_TIMEOUT_MS, "
                                                                "else 3600000)")
    return parser.parse_args(argv)


def write_state(path: str, port: int, ready: bool, error: str | None) -> None:
    """The state file, written to a temporary file and renamed: a reader sees the old one or the new one."""
    document = json.dumps({"port": port, "pid": os.getpid(), "ready": ready, "error": error})
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".state-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(document)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound now. proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets
    that say they are TCP (a bare socket(AF_INET, SOCK_STREAM) says proto 0: the 40 ms Nagle stall of
    perf-anchors §4.3); TCP_NODELAY on the listener is inherited by accepted sockets on Linux, and uvloop
    sets it on each connection as well."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def settle_heap() -> None:
    """Once the script is imported and init() has run: collect what that left behind, then move every object
    still alive (the libraries, the model: ~200k objects with scikit-learn) to the collector's permanent
    generation, so that its full passes walk only what requests create. Without it, a stream of 1000-row
    JSON bodies (1,001 lists each) set off about one full collection a second on the issue-16 benchmark
    model, each 50-85 ms during which every request on the replica waits; frozen, they take 1-2 ms."""
    gc.collect()
    gc.freeze()


def configure_logging() -> None:
    """Azure's log line shape, `<UTC time> <level> [<pid>] <logger> - <message>`, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.setLevel(os.environ.get("AZUREML_LOG_LEVEL", "INFO").upper())
    logger.propagate = False


class _Server(uvicorn.Server):
    """uvicorn's server, with a hook once it listens (state file, banner, reload watcher)."""

    def __init__(self, config: uvicorn.Config, on_started: Any) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    app_root = os.path.abspath(args.app_root or os.environ.get("AML_APP_ROOT") or os.getcwd())
    entry = None if args.mlflow_model else (args.entry_script or os.environ.get("AZUREML_ENTRY_SCRIPT") or None)
    script_path = entry_script_path(app_root, entry)
    os.environ["AML_APP_ROOT"] = app_root
    if script_path:
        os.environ["AZUREML_ENTRY_SCRIPT"] = script_path
    if args.model_path:
        os.environ["AZUREML_MODEL_DIR"] = model_folder(args.model_path, args.model_name, args.state_file)
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    timeout_ms = args.request_timeout_ms if args.request_timeout_ms is not None \
        else int(os.environ.get("SCORING_TIMEOUT_MS") or DEFAULT_TIMEOUT_MS)
    host = args.host or os.environ.get("CIBLE_NODE_ADDRESS") or "127.0.0.1"
    wanted_port = args.port if args.port is not None else int(os.environ.get("SERVER_PORT") or 0)
    try:
        sock = listen_socket(host, wanted_port)
    except OSError as exc:
        print(f"cible scoring server: cannot listen on {host}:{wanted_port}: {exc}", file=sys.stderr, flush=True)
        return 1
    port = sock.getsockname()[1]

    if app_root not in sys.path[:1]:
        sys.path.insert(0, app_root)
    install_import_names()
    if args.mlflow_model:
        from cible.serving.mlflow_model import MlflowModel

        def load() -> Any:
            return MlflowModel(model_dir or "", args.model_name)
    else:
        def load() -> Any:
            return load_entry_script(app_root, entry)

    listening = False

    def on_change(state: ServingState) -> None:
        if listening and args.state_file:
            write_state(args.state_file, port, state.ready, state.error)

    state = ServingState(app_root, on_change=on_change)
    state.set(*start(load))
    settle_heap()
    app = ScoringApp(state, timeout_ms)
    tasks: list[asyncio.Task] = []

    def reload() -> None:
        gc.unfreeze()  # the old script's objects may be collected again once it is forgotten
        forget_modules_under(app_root)
        state.set(*start(load))
        settle_heap()

    def on_started() -> None:
        nonlocal listening
        listening = True
        on_change(state)
        if args.mlflow_model:
            served = f"MLflow model {state.scorer.path if state.scorer else model_dir}"
        else:
            served = f"entry script {state.scorer.describe() if state.scorer else script_path or 'main'}"
        status = "ready" if state.ready else f"NOT READY: {state.error}"
        print(f"cible scoring server: listening on http://{host}:{port}, {served}, "
              f"model dir {model_dir or '(none)'}, timeout {timeout_ms} ms, {status}", flush=True)
        if args.reload and not args.mlflow_model:
            tasks.append(asyncio.get_running_loop().create_task(ScriptWatcher(app_root, script_path, reload).run()))

    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", access_log=False, log_level="warning", server_header=False,
        loop="uvloop" if _installed("uvloop") else "asyncio", http="httptools" if _installed("httptools") else "h11",
        timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=10,
    )
    _Server(config, on_started).run(sockets=[sock])
    return 0
