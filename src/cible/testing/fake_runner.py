"""A job runner that starts no process, for tests of the code that drives runners (the job
reconciler, the services above it).

It answers as `LocalProcessRunner` does, without a launcher: at a job's first submit it makes the
job's run folder `<root>/<job>/artifacts` (so a name the OS refuses fails with the OS's own error)
and hands back a local handle; a second submit of the same job answers the first launch's handle
(launches are idempotent, keyed by the job name). The test says what each launcher reports, and
which polls fail. It records every call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cible.core.lifecycle.runs import RunObservation


class FakeJobRunner:
    """`reports[job]`: the statuses that job's launcher reported, oldest first (`default_history`
    for a job not in it); `broken_poll`: the jobs whose poll raises OSError; `during`: called inside
    every submit and poll, as another writer acting meanwhile. `submits` lists every submit call,
    `starts` only the first launch of each job, `canceled` every cancel, by job name."""

    name = "local"

    def __init__(self, root: Path, *, default_history: Iterable[str] = (),
                 during: Callable[[], None] | None = None) -> None:
        self.root = Path(root)
        self.default_history = list(default_history)
        self.reports: dict[str, list[str]] = {}
        self.broken_poll: set[str] = set()
        self.during: Callable[[], None] = during or (lambda: None)
        self.launched: dict[str, dict[str, Any]] = {}  # job name → the handle of its launch
        self.submits: list[str] = []
        self.starts: list[str] = []
        self.canceled: list[str] = []

    def handle(self, job_name: str) -> dict[str, Any]:
        """The handle the local runner makes for `job_name` (its launcher's pid aside: nothing runs)."""
        return {"runner": self.name, "run_dir": str(self.root / job_name), "pid": 0}

    @staticmethod
    def job_of(handle: dict[str, Any]) -> str:
        return Path(handle["run_dir"]).name

    # -- the contract ------------------------------------------------------------------

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, job_name: str, plan: dict[str, Any]) -> dict[str, Any]:
        self.during()
        self.submits.append(job_name)
        if job_name not in self.launched:
            (self.root / job_name / "artifacts").mkdir(parents=True, exist_ok=True)  # raises as the OS does
            self.starts.append(job_name)
            self.launched[job_name] = self.handle(job_name)
        return self.launched[job_name]

    def poll(self, handle: dict[str, Any]) -> RunObservation:
        self.during()
        job = self.job_of(handle)
        if job in self.broken_poll:
            raise OSError(f"cannot read the state of {job}")
        return RunObservation(history=list(self.reports.get(job, self.default_history)))

    def cancel(self, handle: dict[str, Any]) -> None:
        self.canceled.append(self.job_of(handle))

    def log_path(self, handle: dict[str, Any]) -> Path | None:
        return None
