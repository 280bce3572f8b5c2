"""One batch worker process: import the scoring script once, `init()` once, then claim mini-batches from the
server and call `run(mini_batch)` on each (absolute file paths), until the server says finished.

Started by the node runner (node.py) as `python -m cible.serving.batch.worker CONFIG WORKER_NAME`; it tells
the node runner what it does on the file descriptor CIBLE_BATCH_STATUS_FD, one JSON object a line:

    {"event": "ready"}                                init() returned; claiming
    {"event": "start", "idx": 7}                      run() of mini-batch 7 begins (the runner times it)
    {"event": "end", "idx": 7}                        its outcome is written (part file) and about to be reported
    {"event": "fatal", "error": "..."}                the script cannot be used (import, no init/run): no retry helps
    {"event": "init_failed", "error": "..."}          init() raised (the runner may try a new worker)
    {"event": "finished", "failed": bool, "reason": ..., "stale": bool}

Each mini-batch's result is written to its part file before it is reported done (output.py), and its
outcome reported in the same call that claims the next (one round trip per mini-batch). `run()` is
bounded by the mini-batch timeout with SIGALRM (this is the process's main thread); a run() that does not
come back from C code is killed by the node runner after the timeout and a grace.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
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
        result: dict[str, Any] | None = None
        while True:
            try:
                answer = self.api.claim({"worker": self.name, "attempt": self.config["attempt"], "result": result})
            except ApiError as exc:
                print(f"cible batch worker {self.name}: {exc}", file=sys.stderr, flush=True)
                return 5
            result = None
            kind = answer.get("kind")
            if kind == "finished":
                self.tell("finished", failed=bool(answer.get("failed")), reason=answer.get("reason"),
                          stale=bool(answer.get("stale")))
                return 0
            if kind == "wait":
                time.sleep(max(int(answer.get("ms") or 200), 10) / 1000)
                continue
            result = self.score(scorer, answer["idx"], answer["files"])

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


if __name__ == "__main__":
    sys.exit(main())
