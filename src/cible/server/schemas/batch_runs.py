"""A batch job's runners' calls and its progress (routers/batch_runs.py, services/batch_runs.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope


class BatchStart(Envelope):
    """The batch run as recorded: its settings and size, or how long to wait for node 0's listing."""

    settings: dict[str, Any] | None = Field(None, description="the job's batch settings (its plan's `batch` block)")
    total: int | None = Field(None, description="mini-batches")
    files: int | None = Field(None, description="files in the input")
    outcome: str | None = Field(None, description="completed or failed once the run ended; null while it goes on")
    reason: str | None = Field(None, description="why it failed (or what it tolerated)")
    wait_ms: int | None = Field(None, description="no split recorded yet: ask again after this long")


class BatchClaimAnswer(Envelope):
    """What a worker does next: a mini-batch (`assign`), `wait`, or stop (`finished`)."""

    kind: str = Field(description="assign | wait | finished")
    idx: int | None = Field(None, description="the mini-batch's index (assign)")
    files: list[str] | None = Field(None, description="its files, relative to the input (assign)")
    ms: int | None = Field(None, description="how long to wait before asking again (wait)")
    failed: bool | None = Field(None, description="the run failed (finished)")
    reason: str | None = Field(None, description="why (finished)")
    stale: bool | None = Field(None, description="the caller belongs to an older attempt of the job (finished)")
    joined: bool | None = Field(None, description="the server joined the output file (or there is none to join) "
                                                  "before answering finished; false: the node joins its parts")


class BatchLostAnswer(Envelope):
    failed_tries: list[int] = Field(description="the mini-batch the lost worker was running: a failed try")
    requeued: list[int] | None = Field(None, description="the other mini-batches it held: pending again, no try")


class BatchOutcome(Envelope):
    outcome: str | None = Field(None, description="completed or failed")
    reason: str | None = Field(None, description="why")


class FailedMiniBatch(Envelope):
    index: int
    files: list[str]
    tries: int
    error: str | None = None


class BatchProgress(Envelope):
    """A batch job's progress (`job show`'s `batch` block); empty until a runner recorded the split."""

    total: int | None = Field(None, description="mini-batches")
    done: int | None = None
    failed: int | None = None
    running: int | None = None
    pending: int | None = None
    files: int | None = Field(None, description="files in the input")
    failed_files: int | None = Field(None, description="files counted as failed (error_threshold counts these)")
    rows: int | None = Field(None, description="rows returned by run()")
    rows_per_second: float | None = Field(None, description="rows since the run started, per second")
    failed_mini_batches: list[FailedMiniBatch] | None = Field(None, description="the first 20 failed mini-batches")
    failed_mini_batches_count: int | None = None
    outcome: str | None = None
    reason: str | None = None
