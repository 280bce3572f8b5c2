"""A batch job's run as typed state: its settings block, its mini-batches, what a runner asks and reports,
and the progress `job show` prints.

The server keeps one `mini_batches` row per mini-batch (server/store/rows.py); these records are what the
pure decisions of `core/planning/batch.py` read and return, so the service only loads rows into records
and writes the changed records back (under the rows' version columns).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
TERMINAL = (DONE, FAILED)
COMPLETED = "completed"  # a batch run's outcome (else FAILED)
APPEND_ROW, SUMMARY_ONLY = "append_row", "summary_only"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatchSettings(BaseModel):
    """The plan's `batch` block (what the invoke made of the deployment's settings). Keys this runner does
    not know are ignored, so a newer server's block still runs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    endpoint: str = ""
    deployment: str = ""
    mini_batch_size: int = Field(10, ge=1)
    max_concurrency_per_instance: int = Field(1, ge=1)
    output_action: Literal["append_row", "summary_only"] = APPEND_ROW
    output_file_name: str = "predictions.csv"
    max_retries: int = Field(3, ge=0)
    timeout: int = Field(30, ge=1)  # seconds per mini-batch
    error_threshold: int = Field(-1, ge=-1)  # failed files tolerated; -1: every failure
    logging_level: str = "info"
    input: str = "input_data"
    output: str = "score"
    mlflow: bool = False


class MiniBatch(_Frozen):
    """One mini-batch: its files (relative to the input), where it stands, and its result."""

    idx: int
    files: tuple[str, ...]
    state: Literal["pending", "running", "done", "failed"] = PENDING
    tries: int = 0  # failed tries so far
    rows: int | None = None
    failed_files: int = 0
    error: str | None = None
    worker: str | None = None
    run_attempt: int | None = None  # the job attempt whose runner holds (or held) it
    lease_until: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


WORKER_NAME = Field(min_length=1, max_length=64)  # mini_batches.worker is String(64)
MAX_INT = 2**62  # what reaches SQL stays in a 64-bit column


class Claim(_Frozen):
    """A worker asking for its next mini-batch."""

    worker: str = WORKER_NAME
    attempt: int = Field(1, ge=1, le=MAX_INT)  # the job attempt the runner belongs to
    # A claim made while the worker still runs its current mini-batch (so no round trip lies between two
    # run() calls): granted only while more mini-batches are left than the run has workers, so that
    # holding one ahead never leaves another worker idle at the end.
    ahead: bool = False
    # With `ahead`: the mini-batch the worker is scoring now. A worker holding a running mini-batch other
    # than this one and the one it reports lost the answer of an earlier claim (its client retried the
    # call): that held assignment is answered again rather than a new one.
    running: int | None = Field(None, ge=0, le=MAX_INT)


class ResultReport(_Frozen):
    """A worker's outcome of a mini-batch it holds: `rows` returned, or the `error` it raised."""

    idx: int = Field(ge=0, le=MAX_INT)
    worker: str = WORKER_NAME
    ok: bool
    rows: int = Field(0, ge=0, le=MAX_INT)
    error: str | None = None


class Assign(_Frozen):
    kind: Literal["assign"] = "assign"
    idx: int
    files: tuple[str, ...]


class Wait(_Frozen):
    kind: Literal["wait"] = "wait"
    ms: int


class Finished(_Frozen):
    kind: Literal["finished"] = "finished"
    failed: bool = False
    reason: str | None = None
    stale: bool = False  # the asking runner belongs to an older attempt of the job: it should stop
    # The server took care of `<output>/<output_file_name>` before telling anyone finished (written, failed
    # with its reason on the run, or nothing to join: summary_only). False only where the server does not
    # reach the output (an upload-mode output on the node): the node runner joins its own parts then.
    joined: bool = False


Answer = Assign | Wait | Finished


class FailedMiniBatch(_Frozen):
    index: int
    files: tuple[str, ...]
    tries: int
    error: str | None


class Tally(_Frozen):
    """A batch run's counts, kept as each mini-batch changes (so a claim reads a few rows, not all of them):
    mini-batches done and failed, failed files, rows, and the first mini-batch with failed files (the
    error an exceeded error_threshold names)."""

    total: int
    done: int = 0
    failed: int = 0
    failed_files: int = 0
    rows: int = 0
    first_failed: FailedMiniBatch | None = None

    @property
    def ended(self) -> bool:
        return self.done + self.failed >= self.total


class Verdict(_Frozen):
    """Where the whole batch run stands: None while it goes on, else its outcome and why."""

    outcome: Literal["completed", "failed"] | None = None
    reason: str | None = None


class BatchProgress(_Frozen):
    """The `batch` block of `job show`."""

    total: int
    done: int
    failed: int
    running: int
    pending: int
    files: int
    failed_files: int
    rows: int
    rows_per_second: float | None
    failed_mini_batches: tuple[FailedMiniBatch, ...] = ()
    failed_mini_batches_count: int = 0
    outcome: str | None = None
    reason: str | None = None
