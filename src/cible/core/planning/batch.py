"""Pure decisions of a batch run: the split, which mini-batch a worker gets, what a result or a lost worker
does to a mini-batch, and the verdict over the whole run (issue 17, azureml-spec §6.3).

Azure's semantics: a mini-batch that raises, times out or loses its worker is retried up to `max_retries`
times, then its files count as failed; `run()` returning fewer rows than it was given files counts the
difference as failed files; `error_threshold` is the number of failed files tolerated over
the whole input (-1: all), and once exceeded the job fails. Results of finished mini-batches are final.

No clock reads and no I/O: `now` is an argument, the records are core/models/batch_records.py's.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from datetime import datetime, timedelta

from cible.core.models.batch_records import (
    DONE, FAILED, PENDING, RUNNING, Answer, Assign, BatchProgress, BatchSettings, Claim,
    FailedMiniBatch, Finished, MiniBatch, ResultReport, Tally, Verdict, Wait,
)

WAIT_MS = 200  # how long a worker with nothing to do waits before asking again
LEASE_MARGIN_S = 60  # past its timeout, how long a claim stays its worker's before another node may take it
FAILED_LISTED = 20  # failed mini-batches `job show` lists


def split(files: Iterable[str], mini_batch_size: int) -> list[tuple[str, ...]]:
    """The mini-batches of `files`: sorted by name, `mini_batch_size` each (the last may hold fewer)."""
    if mini_batch_size < 1:
        raise ValueError("mini_batch_size must be at least 1")
    ordered = sorted(set(files))
    return [tuple(ordered[i:i + mini_batch_size]) for i in range(0, len(ordered), mini_batch_size)]


def failed_try(batch: MiniBatch, error: str, settings: BatchSettings, now: datetime) -> MiniBatch:
    """A try that failed: pending again while tries <= max_retries, else failed with its error."""
    tries = batch.tries + 1
    if tries <= settings.max_retries:
        return batch.model_copy(update={"state": PENDING, "tries": tries, "error": error, "worker": None,
                                        "lease_until": None})
    return batch.model_copy(update={"state": FAILED, "tries": tries, "error": error, "worker": None,
                                    "lease_until": None, "rows": 0, "failed_files": len(batch.files),
                                    "ended_at": now})


def reclaim(running: Iterable[MiniBatch], settings: BatchSettings, attempt: int, now: datetime) -> list[MiniBatch]:
    """Running claims that no longer hold: those of an older job attempt (the job was requeued after its node
    died) go back to pending without counting as a try; those of this attempt whose lease ran out (a node
    that stopped answering) count as a timed-out try."""
    changed = []
    for batch in running:
        if batch.state != RUNNING:
            continue
        if (batch.run_attempt or 0) < attempt:
            changed.append(batch.model_copy(update={"state": PENDING, "worker": None, "lease_until": None}))
        elif batch.lease_until is not None and batch.lease_until <= now:
            changed.append(failed_try(batch, f"timed out: no result from worker {batch.worker} within "
                                             f"{settings.timeout} s (+{LEASE_MARGIN_S} s)", settings, now))
    return changed


def decide_claim(candidates: Sequence[MiniBatch], tally: Tally, settings: BatchSettings, claim: Claim, attempt: int,
                 now: datetime, run_failure: str | None = None, workers: int = 1, pending: int | None = None,
                 reported: int | None = None) -> tuple[list[MiniBatch], Tally, Answer]:
    """What a worker asking for work gets, the mini-batches that changed on the way (reclaimed ones, the one
    assigned) and the tally after them. `candidates`: the running mini-batches that may be reclaimed, those
    the claiming worker holds, and the lowest pending one (the rest cannot change the answer); `attempt` is
    the job's current attempt; `run_failure` a failure already recorded on the run (a missing input, init()
    that cannot succeed); `workers`: how many the run has (nodes x max_concurrency_per_instance), for claims
    made ahead; `pending`: how many mini-batches are pending before this claim's reclaims (a count capped
    above `workers` is enough; None: those among the candidates); `reported`: the mini-batch this claim's
    report was about."""
    if claim.attempt < attempt:
        return [], tally, Finished(stale=True, reason=f"attempt {claim.attempt} was replaced by attempt {attempt}")
    if run_failure is not None:
        return [], tally, Finished(failed=True, reason=run_failure)
    changed = reclaim(candidates, settings, attempt, now)
    before = {b.idx: b for b in candidates}
    for after in changed:
        tally = tally_after(tally, before[after.idx], after)
    judged = verdict(tally, settings)
    if judged.outcome == FAILED:
        return changed, tally, Finished(failed=True, reason=judged.reason)
    current = before | {b.idx: b for b in changed}
    held = held_assignment(current.values(), claim, reported)
    if held is not None:  # the answer of an earlier claim was lost and the call retried: the same again
        return changed, tally, Assign(idx=held.idx, files=held.files)
    waiting = [b for b in current.values() if b.state == PENDING]
    if waiting:
        chosen = min(waiting, key=lambda b: b.idx)
        left = len(waiting) if pending is None else pending + sum(
            1 for b in changed if b.state == PENDING and before[b.idx].state != PENDING)
        if claim.ahead and left <= workers:
            # Near the end, a mini-batch held ahead could wait behind its worker's current one while another
            # worker idles: the worker asks again when it is free.
            return changed, tally, Wait(ms=0)
        # One held ahead starts only once its worker's current mini-batch ends: its lease covers both.
        lease = now + timedelta(seconds=settings.timeout * (2 if claim.ahead else 1) + LEASE_MARGIN_S)
        taken = chosen.model_copy(update={"state": RUNNING, "worker": claim.worker, "run_attempt": attempt,
                                          "lease_until": lease, "started_at": now})
        changed = [b for b in changed if b.idx != chosen.idx] + [taken]
        return changed, tally, Assign(idx=taken.idx, files=taken.files)
    if not tally.ended:  # others still run; what fails among them may be retried
        return changed, tally, Wait(ms=WAIT_MS)
    return changed, tally, Finished(failed=judged.outcome == FAILED, reason=judged.reason)


def held_assignment(batches: Iterable[MiniBatch], claim: Claim, reported: int | None) -> MiniBatch | None:
    """A mini-batch the claiming worker already holds but is not scoring and not reporting: assigned by an
    earlier claim whose answer never reached it (its client retried the call after the server committed).
    Only when the worker says what it is scoring: a free worker (no `ahead`) scores nothing; one claiming
    ahead names its current mini-batch in `running` (without it, nothing can be told apart)."""
    if claim.ahead and claim.running is None:
        return None
    held = [b for b in batches if b.state == RUNNING and b.worker == claim.worker
            and b.idx != reported and b.idx != claim.running]
    return min(held, key=lambda b: b.idx, default=None)


def decide_result(batch: MiniBatch, report: ResultReport, settings: BatchSettings, now: datetime) -> MiniBatch | None:
    """The mini-batch after its worker's report; None when the report is stale (the claim is no longer that
    worker's: its lease ran out and another took it, or the job moved to another attempt)."""
    if batch.state != RUNNING or batch.worker != report.worker:
        return None
    if not report.ok:
        return failed_try(batch, report.error or "run() failed", settings, now)
    # Fewer rows than files count the difference as failed files, for append_row and summary_only alike
    # (azureml-spec §6.3: that is why a summary_only script returns its mini_batch).
    short = max(0, len(batch.files) - report.rows)
    error = (f"run() returned {report.rows} rows for {len(batch.files)} files: {short} files counted as failed"
             if short else None)
    return batch.model_copy(update={"state": DONE, "rows": report.rows, "failed_files": short, "error": error,
                                    "worker": None, "lease_until": None, "ended_at": now})


def worker_lost(running: Iterable[MiniBatch], worker: str, error: str, settings: BatchSettings,
                now: datetime, attempt: int = 1, tried: Container[int] | None = None) -> list[MiniBatch]:
    """A worker process died (or was killed past its timeout) holding claims. Only the mini-batch it was
    running (`tried`: its index, empty when it ran none) counts a failed try; every other one it held (claimed
    ahead and never started, or run and not yet reported) goes back to pending without a try, and is redone.
    Claims of an older job attempt (its node was lost and the job requeued) go back to pending as `reclaim`
    puts them. `tried` None: every held one counts (a runner that does not say which it was running)."""
    changed = []
    for b in running:
        if b.state != RUNNING or b.worker != worker:
            continue
        older = b.run_attempt is not None and b.run_attempt < attempt
        if older or (tried is not None and b.idx not in tried):
            changed.append(b.model_copy(update={"state": PENDING, "worker": None, "lease_until": None}))
        else:
            changed.append(failed_try(b, error, settings, now))
    return changed


def tally_of(batches: Iterable[MiniBatch]) -> Tally:
    """The tally of a whole run (when none is kept yet: a server that restarted)."""
    batches = list(batches)
    tally = Tally(total=len(batches))
    for batch in batches:
        tally = tally_after(tally, MiniBatch(idx=batch.idx, files=batch.files), batch)
    return tally


def tally_after(tally: Tally, before: MiniBatch, after: MiniBatch) -> Tally:
    """The tally once `before` became `after` (a mini-batch ends once: done and failed are final)."""
    if before.terminal or not after.terminal:
        return tally
    first = tally.first_failed
    if after.failed_files and (first is None or after.idx < first.index):
        first = FailedMiniBatch(index=after.idx, files=after.files, tries=after.tries, error=after.error)
    return tally.model_copy(update={
        "done": tally.done + (after.state == DONE), "failed": tally.failed + (after.state == FAILED),
        "failed_files": tally.failed_files + after.failed_files, "rows": tally.rows + (after.rows or 0),
        "first_failed": first})


def verdict(tally: Tally, settings: BatchSettings, run_failure: str | None = None) -> Verdict:
    """Failed when a failure is recorded on the run or error_threshold is exceeded (failed files over the
    threshold; -1 tolerates all); completed once every mini-batch is done or failed; else None."""
    if run_failure is not None:
        return Verdict(outcome=FAILED, reason=run_failure)
    if settings.error_threshold >= 0 and tally.failed_files > settings.error_threshold:
        first = tally.first_failed
        where = (f"; mini-batch {first.index} ({', '.join(first.files[:3])}{' …' if len(first.files) > 3 else ''}): "
                 f"{first.error}") if first is not None else ""
        return Verdict(outcome=FAILED, reason=(f"error_threshold {settings.error_threshold} exceeded: "
                                               f"{tally.failed_files} files failed{where}"))
    if tally.total and tally.ended:
        reason = (f"{tally.failed} of {tally.total} mini-batches failed ({tally.failed_files} files), tolerated by "
                  f"error_threshold {settings.error_threshold}") if tally.failed_files else None
        return Verdict(outcome="completed", reason=reason)
    return Verdict()


def progress(batches: Sequence[MiniBatch], *, started_at: datetime | None, ended_at: datetime | None,
             now: datetime, outcome: str | None, reason: str | None) -> BatchProgress:
    """The `batch` block of `job show`: counts, rows, rows/s while scoring, the failed mini-batches."""
    count = {state: 0 for state in (PENDING, RUNNING, DONE, FAILED)}
    for b in batches:
        count[b.state] += 1
    rows = sum(b.rows or 0 for b in batches)
    # Rows/s over the scoring itself, from the first mini-batch's start to the last one's end (or now), as
    # perf-anchors measures a floor: the workers' start and init() (imports, model load) are not in it.
    starts = [b.started_at for b in batches if b.started_at is not None]
    ends = [b.ended_at for b in batches if b.ended_at is not None]
    first = min(starts, default=None) or started_at
    scoring_over = ended_at is not None or (bool(batches) and count[PENDING] + count[RUNNING] == 0)
    last = (max(ends, default=None) or ended_at or now) if scoring_over else now
    elapsed = (last - first).total_seconds() if first else 0
    failed = sorted((b for b in batches if b.state == FAILED), key=lambda b: b.idx)
    return BatchProgress(
        total=len(batches), done=count[DONE], failed=count[FAILED], running=count[RUNNING], pending=count[PENDING],
        files=sum(len(b.files) for b in batches), failed_files=sum(b.failed_files for b in batches), rows=rows,
        rows_per_second=round(rows / elapsed, 1) if elapsed > 0 else None,
        failed_mini_batches=tuple(FailedMiniBatch(index=b.idx, files=b.files, tries=b.tries, error=b.error)
                                  for b in failed[:FAILED_LISTED]),
        failed_mini_batches_count=len(failed), outcome=outcome, reason=reason)
