"""The batch runner's results: Azure's append_row format written in bulk, the join, and the no-code MLflow driver."""

from __future__ import annotations

import os
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
