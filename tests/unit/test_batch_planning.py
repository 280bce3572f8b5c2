"""The pure decisions of a batch run (core/planning/batch.py): split, claim, result, lost worker, verdict."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cible.core.models.batch_records import BatchSettings, Claim, MiniBatch, ResultReport
from cible.core.models.batch_records import Tally
from cible.core.planning.batch import (
    LEASE_MARGIN_S, decide_claim, decide_result, progress, split, tally_after, tally_of, verdict, worker_lost,
)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
SETTINGS = BatchSettings(mini_batch_size=2, max_retries=1, timeout=10, error_threshold=-1)


def batches(n: int, **update) -> list[MiniBatch]:  # noqa: ANN003
    return [MiniBatch(idx=i, files=(f"f{2 * i}.csv", f"f{2 * i + 1}.csv"), **update) for i in range(n)]


def test_split_is_sorted_deterministic_and_keeps_a_short_last_batch() -> None:
    assert split(["c", "a", "e", "b", "d"], 2) == [("a", "b"), ("c", "d"), ("e",)]
    assert split(["b", "a"], 10) == [("a", "b")]
    assert split([], 3) == []
    with pytest.raises(ValueError):
        split(["a"], 0)


def claim(state: list[MiniBatch], settings: BatchSettings = SETTINGS, worker: str = "w1", attempt: int = 1,
          current: int = 1):  # noqa: ANN201
    """decide_claim over a whole state: its tally, and every non-terminal batch as a candidate."""
    changed, _, answer = decide_claim([b for b in state if not b.terminal], tally_of(state), settings,
                                      Claim(worker=worker, attempt=attempt), current, NOW)
    return changed, answer


def test_claim_gives_the_lowest_pending_batch_and_leases_it() -> None:
    state = batches(3)
    state[0] = state[0].model_copy(update={"state": "done", "rows": 2})
    changed, answer = claim(state)
    assert answer.kind == "assign" and answer.idx == 1 and answer.files == ("f2.csv", "f3.csv")
    [taken] = changed
    assert (taken.state, taken.worker, taken.run_attempt) == ("running", "w1", 1)
    assert taken.lease_until == NOW + timedelta(seconds=10 + LEASE_MARGIN_S)


def test_claim_waits_while_others_run_and_finishes_when_all_are_terminal() -> None:
    running = [MiniBatch(idx=0, files=("a",), state="running", worker="w2", run_attempt=1,
                         lease_until=NOW + timedelta(seconds=5))]
    assert claim(running)[1].kind == "wait"
    done = [MiniBatch(idx=0, files=("a",), state="done", rows=1)]
    answer = claim(done)[1]
    assert answer.kind == "finished" and not answer.failed


def test_an_expired_lease_of_this_attempt_is_a_timed_out_try() -> None:
    state = [MiniBatch(idx=0, files=("a",), state="running", worker="w2", run_attempt=1,
                       lease_until=NOW - timedelta(seconds=1))]
    changed, answer = claim(state)
    assert answer.kind == "assign" and answer.idx == 0
    assert changed[0].tries == 1 and changed[0].worker == "w1" and "timed out" in changed[0].error


def test_claims_of_an_older_attempt_go_back_to_pending_without_a_try() -> None:
    state = [MiniBatch(idx=0, files=("a",), state="running", worker="old", run_attempt=1,
                       lease_until=NOW + timedelta(hours=1))]
    changed, answer = claim(state, worker="new", attempt=2, current=2)
    assert answer.kind == "assign" and changed[0].tries == 0 and changed[0].run_attempt == 2


def test_a_runner_of_an_older_attempt_is_told_to_stop() -> None:
    answer = claim(batches(1), worker="old", attempt=1, current=2)[1]
    assert answer.kind == "finished" and answer.stale


def test_a_failed_try_is_retried_then_recorded_failed_with_its_error() -> None:
    running = MiniBatch(idx=0, files=("a", "b"), state="running", worker="w1", run_attempt=1)
    report = ResultReport(idx=0, worker="w1", ok=False, error="ValueError: bad")
    first = decide_result(running, report, SETTINGS, NOW)
    assert (first.state, first.tries, first.error) == ("pending", 1, "ValueError: bad")
    second = decide_result(first.model_copy(update={"state": "running", "worker": "w1"}), report, SETTINGS, NOW)
    assert (second.state, second.tries, second.failed_files) == ("failed", 2, 2)


def test_fewer_rows_than_files_count_as_failed_files_for_append_row_only() -> None:
    running = MiniBatch(idx=0, files=("a", "b", "c"), state="running", worker="w1")
    done = decide_result(running, ResultReport(idx=0, worker="w1", ok=True, rows=1), SETTINGS, NOW)
    assert (done.state, done.rows, done.failed_files) == ("done", 1, 2)
    summary = SETTINGS.model_copy(update={"output_action": "summary_only"})
    assert decide_result(running, ResultReport(idx=0, worker="w1", ok=True, rows=0), summary, NOW).failed_files == 0


def test_a_stale_report_changes_nothing() -> None:
    taken = MiniBatch(idx=0, files=("a",), state="running", worker="w2")
    assert decide_result(taken, ResultReport(idx=0, worker="w1", ok=True, rows=1), SETTINGS, NOW) is None


def test_a_lost_worker_fails_a_try_of_each_batch_it_held() -> None:
    state = [MiniBatch(idx=0, files=("a",), state="running", worker="w1"),
             MiniBatch(idx=1, files=("b",), state="running", worker="w2")]
    [lost] = worker_lost(state, "w1", "worker died: signal 9", SETTINGS, NOW)
    assert (lost.idx, lost.state, lost.tries, lost.error) == (0, "pending", 1, "worker died: signal 9")


def test_error_threshold_counts_failed_files_and_minus_one_ignores_all() -> None:
    state = [MiniBatch(idx=0, files=("a", "b"), state="failed", failed_files=2, error="boom"),
             MiniBatch(idx=1, files=("c",), state="done", rows=1)]
    tally = tally_of(state)
    assert verdict(tally, SETTINGS.model_copy(update={"error_threshold": 2})).outcome == "completed"
    failed = verdict(tally, SETTINGS.model_copy(update={"error_threshold": 1}))
    assert failed.outcome == "failed" and "error_threshold 1 exceeded: 2 files failed; mini-batch 0 (a, b): boom" \
        == failed.reason
    assert verdict(tally, SETTINGS).outcome == "completed"
    assert verdict(tally_of(batches(1)), SETTINGS).outcome is None
    assert verdict(tally_of(batches(1)), SETTINGS, run_failure="init() failed").outcome == "failed"


def test_the_tally_counts_each_batch_once_as_it_ends() -> None:
    running = MiniBatch(idx=3, files=("a", "b"), state="running", worker="w")
    done = running.model_copy(update={"state": "done", "rows": 5, "failed_files": 1, "error": "short"})
    tally = tally_after(Tally(total=4), running, done)
    assert (tally.done, tally.rows, tally.failed_files, tally.first_failed.index) == (1, 5, 1, 3)
    assert tally_after(tally, done, done) == tally  # a batch that already ended changes nothing
    earlier = MiniBatch(idx=1, files=("c",), state="failed", failed_files=1, error="boom")
    tally = tally_after(tally, MiniBatch(idx=1, files=("c",)), earlier)
    assert (tally.failed, tally.failed_files, tally.first_failed.error, tally.ended) == (1, 2, "boom", False)


def test_an_exceeded_threshold_finishes_every_claim_as_failed() -> None:
    state = [MiniBatch(idx=0, files=("a",), state="failed", failed_files=1, error="boom"), *batches(2)[1:]]
    answer = claim(state, SETTINGS.model_copy(update={"error_threshold": 0}))[1]
    assert answer.kind == "finished" and answer.failed and "exceeded" in answer.reason


def test_progress_counts_rows_and_lists_failed_batches() -> None:
    state = [MiniBatch(idx=0, files=("a",), state="done", rows=100),
             MiniBatch(idx=1, files=("b",), state="failed", tries=2, failed_files=1, error="boom"),
             MiniBatch(idx=2, files=("c",), state="running"), MiniBatch(idx=3, files=("d",))]
    view = progress(state, started_at=NOW, ended_at=None, now=NOW + timedelta(seconds=4), outcome=None, reason=None)
    assert (view.total, view.done, view.failed, view.running, view.pending, view.rows) == (4, 1, 1, 1, 1, 100)
    assert view.rows_per_second == 25.0 and view.failed_mini_batches[0].error == "boom"


def test_a_claim_ahead_is_granted_only_while_more_batches_are_left_than_workers() -> None:
    state = batches(6)
    ahead = Claim(worker="w1", attempt=1, ahead=True)
    changed, _, answer = decide_claim(state, tally_of(state), SETTINGS, ahead, 1, NOW, workers=2)
    assert answer.kind == "assign" and answer.idx == 0
    [taken] = changed  # held while its worker finishes its current one: the lease covers both
    assert taken.lease_until == NOW + timedelta(seconds=2 * 10 + LEASE_MARGIN_S)
    near_end = [b.model_copy(update={"state": "done", "rows": 2}) if b.idx < 4 else b for b in state]
    changed, _, answer = decide_claim([b for b in near_end if not b.terminal], tally_of(near_end), SETTINGS, ahead, 1,
                                      NOW, workers=2)
    assert (changed, answer.kind) == ([], "wait")  # 2 left for 2 workers: each takes one when free
    changed, _, answer = decide_claim([b for b in near_end if not b.terminal], tally_of(near_end), SETTINGS,
                                      Claim(worker="w1", attempt=1), 1, NOW, workers=2)
    assert answer.kind == "assign" and answer.idx == 4  # a worker that is free gets it


def test_a_lost_worker_of_an_older_attempt_puts_its_claims_back_without_a_try() -> None:
    held = [MiniBatch(idx=0, files=("a",), state="running", worker="w1", run_attempt=1)]
    [back] = worker_lost(held, "w1", "worker died: signal 15", SETTINGS, NOW, attempt=2)
    assert (back.state, back.tries, back.worker) == ("pending", 0, None)
