"""A batch job's run, kept by the server: the split of its input, every mini-batch's state, the runners'
claims and reports, the verdict, and the joined result (issue 17).

The runners (`python -m cible.serving.batch`, one per node, its workers) ask; the decisions are the pure
ones of core/planning/batch.py over core/models/batch_records.py. A job's calls are serialised by a lock
of this process (one server per workspace) and written in one transaction through the rows' version
columns, so two workers never get one mini-batch, and a write that lost a race is decided again.

    start  the first runner records the split of the files it lists (once; later callers get the same)
    claim  the previous mini-batch's outcome and the next mini-batch, in one round trip (a retried claim
           whose answer was lost gets the mini-batch it was given again)
    lost   a worker process died: the mini-batch it was running counts a failed try, the others it held
           go back to pending
    fail   the run cannot go on (the scoring script cannot start): the batch fails with that reason

The decision that makes the run terminal joins the parts of its done mini-batches into
`<output>/<output_file_name>` (append_row; partial results too when it failed) under the job's lock,
before any worker is told finished (`joined` in the answer); a join that fails fails the run. The join
reads a folder the job wrote: serving/batch/output.py follows no link and opens no FIFO there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cible.core.clock import Clock
from cible.core.errors import InvalidRequestError, NotFoundError
from cible.core.models.batch_records import (
    APPEND_ROW, DONE, FAILED, MAX_INT, PENDING, RUNNING, BatchSettings, Claim, Finished, MiniBatch, ResultReport,
    Tally, Wait,
)
from cible.core.models.records import ClusterHandle
from cible.core.planning.batch import (
    WAIT_MS, decide_claim, decide_result, progress, split, tally_after, tally_of, verdict, worker_lost,
)
from cible.serving.batch.output import PARTS_DIR, join_parts
from cible.server.store.db import Store
from cible.server.store.rows import BatchRunRow, JobRow, MiniBatchRow

logger = logging.getLogger(__name__)
MAX_FILES = 1_000_000
MAX_TEXT = 4000  # an error or reason kept (the head of it)
FIELDS = ("files", "state", "tries", "rows", "failed_files", "error", "worker", "run_attempt", "lease_until",
          "started_at", "ended_at")


class BatchRunService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store, self.clock = store, clock
        self._locks: dict[str, threading.Lock] = {}
        self._tallies: dict[str, Tally] = {}  # each run's counts, kept as it changes (see _tally)
        self._started: dict[str, datetime] = {}
        self._joining: set[str] = set()  # runs whose output is being joined (under their lock)
        self._locks_guard = threading.Lock()

    # -- the runners' calls --------------------------------------------------------------------

    def start(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Record the split of `files` (once) and answer the settings and the total; `error` (the input is
        missing) fails the run; a caller without files (node rank > 0) waits until the split is recorded."""
        files, error = body.get("files"), body.get("error")
        if files is not None and (not isinstance(files, list) or len(files) > MAX_FILES
                                  or not all(_plain_name(f) for f in files)):
            raise InvalidRequestError("files: a list of file names (no folders, '..' or NUL) of the input",
                                      details={"field": "files"})
        if error is not None and not isinstance(error, str):
            raise InvalidRequestError("error: a message", details={"field": "error"})

        def record(session: Session) -> dict[str, Any] | None:
            row, settings = self._job(session, name)
            run = session.get(BatchRunRow, name)
            if run is None:
                now = self.clock.now()
                if error is None and files is None:
                    return None
                reason = error or (None if files else "the input holds no files to score")
                batches = [] if reason else split(files, settings.mini_batch_size)
                run = BatchRunRow(job_name=name, total=len(batches), files=len(files or []), started_at=now,
                                  outcome=FAILED if reason else None, reason=_clip(reason),
                                  ended_at=now if reason else None)
                session.add(run)
                session.add_all(MiniBatchRow(job_name=name, idx=i, files=list(b), state="pending")
                                for i, b in enumerate(batches))
            return {"settings": settings.model_dump(mode="json"), "total": run.total, "files": run.files,
                    "outcome": run.outcome, "reason": run.reason}

        with self._lock(name):
            answer = self.store.transact(record)
        return answer if answer is not None else {"wait_ms": WAIT_MS}

    def claim(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Report the previous mini-batch's outcome (`result`, optional) and claim the next: an
        assignment {idx, files}, a wait, or finished (failed, with the reason, when the run failed; `joined`:
        the server took care of the joined output). Reads the reported row, the running claims that may be
        reclaimed or that the worker holds, and the lowest pending row: a claim costs the same whatever the
        number of mini-batches (the counts are the run's kept tally; a claim ahead counts pending rows up to
        the number of workers). A retried claim whose first answer was lost gets the same mini-batch again."""
        try:
            claim = Claim(worker=body.get("worker"), attempt=body.get("attempt") or 1, ahead=bool(body.get("ahead")),
                          running=body.get("running"))
            report = ResultReport(worker=claim.worker, **body["result"]) if body.get("result") else None
        except (ValidationError, TypeError) as exc:
            raise InvalidRequestError(f"a claim: {_first_error(exc)}", details={"field": "result"}) from None
        if name in self._joining:  # the run ended and its output is being joined: finished once it is
            return Wait(ms=WAIT_MS).model_dump(mode="json")

        def decide(session: Session) -> tuple[dict[str, Any], Tally, _Ended | None]:
            row, settings, run = self._run(session, name)
            now, attempt = self.clock.now(), _attempt(row)
            tally = self._tally(session, run)
            rows: dict[int, MiniBatchRow] = {}
            changed: dict[int, MiniBatch] = {}
            pending_change = 0
            if report is not None:
                reported = session.get(MiniBatchRow, (name, report.idx))
                if reported is not None:
                    rows[reported.idx] = reported
                    before = _record(reported)
                    after = decide_result(before, report, settings, now)
                    if after is not None:
                        changed[after.idx] = after
                        tally = tally_after(tally, before, after)
                        pending_change = int(after.state == PENDING)
            answer: Any = Finished()
            if body.get("claim", True):
                for candidate in self._candidates(session, name, claim.worker, attempt, now):
                    rows.setdefault(candidate.idx, candidate)
                candidates = [changed.get(idx) or _record(r) for idx, r in rows.items()]
                workers = settings.max_concurrency_per_instance * row.instance_count
                pending = (self._pending(session, name, workers + 1) + pending_change) if claim.ahead else None
                moved, tally, answer = decide_claim(candidates, tally, settings, claim, attempt, now,
                                                    run_failure=run.reason if run.outcome == FAILED else None,
                                                    workers=workers, pending=pending,
                                                    reported=report.idx if report is not None else None)
                changed.update({b.idx: b for b in moved})
            ended = self._write(session, run, rows, changed, settings, tally, now)
            if isinstance(answer, Finished):
                answer = answer.model_copy(update={"joined": _joined_by_server(row, settings)})
            return answer.model_dump(mode="json"), tally, ended

        return self._decide(name, decide)

    def lost(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A worker died (or was killed past its timeout) holding claims: `idx`, the mini-batch it was running
        (null: none), counts a failed try; the others it held go back to pending without one."""
        worker, error = body.get("worker"), body.get("error") or "worker died"
        if not isinstance(worker, str) or not worker or not isinstance(error, str):
            raise InvalidRequestError("worker: the lost worker's name; error: why", details={"field": "worker"})
        idx = body.get("idx")
        if idx is not None and (not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx <= MAX_INT):
            raise InvalidRequestError("idx: the mini-batch the lost worker was running (null: none)",
                                      details={"field": "idx"})
        # A runner that does not send `idx` at all cannot tell which one it ran: each held claim counts a try
        # (so a mini-batch that kills its worker every time still ends failed).
        tried = None if "idx" not in body else (() if idx is None else (idx,))

        def decide(session: Session) -> tuple[dict[str, Any], Tally, _Ended | None]:
            row, settings, run = self._run(session, name)
            now, tally = self.clock.now(), self._tally(session, run)
            held = {r.idx: r for r in session.scalars(select(MiniBatchRow).where(
                MiniBatchRow.job_name == name, MiniBatchRow.state == RUNNING, MiniBatchRow.worker == worker))}
            changed = {b.idx: b for b in worker_lost([_record(r) for r in held.values()], worker, _clip(error),
                                                     settings, now, _attempt(row), tried=tried)}
            for at, after in changed.items():
                tally = tally_after(tally, _record(held[at]), after)
            counted = sorted(i for i, b in changed.items() if b.tries > held[i].tries)
            ended = self._write(session, run, held, changed, settings, tally, now)
            return ({"failed_tries": counted, "requeued": sorted(set(changed) - set(counted))}, tally, ended)

        return self._decide(name, decide)

    def fail(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """The run cannot go on (`reason`: the scoring script cannot start): it fails with that reason."""
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason:
            raise InvalidRequestError("reason: why the batch run cannot go on", details={"field": "reason"})

        def decide(session: Session) -> tuple[dict[str, Any], Tally, _Ended | None]:
            row, settings, run = self._run(session, name)
            tally = self._tally(session, run)
            ended = self._write(session, run, {}, {}, settings, tally, self.clock.now(), run_failure=_clip(reason))
            return {"outcome": run.outcome, "reason": run.reason, "joined": _joined_by_server(row, settings)}, \
                tally, ended

        return self._decide(name, decide)

    def _decide(self, name: str, decide: Any) -> dict[str, Any]:
        """One decision in one transaction under the job's lock; the tally kept once it committed. The
        decision that ends the run joins the parts before it answers and before the lock is let go, so no
        worker is told finished before `<output>/<output_file_name>` is whole; a join that fails fails the
        run with its reason (and this answer says so). Claims that come meanwhile are told to wait."""
        with self._lock(name):
            answer, tally, ended = self.store.transact(decide)
            self._tallies[name] = tally
            if ended is not None:
                with self._locks_guard:
                    self._joining.add(name)
                try:
                    failure = self._join(name, ended)
                    if failure is not None:
                        answer = self._record_join_failure(name, failure, answer)
                finally:
                    with self._locks_guard:
                        self._joining.discard(name)
        return answer

    # -- the view ----------------------------------------------------------------------------------

    def progress(self, name: str) -> dict[str, Any] | None:
        """The `batch` block of `job show`; None until a runner recorded the split."""
        with self.store.session() as session:
            return batch_view(session, name, self.clock.now())

    # -- inside a transaction ------------------------------------------------------------------------

    def _job(self, session: Session, name: str) -> tuple[JobRow, BatchSettings]:
        row = session.get(JobRow, name)
        if row is None:
            raise NotFoundError(f"job '{name}' does not exist in this workspace", details={"name": name})
        block = row.run.plan.get("batch") if row.run is not None else None
        if not block:
            raise InvalidRequestError(f"job '{name}' is not a batch job (it was not made by a batch-endpoint "
                                      "invoke)", details={"field": "name"})
        try:
            return row, BatchSettings.model_validate(block)
        except ValidationError as exc:
            raise InvalidRequestError(f"job '{name}': its batch settings cannot be read: {_first_error(exc)}",
                                      details={"field": "batch"}) from None

    def _run(self, session: Session, name: str) -> tuple[JobRow, BatchSettings, BatchRunRow]:
        row, settings = self._job(session, name)
        run = session.get(BatchRunRow, name)
        if run is None:
            raise InvalidRequestError(f"job '{name}': no runner has started its batch run yet (call start first)",
                                      details={"field": "name"})
        return row, settings, run

    def _tally(self, session: Session, run: BatchRunRow) -> Tally:
        """The run's tally as kept by this process, else counted from its rows (after a restart). Kept by
        job name, checked against the run's size and start: a job deleted and submitted again is counted anew."""
        kept = self._tallies.get(run.job_name)
        if kept is not None and kept.total == run.total and self._started.get(run.job_name) == run.started_at:
            return kept
        rows = session.scalars(select(MiniBatchRow).where(MiniBatchRow.job_name == run.job_name)).all()
        self._started[run.job_name] = run.started_at
        return tally_of(_record(r) for r in rows)

    def _candidates(self, session: Session, name: str, worker: str, attempt: int, now: datetime) -> list[MiniBatchRow]:
        """The rows a claim can change or answer: running ones of an older attempt, past their lease, or held
        by the claiming worker (a lost answer), and the lowest pending one."""
        running = session.scalars(select(MiniBatchRow).where(
            MiniBatchRow.job_name == name, MiniBatchRow.state == RUNNING,
            or_(MiniBatchRow.worker == worker, MiniBatchRow.run_attempt < attempt, MiniBatchRow.run_attempt.is_(None),
                MiniBatchRow.lease_until <= now))).all()
        pending = session.scalars(select(MiniBatchRow).where(MiniBatchRow.job_name == name, MiniBatchRow.state == PENDING)
                                  .order_by(MiniBatchRow.idx).limit(1)).all()
        return [*running, *pending]

    def _pending(self, session: Session, name: str, up_to: int) -> int:
        """How many mini-batches are pending, counted up to `up_to` on the (job_name, state) index: a claim
        ahead only needs to know whether more are left than the run has workers."""
        first = select(MiniBatchRow.job_name).where(MiniBatchRow.job_name == name,
                                                    MiniBatchRow.state == PENDING).limit(up_to).subquery()
        return session.scalar(select(func.count()).select_from(first)) or 0

    def _write(self, session: Session, run: BatchRunRow, rows: dict[int, MiniBatchRow], changed: dict[int, MiniBatch],
               settings: BatchSettings, tally: Tally, now: datetime, run_failure: str | None = None) -> _Ended | None:
        """Write the changed mini-batches; end the run when the verdict says so. What to join when the run
        ended in this transaction (append_row, an output this server reaches), else None."""
        for idx, batch in changed.items():
            row = rows[idx]
            for field in FIELDS:
                value = getattr(batch, field)
                value = list(value) if field == "files" else _clip(value) if field == "error" else value
                if getattr(row, field) != value:
                    setattr(row, field, value)
        if run.outcome is not None:
            # Ended before: joined, unless the server was killed while it joined (the join removes the
            # parts folder last, so a folder still there means it did not finish): joined again, as it is
            # idempotent, so a restart loses no result.
            return self._to_join(session, run, settings, only_if_unjoined=True)
        judged = verdict(tally, settings, run_failure)
        if judged.outcome is None:
            return None
        run.outcome, run.reason, run.ended_at = judged.outcome, _clip(judged.reason), now
        return self._to_join(session, run, settings)

    def _to_join(self, session: Session, run: BatchRunRow, settings: BatchSettings, *,
                 only_if_unjoined: bool = False) -> _Ended | None:
        """What to join for an ended run (append_row, an output this server reaches), else None."""
        job = session.get(JobRow, run.job_name)
        target = _output_folder(job, settings) if job is not None else None
        if settings.output_action != APPEND_ROW or target is None:
            return None
        if only_if_unjoined and not os.path.isdir(os.path.join(target, PARTS_DIR)):
            return None
        session.flush()
        done = list(session.scalars(select(MiniBatchRow.idx).where(MiniBatchRow.job_name == run.job_name,
                                                                   MiniBatchRow.state == DONE)))
        return _Ended(folder=target, file_name=settings.output_file_name, done=done)

    def _join(self, name: str, ended: _Ended) -> str | None:
        """Join the done parts into the output file; why it failed, else None."""
        try:
            join_parts(ended.folder, ended.file_name, ended.done)
        except Exception as exc:  # noqa: BLE001 - recorded on the run as its failure
            logger.exception("joining the results of batch job %s", name)
            return f"joining the results into {ended.file_name} failed: {type(exc).__name__}: {exc}"
        return None

    def _record_join_failure(self, name: str, failure: str, answer: dict[str, Any]) -> dict[str, Any]:
        """The run ended but its results could not be joined: it failed, with that reason."""
        def record(session: Session) -> str | None:
            run = session.get(BatchRunRow, name)
            if run is None:
                return None
            reason = _clip(failure if run.outcome != FAILED or not run.reason else f"{run.reason}; {failure}")
            run.outcome, run.reason = FAILED, reason
            return reason

        reason = self.store.transact(record)
        if answer.get("kind") == "finished":
            return {**answer, "failed": True, "reason": reason}
        if "outcome" in answer:
            return {**answer, "outcome": FAILED, "reason": reason}
        return answer

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(name)
            if lock is None:
                if len(self._locks) > 1024:  # ended runs: their lock and kept counts dropped (counted again if asked)
                    for key in [k for k, v in self._locks.items() if not v.locked()][:512]:
                        del self._locks[key]
                        self._tallies.pop(key, None)
                        self._started.pop(key, None)
                lock = self._locks[name] = threading.Lock()
            return lock


class TokenCheck:
    """Whether a job's run token still counts (its submission, not ended long ago), asked of the job service
    at most once per `ttl_s` per token: a claim per mini-batch must not cost a read of the job."""

    def __init__(self, refusal, ttl_s: float = 5.0) -> None:  # noqa: ANN001
        self.refusal, self.ttl_s = refusal, ttl_s
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}

    def __call__(self, name: str, salt: str) -> str | None:
        key, now = (name, salt), time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if len(self._cache) > 4096:
            self._cache.clear()
        answer = self.refusal(name, salt)
        self._cache[key] = (now + self.ttl_s, answer)
        return answer


def batch_view(session: Session, name: str, now: datetime) -> dict[str, Any] | None:
    """The `batch` block of a batch job's `job show` (services/jobs.py), in the caller's transaction."""
    run = session.get(BatchRunRow, name)
    if run is None:
        return None
    rows = session.scalars(select(MiniBatchRow).where(MiniBatchRow.job_name == name)).all()
    view = progress([_record(r) for r in rows], started_at=_aware(run.started_at), ended_at=_aware(run.ended_at),
                    now=now, outcome=run.outcome, reason=run.reason)
    return view.model_dump(mode="json")


@dataclass(frozen=True)
class _Ended:
    """A run that ended in a decision, and what to join: the done mini-batches' parts into the file."""

    folder: str
    file_name: str
    done: list[int]


def _output_folder(row: JobRow, settings: BatchSettings) -> str | None:
    """The run's output folder where this server reaches it (a datastore path); None for an upload-mode
    output, which lives on the node (its runner joins it there)."""
    plan = row.run.plan if row.run is not None else {}
    output = (plan.get("outputs") or {}).get(settings.output) or {}
    if output.get("mode") == "upload" or not output.get("local_path"):
        return None
    return str(output["local_path"])


def _joined_by_server(row: JobRow, settings: BatchSettings) -> bool:
    """What a `finished` answer says in `joined`: nothing for the node to join (summary_only) or the
    server joined it (or recorded why it could not) before anyone was told finished."""
    return settings.output_action != APPEND_ROW or _output_folder(row, settings) is not None


def _record(row: MiniBatchRow) -> MiniBatch:
    return MiniBatch(idx=row.idx, files=tuple(row.files), state=row.state, tries=row.tries, rows=row.rows,
                     failed_files=row.failed_files, error=row.error, worker=row.worker, run_attempt=row.run_attempt,
                     lease_until=_aware(row.lease_until), started_at=_aware(row.started_at),
                     ended_at=_aware(row.ended_at))


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; the clock's are UTC-aware."""
    if value is None or value.tzinfo is not None:
        return value
    from datetime import timezone

    return value.replace(tzinfo=timezone.utc)


def _attempt(row: JobRow) -> int:
    handle = row.run.handle if row.run is not None else None
    return handle.attempt if isinstance(handle, ClusterHandle) else 1


def _plain_name(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= 1024 and "/" not in name and "\\" not in name
            and "\0" not in name and name not in (".", ".."))


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(exc)
