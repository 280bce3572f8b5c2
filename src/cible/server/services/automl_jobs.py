"""AutoML jobs on the server: the code their searches run, and what `job show` says of them.

A search is `python -m cible.automl.trial` in the job's environment, on any target. SSH hosts and Slurm
nodes carry only the agent's standard-library bundle of cible, so the trial's modules go with each
search as its `code` snapshot instead: found by the bundle's import walk from the trial's entry point,
stored content-addressed (once per cible version), and pinned at submit in the job's record.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from cible.core.models.records import ChildrenRecord
from cible.server.services.blobs import BlobService
from cible.server.services.job_plans import SNAPSHOT_SCHEME
from cible.server.store.rows import JobRow

TRIAL_MODULE = "cible.automl.trial"
TOP_MODELS = 20  # the iterations `job show` lists, best first

_lock = threading.Lock()
_made: dict[Path, str] = {}  # blob root -> the trial code's snapshot URI (the package does not change)


def trial_code(blob_root: Path) -> str:
    """The snapshot URI of the trial's modules (`cible/...`), stored under `blob_root` once."""
    from cible.backends.ssh.bundle import node_side, package_dir

    with _lock:
        if blob_root in _made:
            return _made[blob_root]
        blobs = BlobService(blob_root)
        manifest: dict[str, dict[str, Any]] = {}
        for rel, data in node_side(entry_points=(TRIAL_MODULE,)).files(package_dir()).items():
            digest = hashlib.sha256(data).hexdigest()
            blobs.put(digest, [data])
            manifest[rel] = {"sha256": digest, "size": len(data), "mode": 0o644}
        _made[blob_root] = f"{SNAPSHOT_SCHEME}{blobs.put_snapshot(manifest)}"
        return _made[blob_root]


def summary(session: Session, row: JobRow, children: list[JobRow], *, detailed: bool) -> dict[str, Any]:
    """The searches (algorithms, best metric, status), the best of them, and the best iterations."""
    from cible.automl.metrics import LOWER_IS_BETTER
    from cible.core.planning.automl import algorithm_of

    record = row.children or ChildrenRecord()
    task = str(row.spec.get("task", "classification"))
    counts: dict[str, int] = {}
    for child in children:
        counts[child.status] = counts.get(child.status, 0) + 1
    searches = [_search(child, record.results.get(child.name), task) for child in children]
    best = next((s for s in searches if s["name"] == record.best_trial), None)
    answer: dict[str, Any] = {"primary_metric": row.spec.get("primary_metric"), "best_trial": best,
                              "trial_counts": counts}
    if detailed:
        answer["trials"] = sorted(searches, key=lambda s: s["index"])
        models = [{**m, "trial": name, "algorithm": algorithm_of(task, m.get("learner"))}
                  for name, result in record.results.items() for m in result.get("top", [])]
        models.sort(key=lambda m: m["metric"], reverse=row.spec.get("primary_metric") not in LOWER_IS_BETTER)
        answer["models"] = [{**m, "rank": rank} for rank, m in enumerate(models[:TOP_MODELS], 1)]
        answer["automl_warnings"] = sorted({w for r in record.results.values() for w in r.get("warnings", [])})
    return answer


def _search(child: JobRow, result: dict[str, Any] | None, task: str) -> dict[str, Any]:
    from cible.core.planning.automl import algorithm_of

    planned = (child.spec.get("properties") or {}).get("automl") or {}
    result = result or {}
    learner = result.get("best_learner")
    entry: dict[str, Any] = {
        "index": int(child.parent_step) if (child.parent_step or "").isdigit() else -1,
        "name": child.name, "status": child.status,
        "algorithm": algorithm_of(task, learner) if learner else ", ".join(planned.get("algorithms", [])),
        "parameters": result.get("best_config") or {"algorithms": planned.get("algorithms", [])},
        "metric": result.get("best_metric"), "iterations": result.get("trials")}
    for key in ("validation_metrics", "test_metrics"):
        if result.get(key):
            entry[key] = result[key]
    if child.error is not None:
        entry["error"] = child.error.message
    return entry


MAX_RESULT_BYTES = 4 << 20  # a result.json or trials.json read back (trials.json of 1000 iterations is ~300 KB)


def read_result(artifacts: Any, job: str, metric: str) -> dict[str, Any] | None:
    """An ended search's result.json, with its best iterations from trials.json (`top`, best first);
    None when it wrote none. `artifacts` is the ArtifactService: the files are found as `job download`
    finds them, never outside the job's output folder."""
    import json
    import math

    from cible.automl.metrics import LOWER_IS_BETTER
    from cible.core.errors import CibleError

    def read(name: str) -> Any:
        try:
            path = artifacts.file_path(job, f"named-outputs/result/{name}")
        except CibleError:
            return None
        if path.stat().st_size > MAX_RESULT_BYTES:
            return None
        try:
            return json.loads(path.read_bytes())
        except ValueError:
            return None

    result = read("result.json")
    if not isinstance(result, dict):
        return None
    trials = read("trials.json")
    scored = [t for t in trials if isinstance(t, dict) and isinstance(t.get("metric"), (int, float))
              and math.isfinite(t["metric"])] if isinstance(trials, list) else []
    scored.sort(key=lambda t: t["metric"], reverse=metric not in LOWER_IS_BETTER)
    keep = ("best_learner", "best_config", "best_metric", "trials", "validation_metrics", "test_metrics", "warnings")
    summary = {key: result.get(key) for key in keep if result.get(key) is not None}
    summary["top"] = [{"rank": rank, "learner": t.get("learner"), "metric": t["metric"], "config": t.get("config"),
                       "time_s": t.get("trial_time_s")} for rank, t in enumerate(scored[:TOP_MODELS], 1)]
    return summary


SAMPLE_ROWS = 100  # of the first data file, read at submit for its columns


def check_data(job: Any, plans: Any, paths: Any) -> None:
    """Each data input the server can read (an upload, a datastore path, a data asset, a job's output; not
    an http one) has the columns the job names: a typo in `target_column_name` is a 400 at submit, naming
    the field and listing the columns, not a search failing later. `plans` is the PlanBuilder: the
    input is found as the job's own will be."""
    from cible.core.models.jobs import JobInput
    from cible.core.planning.automl import DATA_INPUTS

    for name in DATA_INPUTS:
        given = getattr(job, name)
        if given is None:
            continue
        entry = plans._input(name, JobInput(type=given.type, path=given.path))
        with _readable(entry.get("source") or {}, paths) as where:
            if where is not None:
                _require(job, name, _columns(where, given.type, name))


def _columns(where: Path, kind: str, field_name: str) -> list[str]:
    from cible.automl import mltable

    if kind == "mltable" or (where / mltable.FILE).is_file():
        return [str(c) for c in mltable.to_pandas(mltable.parse(where, field_name=f"{field_name}.path"),
                                                  rows=SAMPLE_ROWS).columns]
    files = sorted(p for p in where.rglob("*") if p.is_file()) if where.is_dir() else [where]
    for file in files:
        suffix = file.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(file).names)
        if suffix in (".csv", ".tsv"):
            import pandas as pd

            return [str(c) for c in pd.read_csv(file, sep="\t" if suffix == ".tsv" else ",", nrows=0).columns]
    from cible.core.errors import InvalidRequestError

    raise InvalidRequestError(f"{field_name}.path: it holds no MLTable file, CSV or Parquet file",
                              details={"field": f"{field_name}.path"})


def _require(job: Any, data: str, columns: list[str]) -> None:
    from cible.core.errors import InvalidRequestError

    wanted = [("target_column_name", job.target_column_name)]
    if data == "training_data":
        wanted.append(("weight_column_name", job.weight_column_name))
        wanted += [(f"featurization.column_name_and_types.{c}", c)
                   for c in ((job.featurization.column_name_and_types or {}) if job.featurization else {})]
        if job.forecasting is not None:
            wanted.append(("forecasting.time_column_name", job.forecasting.time_column_name))
            wanted += [("forecasting.time_series_id_column_names", c)
                       for c in job.forecasting.time_series_id_column_names or []]
    for field_name, column in wanted:
        if column is not None and column not in columns:
            raise InvalidRequestError(f"{field_name}: no column '{column}' in {data} (its columns: "
                                      f"{', '.join(columns)})", details={"field": field_name})


class _readable:
    """The input's files as a path on this machine, for the `with` block: a datastore path as it is; an
    upload (a snapshot) as a scratch folder of hard links to its blobs, removed after; None for http."""

    def __init__(self, source: dict[str, Any], paths: Any) -> None:
        self.source = source
        self.paths = paths
        self.scratch: Path | None = None

    def __enter__(self) -> Path | None:
        import os
        import shutil
        import tempfile

        from cible.core.safepaths import under
        from cible.runfiles import blob_path, read_manifest

        if self.source.get("local_path"):
            return Path(self.source["local_path"])
        if not self.source.get("snapshot"):
            return None
        blob_root = self.paths.blob_root
        self.scratch = Path(tempfile.mkdtemp(prefix=".automl-check-", dir=self.paths.home))
        subpath = self.source.get("subpath") or ""
        prefix = f"{subpath}/" if subpath else ""
        for rel, entry in read_manifest(blob_root, self.source["snapshot"])["files"].items():
            if rel != subpath and not rel.startswith(prefix):
                continue
            target = under(self.scratch, rel, field="files")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob_path(blob_root, entry["sha256"]), target)
            except OSError:  # another filesystem
                shutil.copyfile(blob_path(blob_root, entry["sha256"]), target)
        return under(self.scratch, subpath, field="path") if subpath else self.scratch

    def __exit__(self, *_: object) -> None:
        import shutil

        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
