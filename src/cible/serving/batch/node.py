"""The node runner: the process a batch job's launcher starts on each node (`python -m cible.serving.batch`).

Node rank 0 lists the input (its files, sorted; folders are not recursed, as on Azure) and sends the list to
the server, which records the split once; every node's runner then starts `max_concurrency_per_instance`
worker processes (worker.py) and looks after them:

- a worker that dies is reported lost and replaced: the mini-batch it was running (`idx`) counts a failed
  try, any other it held (claimed ahead, or one whose report had not reached the server) is redone;
- a worker whose run() outlives the timeout by GRACE_S (stuck in C code, where SIGALRM cannot reach) is
  killed, reported lost and replaced; the clock stops when run() returns (`scored`): writing the part is
  not part of Azure's timeout;
- a worker still alive EXIT_GRACE_S after the server told it finished (a thread the script started in
  init() that never ends) is killed: the node does not wait on it;
- a worker whose init() raises is replaced up to max_retries times, then the run fails with that error; a
  script that cannot be loaded at all (no init/run, an import error) fails it at once.

Exit 0 when the server says the batch finished; non-zero when it failed, the reason as the last line.
The server joins the parts into the result file when the run ends; rank 0 joins them here only when the
server says it could not (`"joined": false`: an upload-mode output it does not reach).
Workers are separate interpreters (subprocess): the runner has threads of none and imports nothing of the
user's, and a worker's crash (a segfault in a native library) leaves the runner standing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from cible.serving.batch.api import ApiError, BatchApi
from cible.serving.batch.output import PARTS_DIR, join_parts

GRACE_S = 10  # past the mini-batch timeout, how long a worker has before it is killed
EXIT_GRACE_S = 5  # after the server said finished, how long a worker has to exit before it is killed
DRAIN_S = 1  # how long a dead worker's last words are awaited (a child of it may hold the pipe open)
TICK_S = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cible.serving.batch",
                                     description="cible's batch scoring runner: one node of a batch job.")
    parser.add_argument("--input", required=True, help="the input file or folder (as staged for the job)")
    parser.add_argument("--output", required=True, help="the output folder")
    parser.add_argument("--model-path", help="the model's folder or file (as staged for the job)")
    parser.add_argument("--model-name", help="its name under AZUREML_MODEL_DIR (default: the path's last part)")
    parser.add_argument("--entry-script", help="the scoring script, relative to the app root")
    parser.add_argument("--app-root", help="the scoring code's folder (default: the working folder)")
    parser.add_argument("--mlflow-model", action="store_true", help="no script: score with the MLflow model")
    return parser.parse_args(argv)


def list_input(path: str) -> tuple[str, list[str] | None, str | None]:
    """(the folder the names are relative to, the files' names, or why there are none to score)."""
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), [os.path.basename(path)], None
    if not os.path.isdir(path):
        return path, None, f"the input {path} does not exist"
    names = sorted(entry.name for entry in os.scandir(path)
                   if not entry.name.startswith(".") and entry.is_file())
    if not names:
        return path, None, f"the input folder {path} holds no files to score (folders are not recursed)"
    return os.path.abspath(path), names, None


class Slot:
    """One worker's place: its process, its status pipe, what it runs."""

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name
        self.proc: subprocess.Popen | None = None
        self.reader: Any = None
        self.buffer = b""
        self.ready = False
        self.current: int | None = None  # the mini-batch it is running (from start to end)
        self.kill_at: float | None = None  # while run() runs: when the worker is killed (monotonic)
        self.finished_at = 0.0
        self.init_failures = 0
        self.last_error: str | None = None
        self.finished: dict[str, Any] | None = None


class NodeRunner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.job = os.environ.get("AZUREML_RUN_ID", "")
        self.rank = int(os.environ.get("CIBLE_NODE_RANK") or 0)
        self.attempt = int(os.environ.get("CIBLE_JOB_ATTEMPT") or 1)
        self.token = os.environ.pop("CIBLE_JOB_TOKEN", "")
        self.api = BatchApi(os.environ.get("CIBLE_API_URL", ""), self.token, self.job)
        self.selector = selectors.DefaultSelector()
        self.slots: list[Slot] = []
        self.failure: str | None = None
        self.timeout_s = 0.0
        self.worker_command = [sys.executable, "-m", "cible.serving.batch.worker"]  # + config, worker name
        self.scratch: list[str] = []  # the workers' config file and the model's folder of links: removed at the end

    def run(self) -> int:
        root, files, error = list_input(self.args.input)
        body: dict[str, Any] = {"attempt": self.attempt}
        if self.rank == 0:
            body.update({"files": files} if files is not None else {"error": error})
        while True:
            answer = self.api.start(body)
            if "wait_ms" not in answer:
                break
            time.sleep(answer["wait_ms"] / 1000)
        settings = answer["settings"]
        if answer.get("outcome") == "failed":
            return self.fail_with(answer.get("reason") or "the batch run failed")
        output = os.path.abspath(self.args.output)
        # summary_only writes no parts: its output folder holds only what the scoring script writes there
        os.makedirs(os.path.join(output, PARTS_DIR) if settings["output_action"] == "append_row" else output,
                    exist_ok=True)
        config = self.prepare(settings, root, output)
        print(f"cible batch runner: job {self.job}, node {self.rank}, {answer['files']} files in {answer['total']} "
              f"mini-batches of {settings['mini_batch_size']}, {settings['max_concurrency_per_instance']} workers "
              f"on this node, {settings['output_action']} to {output}", flush=True)
        code = self.supervise(config, settings)
        if code == 0 and self.rank == 0 and settings["output_action"] == "append_row" and self.server_did_not_join():
            self.join_here(output, settings["output_file_name"])
        return code

    def prepare(self, settings: dict[str, Any], root: str, output: str) -> str:
        """Azure's variables for the script, and the workers' config file (private: it names the job)."""
        from cible.serving.model_dir import model_folder
        from cible.serving.script import entry_script_path

        app_root = os.path.abspath(self.args.app_root or os.getcwd())
        os.environ["AML_APP_ROOT"] = app_root
        if self.args.entry_script and not self.args.mlflow_model:
            os.environ["AZUREML_ENTRY_SCRIPT"] = entry_script_path(app_root, self.args.entry_script) or ""
        if self.args.model_path:
            state_dir = tempfile.mkdtemp(prefix="cible-batch-model-")
            self.scratch.append(state_dir)
            os.environ["AZUREML_MODEL_DIR"] = model_folder(self.args.model_path, self.args.model_name,
                                                           os.path.join(state_dir, "state.json"))
        os.environ["AZUREML_BI_OUTPUT_PATH"] = output
        os.environ.setdefault("AZUREML_LOG_LEVEL", str(settings.get("logging_level", "info")).upper())
        config = {"settings": settings, "api_url": os.environ.get("CIBLE_API_URL", ""), "job": self.job,
                  "attempt": self.attempt, "input_root": root, "output": output, "app_root": app_root,
                  "entry_script": None if self.args.mlflow_model else self.args.entry_script,
                  "mlflow": bool(self.args.mlflow_model), "model_name": self.args.model_name}
        fd, path = tempfile.mkstemp(prefix="cible-batch-", suffix=".json")
        self.scratch.append(path)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle)
        return path

    def remove_scratch(self) -> None:
        """The config file and the model folder (hard links or copies of the staged model's files)."""
        for path in self.scratch:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    # -- the workers ---------------------------------------------------------------------------------

    def supervise(self, config: str, settings: dict[str, Any]) -> int:
        count = int(settings["max_concurrency_per_instance"])
        self.timeout_s = float(settings["timeout"])
        host = os.uname().nodename
        # unique per node, worker and attempt; the host only to read (the column holds 64 characters)
        self.slots = [Slot(i, f"{self.rank}:{i}:{self.attempt}:{host}"[:64]) for i in range(count)]
        for slot in self.slots:
            self.spawn(slot, config)
        while True:
            deadline_s = TICK_S
            for key, _ in self.selector.select(timeout=deadline_s):
                self.read(key.data)
            for slot in self.slots:
                if slot.finished is not None:
                    if slot.finished.get("failed") or slot.finished.get("stale"):
                        self.stop_all()
                        return self.fail_with(slot.finished.get("reason") or "the batch run failed", report=False)
                    if slot.proc.poll() is None and time.monotonic() - slot.finished_at > EXIT_GRACE_S:
                        print(f"cible batch runner: worker {slot.name} did not exit {EXIT_GRACE_S} s after the "
                              "batch finished (a thread of the scoring script?): killed", file=sys.stderr, flush=True)
                        self.kill(slot)
                    continue
                if slot.proc is not None and slot.proc.poll() is not None:
                    self.drain(slot)  # all it said before it went (a finished worker is not replaced)
                    if slot.finished is None and not self.replace(slot, config, settings):
                        self.stop_all()
                        return self.fail_with(self.failure or "the batch run failed")
                elif slot.kill_at is not None and time.monotonic() > slot.kill_at:
                    self.kill(slot)
                    slot.last_error = (f"worker killed: mini-batch {slot.current} ran past its timeout of "
                                       f"{settings['timeout']} s")
            if all(slot.finished is not None and slot.proc.poll() is not None for slot in self.slots):
                return 0

    def spawn(self, slot: Slot, config: str) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "CIBLE_BATCH_STATUS_FD": str(write_fd), "CIBLE_JOB_TOKEN": self.token,
               **thread_limits(len(self.slots), os.environ)}
        slot.proc = subprocess.Popen([*self.worker_command, config, slot.name],
                                     env=env, pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        slot.reader, slot.buffer = os.fdopen(read_fd, "rb", buffering=0), b""
        slot.ready, slot.current, slot.kill_at, slot.last_error = False, None, None, None
        self.selector.register(slot.reader, selectors.EVENT_READ, slot)

    def read(self, slot: Slot) -> None:
        try:
            chunk = slot.reader.read(65536) if slot.reader else b""
        except BlockingIOError:
            return
        if chunk is None:
            return
        if not chunk:  # the worker closed its end (it exited): no more events
            self.close_reader(slot)
            return
        slot.buffer += chunk
        *lines, slot.buffer = slot.buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                continue  # not the worker's (a child of it writing on the inherited descriptor)
            if kind == "ready":
                slot.ready, slot.init_failures = True, 0
            elif kind == "start":
                slot.current, slot.kill_at = event["idx"], time.monotonic() + self.timeout_s + GRACE_S
            elif kind == "scored":  # run() returned: the timeout covers run() only, not the part's write
                slot.kill_at = None
            elif kind == "end":
                slot.current, slot.kill_at = None, None
            elif kind in ("fatal", "init_failed"):
                slot.last_error = event["error"]
                if kind == "fatal":
                    self.failure = event["error"]
            elif kind == "finished":
                slot.finished, slot.finished_at = event, time.monotonic()

    def close_reader(self, slot: Slot) -> None:
        if slot.reader is not None:
            self.selector.unregister(slot.reader)
            slot.reader.close()
            slot.reader = None

    def drain(self, slot: Slot) -> None:
        """Read what a dead worker wrote before it went. What is left of its process group is killed first
        (a child holding the pipe's write end would keep EOF from coming); one that left the group (its own
        session) may still hold it: the pipe is given up after DRAIN_S."""
        try:
            os.killpg(slot.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + DRAIN_S
        while slot.reader is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if select.select([slot.reader], [], [], left)[0]:
                self.read(slot)
        self.close_reader(slot)

    def replace(self, slot: Slot, config: str, settings: dict[str, Any]) -> bool:
        """A worker that exited (drained) before the server said finished: report it lost and start another.
        False when the run must fail (the script cannot be loaded, or init() keeps failing)."""
        code = slot.proc.returncode
        if self.failure is not None:  # fatal: the script cannot be used
            return False
        if not slot.ready:
            slot.init_failures += 1
            error = slot.last_error or f"the worker exited while starting ({_exit(code)})"
            print(f"cible batch runner: worker {slot.name}: {error}", file=sys.stderr, flush=True)
            if slot.init_failures > int(settings["max_retries"]):
                self.failure = f"{error} (after {slot.init_failures} tries)"
                return False
        else:
            error = slot.last_error or f"worker died: {_exit(code)}"
            print(f"cible batch runner: worker {slot.name}: {error}", file=sys.stderr, flush=True)
            self.api.lost(slot.name, error, slot.current)
        failures = slot.init_failures
        self.spawn(slot, config)
        slot.init_failures = failures
        return True

    def kill(self, slot: Slot) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            try:
                os.killpg(slot.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            slot.proc.wait()

    def stop_all(self) -> None:
        for slot in self.slots:
            self.kill(slot)

    def fail_with(self, reason: str, report: bool = True) -> int:
        if report:
            try:
                reason = self.api.fail(reason).get("reason") or reason
            except ApiError as exc:
                print(f"cible batch runner: {exc}", file=sys.stderr, flush=True)
        print(f"cible batch runner: the batch run failed: {reason}", file=sys.stderr, flush=True)
        return 1

    def server_did_not_join(self) -> bool:
        """The server joins the parts under the job's lock before it tells anyone finished, and says so
        (`joined`). Only when it says it could not (an upload-mode output it does not reach) does this node
        join; joining otherwise would race the server's join and could rename a short file over its own."""
        said = [slot.finished.get("joined") for slot in self.slots if slot.finished is not None]
        return False in said and True not in said

    def join_here(self, output: str, file_name: str) -> None:
        """Join what this node's parts folder holds into the result file."""
        try:
            names = os.listdir(os.path.join(output, PARTS_DIR))
        except FileNotFoundError:
            names = []
        done = sorted(int(n[5:11]) for n in names
                      if n.startswith("part-") and n.endswith(".csv") and len(n) == 15 and n[5:11].isdigit())
        join_parts(output, file_name, done)


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner: NodeRunner | None = None
    # The workers are in sessions of their own (so a worker's group can be killed whole): the launcher's
    # SIGTERM to this runner's group does not reach them, so a SIGTERM unwinds to the `finally` below.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        runner = NodeRunner(args)
        return runner.run()
    except ApiError as exc:
        print(f"cible batch runner: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if runner is not None:
            runner.stop_all()
            runner.remove_scratch()
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_limits(workers: int, environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """Each worker's share of the node's CPUs for the thread pools of pyarrow, numpy's BLAS and OpenMP
    (which all read OMP_NUM_THREADS or their own variable), as Ray does for its tasks: with several workers
    each pool would otherwise size itself to the whole node and the workers would thrash. A variable the
    user set (the deployment's environment_variables) is kept."""
    if workers <= 1:
        return {}
    share = str(max(1, len(os.sched_getaffinity(0)) // workers))
    return {name: share for name in THREAD_VARIABLES if name not in environ}
