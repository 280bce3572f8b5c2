"""The batch runner's results: Azure's append_row format written in bulk, the join, and the no-code MLflow driver."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cible.serving.batch.node import list_input
from cible.serving.batch.output import count_rows, join_parts, part_path, write_part


def test_a_dataframe_is_written_space_separated_without_header_or_index(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"file": ["a.csv", "b.csv"], "row": [0, 1], "p": [0.5, 1.25]}, index=[7, 9])
    assert write_part(str(tmp_path), 3, frame) == 2
    assert Path(part_path(str(tmp_path), 3)).read_text() == "a.csv 0 0.5\nb.csv 1 1.25\n"


def test_values_arrow_refuses_fall_back_to_pandas_and_lists_use_str(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"p": [[1, 2], [3]], "n": [1, 2]})  # lists: Arrow's CSV writer refuses them
    assert write_part(str(tmp_path), 0, frame) == 2
    assert Path(part_path(str(tmp_path), 0)).read_text() == '"[1, 2]" 1\n[3] 2\n'
    assert write_part(str(tmp_path), 1, ["x 1", ("y", 2)]) == 2
    assert Path(part_path(str(tmp_path), 1)).read_text() == "x 1\n('y', 2)\n"
    assert write_part(str(tmp_path), 2, []) == 0 and Path(part_path(str(tmp_path), 2)).read_text() == ""


def test_numpy_arrays_are_written_in_bulk(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    assert write_part(str(tmp_path), 0, np.array([1, 0, 1])) == 3
    assert Path(part_path(str(tmp_path), 0)).read_text() == "1\n0\n1\n"
    assert count_rows(np.zeros((4, 2))) == 4 and count_rows(None) == 0 and count_rows(["a"]) == 1


def test_join_takes_the_done_parts_in_order_and_can_run_twice(tmp_path: Path) -> None:
    for idx, text in ((2, ["c"]), (0, ["a"]), (1, ["stale: a failed mini-batch's try"])):
        write_part(str(tmp_path), idx, text)
    for _ in range(2):
        join_parts(str(tmp_path), "predictions.csv", [2, 0, 5], remove_parts=False)  # 5 has no part: skipped
        assert (tmp_path / "predictions.csv").read_text() == "a\nc\n"
    join_parts(str(tmp_path), "predictions.csv", [0, 2])
    assert (tmp_path / "predictions.csv").read_text() == "a\nc\n" and os.listdir(tmp_path) == ["predictions.csv"]


def test_the_input_listing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for name in ("b.csv", "a.csv", ".hidden"):
        (tmp_path / "in" / name).write_text("x")
    (tmp_path / "in" / "sub").mkdir()  # folders are not recursed
    assert list_input(str(tmp_path / "in"))[1:] == (["a.csv", "b.csv"], None)
    assert list_input(str(tmp_path / "in" / "b.csv"))[:2] == (str(tmp_path / "in"), ["b.csv"])
    assert "does not exist" in list_input(str(tmp_path / "nowhere"))[2]
    (tmp_path / "empty").mkdir()
    assert "holds no files" in list_input(str(tmp_path / "empty"))[2]


def test_join_skips_a_planted_link_a_fifo_and_a_hard_link_and_never_blocks(tmp_path: Path) -> None:
    """The server joins a folder the job wrote: a part that is a link to a file of the server's (its token),
    a FIFO (an open() that would block forever) or a hard link is skipped, never read."""
    secret = tmp_path / "token"
    secret.write_text("WORKSPACE-SECRET\n")
    out = tmp_path / "out"
    write_part(str(out), 0, ["a"])
    write_part(str(out), 4, ["e"])
    os.symlink(secret, part_path(str(out), 1))
    os.mkfifo(part_path(str(out), 2))
    os.link(secret, part_path(str(out), 3))
    joining = threading.Thread(target=join_parts, args=(str(out), "predictions.csv", range(5)), daemon=True)
    joining.start()
    joining.join(timeout=10)
    assert not joining.is_alive(), "the join blocked on the FIFO"
    assert (out / "predictions.csv").read_text() == "a\ne\n"
    assert sorted(os.listdir(out)) == ["predictions.csv"] and secret.read_text() == "WORKSPACE-SECRET\n"


def test_join_writes_no_file_through_links_the_job_planted(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    write_part(str(out), 0, ["a"])
    os.symlink(elsewhere / "victim", out / "predictions.csv")  # the target: replaced, not written through
    join_parts(str(out), "predictions.csv", [0])
    assert not (out / "predictions.csv").is_symlink() and (out / "predictions.csv").read_text() == "a\n"
    assert not (elsewhere / "victim").exists()
    linked = tmp_path / "linked"
    os.symlink(elsewhere, linked)  # the output folder itself a link: refused
    with pytest.raises(OSError):
        join_parts(str(linked), "predictions.csv", [])
    parts_link = tmp_path / "out2"
    parts_link.mkdir()
    write_part(str(elsewhere), 0, ["outside"])
    os.symlink(elsewhere / ".cible-batch", parts_link / ".cible-batch")  # the parts folder a link: nothing read
    join_parts(str(parts_link), "predictions.csv", [0])
    assert (parts_link / "predictions.csv").read_text() == ""
    for bad in (".cible-batch", "a/b", "x" * 256, ""):
        with pytest.raises(ValueError):
            join_parts(str(out), bad, [0])


def test_two_joins_racing_leave_the_whole_file(tmp_path: Path) -> None:
    """The server's join and a node's (or two servers' decisions): whichever comes second finds the parts
    folder gone and keeps the joined file; it never writes a short file over it."""
    for round_ in range(10):
        out = tmp_path / f"out{round_}"
        for idx in range(20):
            write_part(str(out), idx, [f"row{idx}"] * 50)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def join() -> None:
            start.wait()
            try:
                join_parts(str(out), "predictions.csv", range(20))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=join) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert (out / "predictions.csv").read_text() == "".join(f"row{i}\n" * 50 for i in range(20))
        assert sorted(os.listdir(out)) == ["predictions.csv"]


@pytest.mark.parametrize("name", [".cible-batch", ".cible-batch-x", "é" * 128, "a/b.csv", " "])
def test_a_deployment_cannot_name_its_output_file_what_the_join_refuses(name: str) -> None:
    from pydantic import ValidationError

    from cible.core.models.batch_endpoints import BatchSettings
    from cible.serving.batch.output import file_name_problem

    with pytest.raises(ValidationError):
        BatchSettings(output_file_name=name)
    assert file_name_problem(name) is not None
    assert BatchSettings(output_file_name="é" * 127).output_file_name and file_name_problem("é" * 127) is None
