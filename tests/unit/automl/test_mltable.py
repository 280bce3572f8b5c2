"""MLTable folders read as Azure's AutoML examples write them (paths, a reader, then the transformations
in order), and refused with the MLTable file, the field and a fix when they cannot be read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cible.automl.mltable import MLTableError, load, parse


def folder(root: Path, mltable: str, **files: str | bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "MLTable").write_text(mltable)
    for name, content in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("latin-1"))
    return root


BANK = "age,job,y\n30,admin.,no\n41,,yes\n52,services,no\n"


def test_azures_bank_marketing_folder_reads_as_its_csv(tmp_path: Path) -> None:
    table = folder(tmp_path / "train", "paths:\n  - file: ./bank.csv\ntransformations:\n"
                                        "  - read_delimited:\n      delimiter: ','\n      encoding: 'ascii'\n",
                   **{"bank.csv": BANK})
    frame = load(table)
    assert list(frame.columns) == ["age", "job", "y"] and len(frame) == 3
    assert frame["age"].tolist() == [30, 41, 52] and pd.isna(frame["job"][1])  # empty: null (empty_as_string false)


def test_transformations_apply_in_order(tmp_path: Path) -> None:
    table = folder(tmp_path / "t", """
paths:
  - pattern: ./part-*.csv
transformations:
  - read_delimited: {delimiter: ';', empty_as_string: true, include_path_column: true}
  - skip: 1
  - take: 3
  - drop_columns: Path
  - convert_column_types:
      - {columns: [temp], column_type: float}
      - {columns: when, column_type: {datetime: {formats: ['%d/%m/%Y']}}}
      - {columns: ok, column_type: {boolean: {true_values: ['Y'], false_values: ['N']}}}
  - keep_columns: {pattern: '^(temp|when|ok|name)$'}
""", **{"part-1.csv": "name;temp;when;ok\na;1.5;01/02/2024;Y\nb;;02/02/2024;N\n",
        "part-2.csv": "name;temp;when;ok\nc;3;03/02/2024;Y\nd;4;04/02/2024;N\n", "other.csv": "x\n1\n"})
    frame = load(table)
    assert frame["name"].tolist() == ["b", "c", "d"]  # part-1's first row skipped, other.csv not matched
    assert frame["temp"].isna().tolist() == [True, False, False] and frame["temp"].dtype == "float64"
    assert frame["when"].dt.day.tolist() == [2, 3, 4] and frame["ok"].tolist() == [False, True, False]


def test_parquet_json_lines_and_a_folder_of_files(tmp_path: Path) -> None:
    data = tmp_path / "pq"
    data.mkdir()
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(data / "one.parquet")
    pd.DataFrame({"a": [3], "b": ["z"]}).to_parquet(data / "two.parquet")
    (data / "MLTable").write_text("paths:\n  - folder: .\ntransformations:\n  - read_parquet\n")
    assert load(data)["a"].tolist() == [1, 2, 3]
    lines = folder(tmp_path / "jl", "paths: [{file: rows.jsonl}]\ntransformations:\n"
                                    "  - read_json_lines: {invalid_lines: drop}\n",
                   **{"rows.jsonl": '{"a": 1}\nnot json\n{"a": 2}\n'})
    assert load(lines)["a"].tolist() == [1, 2]


@pytest.mark.parametrize("mltable, files, says", [
    ("paths: [{file: ./missing.csv}]\n", {}, "paths[0] file './missing.csv' does not exist"),
    ("paths: [{file: ../outside.csv}]\n", {}, "'..' part"),
    ("paths: [{file: azureml://datastores/x/paths/a.csv}]\n", {}, "copy the data into the folder"),
    ("paths: [{pattern: '*.parquet'}]\n", {"a.csv": "x\n"}, "matches no file"),
    ("paths: [{file: a.csv}]\ntransformations:\n  - read_delimited: {delimeter: ';'}\n", {"a.csv": "x\n"},
     "transformations[0].read_delimited has no option delimeter"),
    ("paths: [{file: a.csv}]\ntransformations:\n  - filter: 'col(\"x\") > 1'\n", {"a.csv": "x\n"},
     "'filter' is not supported"),
    ("paths: [{file: a.csv}]\ntransformations:\n  - shuffle: {}\n", {"a.csv": "x\n"},
     "'shuffle' is not a transformation"),
    ("paths: [{file: a.csv}]\ntransformations:\n  - take: -1\n", {"a.csv": "x\n"}, "whole number of rows"),
    ("paths: [{file: a.csv}]\ntransformations:\n  - convert_column_types: [{columns: x, column_type: decimal}]\n",
     {"a.csv": "x\n"}, "'decimal' is not a column type"),
    ("paths: [{file: a.dat}]\n", {"a.dat": "x\n"}, "names no reader"),
    ("paths: [a.csv\n", {"a.csv": "x\n"}, "is not valid YAML"),
])
def test_what_cannot_be_read_is_refused_naming_the_file_and_field(tmp_path: Path, mltable: str, files: dict,
                                                                  says: str) -> None:
    table = folder(tmp_path / "bad", mltable, **files)
    with pytest.raises(MLTableError) as refused:
        parse(table, field_name="training_data")
    assert says in refused.value.message and refused.value.details == {"field": "training_data"}
    assert refused.value.message.startswith("training_data")


def test_a_folder_without_an_mltable_file_says_what_one_is(tmp_path: Path) -> None:
    with pytest.raises(MLTableError, match="has no MLTable file; an mltable input is a folder"):
        parse(tmp_path)


def test_a_column_a_step_names_must_exist(tmp_path: Path) -> None:
    table = folder(tmp_path / "c", "paths: [{file: a.csv}]\ntransformations:\n  - read_delimited\n"
                                   "  - keep_columns: [a, nope]\n", **{"a.csv": "a,b\n1,2\n"})
    with pytest.raises(MLTableError, match="keep_columns: no column nope \\(the columns: a, b\\)"):
        load(table)
