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


def test_fewer_rows_than_files_count_as_failed_files_for_both_output_actions() -> None:
    running = MiniBatch(idx=0, files=("a", "b", "c"), state="running", worker="w1")
    done = decide_result(running, ResultReport(idx=0, worker="w1", ok=True, rows=1), SETTINGS, NOW)
    assert (done.state, done.rows, done.failed_files) == ("done", 1, 2)
    summary = SETTINGS.model_copy(update={"output_action": "summary_only"})  # azureml-spec §6.3: both count it
    short = decide_result(running, ResultReport(idx=0, worker="w1", ok=True, rows=0), summary, NOW)
    assert (short.state, short.failed_files) == ("done", 3) and "3 files counted as failed" in short.error
    whole = decide_result(running, ResultReport(idx=0, worker="w1", ok=True, rows=3), summary, NOW)
    assert (whole.failed_files, whole.error) == (0, None)


def test_a_stale_report_changes_nothing() -> None:
    taken = MiniBatch(idx=0, files=("a",), state="running", worker="w2")
    assert decide_result(taken, ResultReport(idx=0, worker="w1", ok=True, rows=1), SETTINGS, NOW) is None


def test_a_lost_worker_fails_a_try_of_the_batch_it_ran_only() -> None:
    state = [MiniBatch(idx=0, files=("a",), state="running", worker="w1"),
             MiniBatch(idx=1, files=("b",), state="running", worker="w1"),  # claimed ahead, never started
             MiniBatch(idx=2, files=("c",), state="running", worker="w2")]
    no_retry = SETTINGS.model_copy(update={"max_retries": 0})
    ran, ahead = worker_lost(state, "w1", "worker died: signal 9", no_retry, NOW, tried=(0,))
    assert (ran.idx, ran.state, ran.tries, ran.error) == (0, "failed", 1, "worker died: signal 9")
    assert (ahead.idx, ahead.state, ahead.tries, ahead.error, ahead.worker) == (1, "pending", 0, None, None)
    # running none (died between two mini-batches): every claim it held is redone without a try
    assert [(b.state, b.tries) for b in worker_lost(state, "w1", "died", no_retry, NOW, tried=())] == [
        ("pending", 0), ("pending", 0)]
    # a runner that does not say which it ran: each counts (a batch that kills its worker still ends)
    assert [b.tries for b in worker_lost(state, "w1", "died", SETTINGS, NOW)] == [1, 1]


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


def test_a_retried_claim_whose_answer_was_lost_gets_the_same_batch_again() -> None:
    state = batches(4)
    state[0] = state[0].model_copy(update={"state": "running", "worker": "w1", "run_attempt": 1,
                                           "lease_until": NOW + timedelta(seconds=60)})
    # a free worker (no ahead) that holds a running batch: the answer of its claim never reached it
    changed, _, answer = decide_claim(state, tally_of(state), SETTINGS, Claim(worker="w1"), 1, NOW)
    assert (changed, answer.kind, answer.idx, answer.files) == ([], "assign", 0, ("f0.csv", "f1.csv"))
    # claiming ahead while scoring 0: a new one; once 1 is held too, a retry of that claim gets 1 again
    ahead = Claim(worker="w1", ahead=True, running=0)
    [taken], _, answer = decide_claim(state, tally_of(state), SETTINGS, ahead, 1, NOW, workers=1)
    assert answer.idx == taken.idx == 1
    state[1] = taken
    changed, _, answer = decide_claim(state, tally_of(state), SETTINGS, ahead, 1, NOW, workers=1)
    assert (changed, answer.idx) == ([], 1)
    # the batch the claim reports is not a held one; an ahead claim without `running` cannot tell
    changed, _, answer = decide_claim(state, tally_of(state), SETTINGS, Claim(worker="w1", ahead=True, running=1), 1,
                                      NOW, workers=1, reported=0)
    assert answer.idx == 2
    changed, _, answer = decide_claim(state, tally_of(state), SETTINGS, Claim(worker="w1", ahead=True), 1, NOW,
                                      workers=1)
    assert answer.idx == 2
    # another worker's running batches are not its own
    assert decide_claim(state, tally_of(state), SETTINGS, Claim(worker="w2"), 1, NOW)[2].idx == 2


def test_the_ahead_rule_counts_the_pending_batches_not_the_index() -> None:
    """A retried low-numbered batch near the end: 1 pending and 2 running for 2 workers: no claim ahead."""
    state = [b.model_copy(update={"state": "done", "rows": 2}) for b in batches(10)]
    state[0] = state[0].model_copy(update={"state": "pending", "rows": None, "tries": 1})
    for i in (8, 9):
        state[i] = state[i].model_copy(update={"state": "running", "rows": None, "worker": f"w{i}", "run_attempt": 1,
                                               "lease_until": NOW + timedelta(seconds=60)})
    live = [b for b in state if not b.terminal]
    ahead = Claim(worker="w8", ahead=True, running=8)
    assert decide_claim(live, tally_of(state), SETTINGS, ahead, 1, NOW, workers=2)[2].kind == "wait"
    assert decide_claim(live, tally_of(state), SETTINGS, ahead, 1, NOW, workers=2, pending=1)[2].kind == "wait"
    # many pending (the service counts them): granted, the lowest first
    assert decide_claim(live, tally_of(state), SETTINGS, ahead, 1, NOW, workers=2, pending=3)[2].idx == 0
    # a claim that puts an expired one back to pending adds it to the count
    expired = [b.model_copy(update={"lease_until": NOW - timedelta(seconds=1)}) if b.idx == 9 else b for b in live]
    changed, _, answer = decide_claim(expired, tally_of(state), SETTINGS, ahead, 1, NOW, workers=2, pending=2)
    assert answer.idx == 0 and {b.idx: b.state for b in changed} == {9: "pending", 0: "running"}
