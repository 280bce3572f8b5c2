"""MLTable folders read into pandas, as Azure's AutoML jobs give their data.

An MLTable folder holds a YAML file named `MLTable`: `paths` (each a `file`, a `folder` or a glob
`pattern`, relative to the folder) and `transformations` applied in order: a reader (`read_delimited`,
`read_parquet`, `read_json_lines`), then `take`, `skip`, `take_random_sample`, `drop_columns`,
`keep_columns` and `convert_column_types`. This is the subset Azure's tabular AutoML examples use, read
with pandas and pyarrow (the `mltable` package needs Azure's native data-prep engine, under a
proprietary licence). What is not supported (`filter`, remote paths, Delta Lake) is refused naming it.

`parse` checks a folder without reading its data (the server, at submit: a missing file or a typo is
an error then, naming the MLTable file and the field); `to_pandas` reads it (in the job).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cible.core.errors import InvalidRequestError
from cible.core.safepaths import under

FILE = "MLTable"
READERS = ("read_delimited", "read_parquet", "read_json_lines")
STEPS = ("take", "skip", "take_random_sample", "drop_columns", "keep_columns", "convert_column_types")
UNSUPPORTED = {"filter": "filter the data in a step before the AutoML job, or with keep_columns/drop_columns",
               "read_delta_lake": "export the table to Parquet and use read_parquet",
               "extract_columns_from_partition_format": "add the columns to the files themselves"}
ENCODINGS = {"utf8": "utf-8", "iso88591": "iso-8859-1", "latin1": "latin-1", "ascii": "ascii", "utf16": "utf-16",
             "utf32": "utf-32", "utf8bom": "utf-8-sig", "windows1252": "cp1252"}
HEADERS = ("all_files_same_headers", "from_first_file", "no_header", "all_files_different_headers")
SIMPLE_TYPES = ("int", "float", "string", "boolean", "datetime")


class MLTableError(InvalidRequestError):
    """An MLTable folder that cannot be read: which file, which field, and how to fix it."""


@dataclass(frozen=True)
class MLTable:
    folder: Path
    files: tuple[Path, ...]  # every data file, in order (a folder's or a pattern's sorted)
    reader: tuple[str, dict[str, Any]]  # (read_delimited | read_parquet | read_json_lines, its options)
    steps: tuple[tuple[str, Any], ...] = field(default=())  # the transformations after the reader


def parse(folder: Path, *, field_name: str = "path") -> MLTable:
    """The MLTable in `folder`, its paths resolved under it and checked to exist; nothing is read."""
    folder = Path(folder)
    spec_file = folder / FILE
    where = f"{field_name}: {folder}/{FILE}"
    if not spec_file.is_file():
        raise MLTableError(f"{field_name}: {folder} has no {FILE} file; an mltable input is a folder with a YAML file "
                           f"named {FILE} (paths and transformations) beside its data", details={"field": field_name})
    try:
        spec = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _error(where, f"is not valid YAML ({exc})", field_name) from None
    if not isinstance(spec, dict):
        raise _error(where, "must be a mapping with 'paths' (and 'transformations')", field_name)
    files = _files(folder, spec.get("paths"), where, field_name)
    transformations = spec.get("transformations") or []
    if not isinstance(transformations, list):
        raise _error(f"{where}: transformations", "must be a list", field_name)
    steps: list[tuple[str, Any]] = []
    reader: tuple[str, dict[str, Any]] | None = None
    for index, item in enumerate(transformations):
        at = f"{where}: transformations[{index}]"
        name, options = _one_key(item, at, field_name)
        if name in UNSUPPORTED:
            raise _error(at, f"'{name}' is not supported by cible; {UNSUPPORTED[name]}", field_name)
        if name in READERS:
            if reader is not None or steps:
                raise _error(at, f"'{name}' must be the first transformation, and the only reader", field_name)
            reader = (name, _reader_options(name, options, f"{at}.{name}", field_name))
        elif name in STEPS:
            steps.append((name, _step_options(name, options, f"{at}.{name}", field_name)))
        else:
            raise _error(at, f"'{name}' is not a transformation; use one of {', '.join(READERS + STEPS)}", field_name)
    if reader is None:  # as Azure's examples always name one; a CSV or Parquet file alone reads as such
        suffixes = {f.suffix.lower() for f in files}
        if suffixes <= {".parquet"}:
            reader = ("read_parquet", {})
        elif suffixes <= {".csv", ".tsv", ".txt"}:
            reader = ("read_delimited", {"delimiter": "\t" if suffixes == {".tsv"} else ","})
        else:
            raise _error(where, "names no reader: add a first transformation read_delimited, read_parquet or "
                                "read_json_lines", field_name)
    return MLTable(folder, tuple(files), reader, tuple(steps))


def to_pandas(table: MLTable, rows: int | None = None):  # noqa: ANN201 - a pandas DataFrame (pandas imported here)
    """The table's rows, its transformations applied in order; with `rows`, a sample of its first file's first
    rows at most (its columns, as the whole table's: what the server checks at submit)."""
    import pandas as pd

    name, options = table.reader
    files = table.files[:1] if rows is not None else table.files
    frames = [_read(pd, name, options, path, index, rows) for index, path in enumerate(files)]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for step, options in table.steps:
        frame = _apply(pd, frame, step, options, table)
    return frame


def load(folder: Path):  # noqa: ANN201
    """`to_pandas(parse(folder))`: what `mltable.load(folder).to_pandas_dataframe()` gives."""
    return to_pandas(parse(folder))


# -- parsing ---------------------------------------------------------------------------------------
def _error(where: str, problem: str, field_name: str) -> MLTableError:
    return MLTableError(f"{where} {problem}", details={"field": field_name})


def _one_key(item: Any, at: str, field_name: str) -> tuple[str, Any]:
    if isinstance(item, str):
        return item, {}
    if not isinstance(item, dict) or len(item) != 1:
        raise _error(at, "must be one transformation: a mapping of its name to its options", field_name)
    [(name, options)] = item.items()
    return str(name), options


def _files(folder: Path, paths: Any, where: str, field_name: str) -> list[Path]:
    if not isinstance(paths, list) or not paths:
        raise _error(f"{where}: paths", "must list at least one `file`, `folder` or `pattern`", field_name)
    found: list[Path] = []
    for index, entry in enumerate(paths):
        at = f"{where}: paths[{index}]"
        kind, value = _one_key(entry, at, field_name)
        if kind not in ("file", "folder", "pattern") or not isinstance(value, str):
            raise _error(at, "must be one of file: PATH, folder: PATH or pattern: GLOB", field_name)
        if "://" in value or value.startswith("azureml:"):
            raise _error(at, f"'{value}' is not a path in this folder; cible reads MLTable data beside its {FILE} "
                             "file: copy the data into the folder and name it relatively (./data.csv)", field_name)
        rel = value.removeprefix("./")
        if kind == "pattern":
            matched = sorted(p for p in _walk(folder) if fnmatch.fnmatch(p.relative_to(folder).as_posix(), rel))
            if not matched:
                raise _error(at, f"pattern '{value}' matches no file in {folder}", field_name)
            found += matched
            continue
        try:
            path = folder if rel in ("", ".") else under(folder, rel, field=f"paths[{index}]")
        except InvalidRequestError as exc:
            raise MLTableError(f"{where}: {exc.message}", details={"field": field_name}) from None
        if kind == "file" and not path.is_file():
            raise _error(at, f"file '{value}' does not exist in {folder}", field_name)
        if kind == "folder":
            if not path.is_dir():
                raise _error(at, f"folder '{value}' does not exist in {folder}", field_name)
            files = sorted(p for p in _walk(path) if p.name != FILE)
            if not files:
                raise _error(at, f"folder '{value}' holds no file", field_name)
            found += files
        else:
            found.append(path)
    return found


def _walk(folder: Path) -> list[Path]:
    """Every file below `folder`, links not followed (a link could lead out of it)."""
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names
            if not (Path(root) / name).is_symlink()]


def _reader_options(name: str, options: Any, at: str, field_name: str) -> dict[str, Any]:
    options = options or {}
    if not isinstance(options, dict):
        raise _error(at, "must be a mapping of options", field_name)
    known = {"read_delimited": {"delimiter", "header", "encoding", "empty_as_string", "include_path_column",
                                "path_column", "infer_column_types", "support_multi_line", "partition_size"},
             "read_parquet": {"include_path_column", "path_column"},
             "read_json_lines": {"invalid_lines", "encoding", "include_path_column", "path_column", "partition_size"}}
    unknown = sorted(set(options) - known[name])
    if unknown:
        raise _error(at, f"has no option {', '.join(unknown)}; its options: {', '.join(sorted(known[name]))}",
                     field_name)
    if "encoding" in options and str(options["encoding"]).replace("-", "").lower() not in ENCODINGS:
        raise _error(f"{at}.encoding", f"'{options['encoding']}' is not one of {', '.join(ENCODINGS)}", field_name)
    if options.get("header", HEADERS[0]) not in HEADERS:
        raise _error(f"{at}.header", f"'{options['header']}' is not one of {', '.join(HEADERS)}", field_name)
    if options.get("invalid_lines", "error") not in ("error", "drop"):
        raise _error(f"{at}.invalid_lines", "must be error or drop", field_name)
    delimiter = options.get("delimiter", ",")
    if not isinstance(delimiter, str) or not 1 <= len(delimiter) <= 2:
        raise _error(f"{at}.delimiter", "must be one or two characters", field_name)
    return dict(options)


def _step_options(name: str, options: Any, at: str, field_name: str) -> Any:
    if name in ("take", "skip"):
        if not isinstance(options, int) or isinstance(options, bool) or options < 0:
            raise _error(at, "must be a whole number of rows, 0 or more", field_name)
    elif name == "take_random_sample":
        probability = options.get("probability") if isinstance(options, dict) else None
        if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise _error(at, "needs probability: a number from 0 to 1 (and seed: optional)", field_name)
    elif name in ("drop_columns", "keep_columns"):
        if not (isinstance(options, str) or (isinstance(options, list) and all(isinstance(c, str) for c in options))
                or (isinstance(options, dict) and isinstance(options.get("pattern"), str))):
            raise _error(at, "must be a column, a list of columns, or {pattern: REGEX, ignore_case, invert}",
                         field_name)
    elif name == "convert_column_types":
        if not isinstance(options, list) or not all(isinstance(c, dict) and "columns" in c and "column_type" in c
                                                    for c in options):
            raise _error(at, "must be a list of {columns: NAME or [NAMES], column_type: TYPE}", field_name)
        for index, conversion in enumerate(options):
            _column_type(conversion["column_type"], f"{at}[{index}].column_type", field_name)
    return options


def _column_type(value: Any, at: str, field_name: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str) and value in SIMPLE_TYPES:
        return value, {}
    if isinstance(value, dict) and len(value) == 1:
        [(kind, options)] = value.items()
        if kind in ("datetime", "boolean", "float", "int") and isinstance(options or {}, dict):
            return kind, options or {}
    raise _error(at, f"'{value}' is not a column type; use one of {', '.join(SIMPLE_TYPES)}, or "
                     "{datetime: {formats: [...]}}, {boolean: {true_values, false_values}}, {float: {decimal_mark}}",
                 field_name)


# -- reading ---------------------------------------------------------------------------------------
def _read(pd, name: str, options: dict[str, Any], path: Path, index: int, rows: int | None = None):  # noqa: ANN001, ANN202
    encoding = ENCODINGS[str(options.get("encoding", "utf8")).replace("-", "").lower()]
    if name == "read_parquet" and rows is not None:  # the columns without reading the data
        import pyarrow.parquet as pq

        frame = pd.DataFrame(columns=pq.read_schema(path).names)
    elif name == "read_parquet":
        frame = pd.read_parquet(path)
    elif name == "read_json_lines":
        if options.get("invalid_lines") == "drop":
            import json

            rows = []
            for line in path.read_text(encoding=encoding).splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
            frame = pd.DataFrame([r for r in rows if isinstance(r, dict)])
        else:
            frame = pd.read_json(path, lines=True, encoding=encoding, nrows=rows)
    else:
        header = options.get("header", HEADERS[0])
        no_header = header == "no_header" or (header == "from_first_file" and index > 0)
        frame = pd.read_csv(path, sep=options.get("delimiter", ","), encoding=encoding,
                            header=None if no_header else 0, nrows=rows,
                            keep_default_na=not options.get("empty_as_string", False),
                            dtype=None if options.get("infer_column_types", True) else str)
        if no_header:
            frame.columns = [f"Column{i + 1}" for i in range(frame.shape[1])]
        if options.get("empty_as_string", False):
            frame = frame.fillna("")
    if options.get("include_path_column"):
        frame[options.get("path_column", "Path")] = str(path)
    return frame


def _apply(pd, frame, step: str, options: Any, table: MLTable):  # noqa: ANN001, ANN202
    if step == "take":
        return frame.head(options)
    if step == "skip":
        return frame.iloc[options:].reset_index(drop=True)
    if step == "take_random_sample":
        return frame.sample(frac=float(options["probability"]), random_state=options.get("seed"))
    if step in ("drop_columns", "keep_columns"):
        chosen = _columns(frame, options, table, step)
        return frame.drop(columns=chosen) if step == "drop_columns" else frame[chosen]
    for conversion in options:  # convert_column_types
        kind, type_options = _column_type(conversion["column_type"], "column_type", "path")
        names = conversion["columns"] if isinstance(conversion["columns"], list) else [conversion["columns"]]
        for name in names:
            if name not in frame.columns:
                raise MLTableError(f"{table.folder}/{FILE}: convert_column_types: no column '{name}' (the columns: "
                                   f"{', '.join(map(str, frame.columns))})")
            frame[name] = _converted(pd, frame[name], kind, type_options)
    return frame


def _columns(frame, options: Any, table: MLTable, step: str) -> list[str]:  # noqa: ANN001
    if isinstance(options, dict):
        import re

        flags = re.IGNORECASE if options.get("ignore_case") else 0
        matched = [c for c in frame.columns if re.fullmatch(options["pattern"], str(c), flags)]
        return [c for c in frame.columns if c not in matched] if options.get("invert") else matched
    names = [options] if isinstance(options, str) else list(options)
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise MLTableError(f"{table.folder}/{FILE}: {step}: no column {', '.join(missing)} (the columns: "
                           f"{', '.join(map(str, frame.columns))})")
    return names


def _converted(pd, column, kind: str, options: dict[str, Any]):  # noqa: ANN001, ANN202
    if kind == "int":
        return pd.to_numeric(column, errors="coerce").astype("Int64")
    if kind == "float":
        if options.get("decimal_mark") == ",":
            column = column.astype(str).str.replace(",", ".", regex=False)
        return pd.to_numeric(column, errors="coerce").astype("float64")
    if kind == "string":
        return column.astype("string")
    if kind == "datetime":
        formats = options.get("formats") or [None]
        for fmt in formats:
            converted = pd.to_datetime(column, format=fmt, errors="coerce")
            if converted.notna().sum() >= column.notna().sum():
                return converted
        return converted
    true_values = {str(v).lower() for v in options.get("true_values", ["true", "1", "yes"])}
    false_values = {str(v).lower() for v in options.get("false_values", ["false", "0", "no"])}
    mismatch = {"true": True, "false": False}.get(str(options.get("mismatch_as", "")).lower())
    return column.map(lambda v: True if str(v).lower() in true_values else False if str(v).lower() in false_values
                      else (mismatch if mismatch is not None else pd.NA)).astype("boolean")
