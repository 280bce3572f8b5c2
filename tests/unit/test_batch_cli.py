"""`job show` / `job stream` of a batch job: the progress line, redrawn in place on a terminal."""

from __future__ import annotations

import io

from cible.cli.jobs import _ProgressOut, batch_progress_line


def test_the_progress_line() -> None:
    batch = {"total": 10, "done": 7, "failed": 1, "running": 2, "rows_per_second": 123456.4}
    assert batch_progress_line(batch) == "mini-batches 7/10 done, 1 failed, 2 running, 123,456 rows/s"
    assert batch_progress_line({"total": 3, "done": 0}) == "mini-batches 0/3 done"
    failed = {"total": 2, "done": 1, "failed": 1, "outcome": "failed", "reason": "error_threshold 0 exceeded"}
    assert batch_progress_line(failed).endswith("(failed: error_threshold 0 exceeded)")


def test_a_terminal_redraws_the_line_under_the_log_and_a_pipe_gets_a_line_per_change() -> None:
    tty = io.BytesIO()
    out = _ProgressOut(tty, tty=True)
    out.show("mini-batches 1/2 done")
    out.write(b"a log line\n")
    out.show("mini-batches 1/2 done")  # unchanged: nothing drawn
    out.end()
    assert tty.getvalue() == b"\r\x1b[Kmini-batches 1/2 done\r\x1b[Ka log line\nmini-batches 1/2 done\n"
    pipe = io.BytesIO()
    out = _ProgressOut(pipe, tty=False)
    for line in ("mini-batches 1/2 done", "mini-batches 1/2 done", "mini-batches 2/2 done"):
        out.show(line)
    out.write(b"log\n")
    out.end()
    assert pipe.getvalue() == b"mini-batches 1/2 done\nmini-batches 2/2 done\nlog\n"


def test_job_show_prints_a_reason_with_brackets_as_written(capsys) -> None:  # noqa: ANN001
    from cible.cli.jobs import _draw_batch

    reason = "KeyError: None of [Index(['x'])] are in the [columns] of [/tmp/x]"
    _draw_batch({"batch": {"total": 2, "done": 1, "failed": 1, "outcome": "failed", "reason": reason, "rows": 3,
                           "files": 2}})
    _draw_batch({"batch": {"total": 2, "done": 2, "outcome": "completed", "reason": "note [bold]", "rows": 3}})
    out = capsys.readouterr().out
    words = " ".join(out.split())  # the console may wrap the long line
    assert reason in words and "batch note note [bold]" in words and "[/bold]" not in out
