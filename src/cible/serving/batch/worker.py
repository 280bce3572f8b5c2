"""One batch worker process: import the scoring script once, `init()` once, then claim mini-batches from the
server and call `run(mini_batch)` on each (absolute file paths), until the server says finished.

Started by the node runner (node.py) as `python -m cible.serving.batch.worker CONFIG WORKER_NAME`; it tells
the node runner what it does on the file descriptor CIBLE_BATCH_STATUS_FD, one JSON object a line:

    {"event": "ready"}                                init() returned; claiming
    {"event": "start", "idx": 7}                      run() of mini-batch 7 begins (the runner times it)
    {"event": "scored", "idx": 7}                     run() returned (or raised): the runner stops timing it
    {"event": "end", "idx": 7}                        its outcome is written (part file) and about to be reported
    {"event": "fatal", "error": "..."}                the script cannot be used (import, no init/run): no retry helps
    {"event": "init_failed", "error": "..."}          init() raised (the runner may try a new worker)
    {"event": "finished", "failed": bool, "reason": ..., "stale": bool, "joined": bool | None}

Each mini-batch's result is written to its part file before it is reported done (output.py). Its outcome
rides on the claim of the mini-batch after next, made by a thread while run() scores the next one (one
round trip per mini-batch, none of it between two run() calls while enough mini-batches are left). Each
claim says which mini-batch the worker is scoring now (`running`): a claim retried after its first answer
was lost then gets back the assignment the server already made, not a second one. `run()` is bounded by
the mini-batch timeout with SIGALRM (this is the process's main thread); a run() that does not come back
from C code is killed by the node runner after the timeout and a grace.

The process ends with os._exit once the server said finished: a non-daemon thread the scoring script
started in init() would otherwise keep it alive for ever.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cible.serving.batch.api import ApiError, BatchApi
from cible.serving.batch.output import count_rows, write_part


class MiniBatchTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise MiniBatchTimeout()


class Worker:
    def __init__(self, config: dict[str, Any], name: str, status_fd: int) -> None:
        self.config, self.name = config, name
        self.settings = config["settings"]
        self.status = os.fdopen(status_fd, "w", buffering=1)
        self.api = BatchApi(config["api_url"], config["token"], config["job"])

    def tell(self, event: str, **fields: Any) -> None:
        self.status.write(json.dumps({"event": event, **fields}) + "\n")

    def load(self) -> Any:
        """The scorer (an entry script, or the MLflow driver); None after telling why it cannot be."""
        from cible.serving.script import ScriptError, load_entry_script
        from cible.serving.shims import install_import_names

        app_root = self.config["app_root"]
        if app_root not in sys.path[:1]:
            sys.path.insert(0, app_root)
        install_import_names()
        try:
            if self.config["mlflow"]:
                from cible.serving.batch.mlflow_driver import MlflowBatchScorer

                return MlflowBatchScorer(os.environ.get("AZUREML_MODEL_DIR", ""), self.config.get("model_name"))
            return load_entry_script(app_root, self.config["entry_script"])
        except ScriptError as exc:
            self.tell("fatal", error=str(exc))
            return None

    def serve(self) -> int:
        scorer = self.load()
        if scorer is None:
            return 3
        try:
            scorer.init()
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            self.tell("init_failed", error=f"init() failed: {type(exc).__name__}: {exc}")
            return 4
        self.tell("ready")
        signal.signal(signal.SIGALRM, _on_alarm)
        # While run() scores a mini-batch, a thread reports the previous one and claims the next ("ahead"),
        # so no round trip to the server lies between two run() calls. The server grants a claim ahead only
        # while more mini-batches are left than workers; otherwise the worker claims when it is free.
        report: dict[str, Any] | None = None
        answer: dict[str, Any] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="claim-ahead") as claims:
            while True:
                try:
                    if answer is None:
                        answer = self.claim(report)
                        report = None
                    kind = answer.get("kind")
                    if kind == "finished":
                        self.tell("finished", failed=bool(answer.get("failed")), reason=answer.get("reason"),
                                  stale=bool(answer.get("stale")), joined=answer.get("joined"))
                        return 0
                    if kind == "wait":
                        time.sleep(max(int(answer.get("ms") or 200), 10) / 1000)
                        answer = None
                        continue
                    next_claim = claims.submit(self.claim, report, running=answer["idx"])
                    report = self.score(scorer, answer["idx"], answer["files"])
                    following = next_claim.result()
                except ApiError as exc:
                    print(f"cible batch worker {self.name}: {exc}", file=sys.stderr, flush=True)
                    return 5
                answer = following if following.get("kind") == "assign" else None

    def claim(self, report: dict[str, Any] | None, running: int | None = None) -> dict[str, Any]:
        """Report the previous mini-batch's outcome (if any) and claim the next, in one round trip. With
        `running` (the mini-batch run() is scoring now) the claim is made ahead."""
        body: dict[str, Any] = {"worker": self.name, "attempt": self.config["attempt"], "result": report,
                                "running": running}
        if running is not None:
            body["ahead"] = True
        return self.api.claim(body)

    def score(self, scorer: Any, idx: int, files: list[str]) -> dict[str, Any]:
        """run() one mini-batch under the timeout, and write its part; the report for the server."""
        root = self.config["input_root"]
        paths = [os.path.join(root, name) for name in files]
        self.tell("start", idx=idx)
        timeout = self.settings["timeout"]
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                returned = scorer.run(paths)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                self.tell("scored", idx=idx)
            if self.settings["output_action"] == "append_row":
                rows = write_part(self.config["output"], idx, returned)
            else:
                rows = count_rows(returned)
            report = {"idx": idx, "ok": True, "rows": rows}
        except MiniBatchTimeout:
            report = {"idx": idx, "ok": False, "error": f"timed out: run() took longer than the timeout of {timeout} s"}
        except (Exception, SystemExit) as exc:
            print(f"cible batch worker {self.name}: mini-batch {idx} failed:", file=sys.stderr)
            traceback.print_exc()
            report = {"idx": idx, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.tell("end", idx=idx)
        return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config_path, name = argv
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["token"] = os.environ.pop("CIBLE_JOB_TOKEN", config.get("token", ""))
    return Worker(config, name, int(os.environ["CIBLE_BATCH_STATUS_FD"])).serve()


def exit_now(code: int) -> None:
    """End the process without waiting for threads the scoring script left running (a non-daemon thread
    started in init() would keep a normal exit waiting for ever); what was written is flushed first."""
    logging = sys.modules.get("logging")
    for flush in (getattr(logging, "shutdown", None), sys.stdout.flush, sys.stderr.flush):
        try:
            if flush is not None:
                flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream: nothing left to flush
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        exit_code = main()
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - told on stderr, then the same hard exit
        traceback.print_exc()
        exit_code = 1
    exit_now(exit_code)
