"""Batch scoring: 1,000,000 rows in 100 CSV files through a cible batch endpoint, against the floor measured in
the same run (perf-anchors §5).

Data: 100 CSV files x 10,000 rows x 20 float columns (`%.5f`, numpy seed 42), kept in the page cache. Model: a
LogisticRegression on make_classification(20000 x 20), saved with joblib. Every variant writes one output line
per input row (file, row, prediction).

  floor      one process, after its imports: pyarrow `read_csv` -> `predict` per file -> Arrow CSV writer
             (perf-anchors' FLOOR, `floor_1proc_arrow_arrowwrite`)
  cible w1   a batch deployment with max_concurrency_per_instance 1 on a warm one-node cluster
             (Standard_D2s_v3, 2 vCPUs, the local node provider), mini_batch_size 10, append_row; the scoring
             script (bench/batch/score.py) reads with pyarrow, predicts and returns one DataFrame per mini-batch
  cible w2   the same with max_concurrency_per_instance 2

The cible rows/s is the job's own (`job show` → batch.rows_per_second: rows over the span from the first
mini-batch's start to the last one's end), so it leaves out, like the floor, process start, imports and
`init()`; the invocation's whole time (invoke → Completed, node already up) is printed beside it. The
runner's overhead per mini-batch is the time each worker spends between two `run()` calls (the part file
written, the result reported, the next mini-batch claimed), from the script's own timestamps.

Targets (issue 17): w1 >= 0.9x the floor, w2 >= 1.25x, overhead <= 5 ms per mini-batch.

    .venv/bin/python bench/batch.py [--rounds 3] [--files 100] [--rows 10000] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
HOST_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"  # the host's Python: nothing to build
ENDPOINT = "bench-batch"


def make_inputs(work: Path, files: int, rows: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(42)
    data = work / "data"
    data.mkdir(parents=True)
    header = ",".join(f"f{i}" for i in range(20))
    for k in range(files):
        np.savetxt(data / f"part-{k:03d}.csv", rng.standard_normal((rows, 20)), fmt="%.5f", delimiter=",",
                   header=header, comments="")
    x, y = make_classification(n_samples=20000, n_features=20, random_state=0)
    model = work / "model"
    model.mkdir()
    joblib.dump(LogisticRegression(max_iter=200).fit(x, y), model / "model_lr.joblib")
    return data, model


def floor(data: Path, model_dir: Path, out: Path) -> tuple[int, float]:
    """perf-anchors' floor: one process, pyarrow read -> predict -> Arrow CSV writer. (rows, seconds)"""
    model = joblib.load(model_dir / "model_lr.joblib")
    files = sorted(data.glob("*.csv"))
    start, n = time.perf_counter(), 0
    with open(out, "wb") as sink:
        for path in files:
            table = pv.read_csv(path)
            pred = model.predict(np.column_stack([c.to_numpy() for c in table.columns]))
            n += len(pred)
            rows = pa.table({"file": pa.array([path.name] * len(pred)).dictionary_encode(),
                             "row": pa.array(np.arange(len(pred))), "pred": pa.array(pred)})
            pv.write_csv(rows, sink, write_options=pv.WriteOptions(include_header=False))
    return n, time.perf_counter() - start


def overhead_ms(times_dir: Path) -> float | None:
    """The mean time a worker spent between two run() calls (the runner's own work), in ms."""
    gaps = []
    for f in times_dir.glob("*.txt"):
        calls = sorted(tuple(map(float, line.split())) for line in f.read_text().splitlines() if line.strip())
        gaps += [b[0] - a[1] for a, b in zip(calls, calls[1:])]
    return statistics.median(gaps) * 1000 if gaps else None


@contextlib.contextmanager
def workspace(work: Path):
    home = work / "ws"
    saved = {k: os.environ.get(k) for k in ("CIBLE_HOME", "CIBLE_TRACKING", "CIBLE_URL", "CIBLE_TOKEN",
                                            "CIBLE_DATABASE_URL", "BENCH_TIMES")}
    for k in ("CIBLE_URL", "CIBLE_TOKEN", "CIBLE_DATABASE_URL"):
        os.environ.pop(k, None)
    os.environ.update(CIBLE_HOME=str(home), CIBLE_TRACKING="0")
    from cible import MLClient

    client = MLClient(home=home)
    try:
        yield client, home
    finally:
        client.close()
        subprocess.run([sys.executable, "-m", "cible", "server", "stop", "--home", str(home)], capture_output=True,
                       timeout=120, check=False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def setup(client, home: Path, data: Path, model: Path, times: Path) -> str:  # noqa: ANN001
    """The cluster, the input in the datastore (no upload in the measured path), the endpoint and two deployments."""
    client.compute.begin_create_or_update({"name": "bench-cluster", "type": "amlcompute", "size": "Standard_D2s_v3",
                                           "min_instances": 1, "max_instances": 1,
                                           "idle_time_before_scale_down": 3600}).result()
    stored = client.paths.datastore() / "bench-input"
    shutil.copytree(data, stored)
    client.batch_endpoints.begin_create_or_update({"name": ENDPOINT}).result()
    for name, workers in (("w1", 1), ("w2", 2)):
        client.batch_deployments.begin_create_or_update({
            "name": name, "endpoint_name": ENDPOINT, "type": "model", "model": {"path": str(model)},
            "code_configuration": {"code": str(HERE / "batch"), "scoring_script": "score.py"},
            "environment": {"image": HOST_IMAGE}, "compute": "azureml:bench-cluster",
            "resources": {"instance_count": 1},
            "settings": {"max_concurrency_per_instance": workers, "mini_batch_size": 10,
                         "output_action": "append_row", "error_threshold": -1,
                         "retry_settings": {"max_retries": 0, "timeout": 600},
                         "environment_variables": {"BENCH_TIMES": str(times)}},
        }).result()
    return "azureml://datastores/workspaceblobstore/paths/bench-input"


def invoke(client, deployment: str, uri: str, timeout: float = 900) -> dict:  # noqa: ANN001
    start = time.perf_counter()
    job = client.batch_endpoints.invoke(ENDPOINT, deployment_name=deployment, input=uri)
    deadline = time.monotonic() + timeout
    while True:
        job = client.jobs.get(job["name"])
        if job["status"] in ("Completed", "Failed", "Canceled"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch job {job['name']} still {job['status']} after {timeout:.0f} s")
        time.sleep(0.1)
    if job["status"] != "Completed":
        raise RuntimeError(f"batch job {job['name']} ended {job['status']}: {job.get('error')}")
    return {**job, "wall_s": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cible-bench-batch-"))
    results: dict[str, list[float]] = {"floor": [], "w1": [], "w2": []}
    walls: dict[str, list[float]] = {"w1": [], "w2": []}
    overheads: dict[str, list[float]] = {"w1": [], "w2": []}
    try:
        data, model = make_inputs(work, args.files, args.rows)
        total = args.files * args.rows
        times = work / "times"
        with workspace(work) as (client, home):
            uri = setup(client, home, data, model, times)
            invoke(client, "w1", uri)  # warm-up: the node, its environment, the page cache
            for rnd in range(1, args.rounds + 1):
                n, seconds = floor(data, model, work / "floor.txt")
                results["floor"].append(n / seconds)
                print(f"round {rnd}: floor {n / seconds:,.0f} rows/s", flush=True)
                for name in ("w1", "w2"):
                    shutil.rmtree(times, ignore_errors=True)
                    times.mkdir()
                    job = invoke(client, name, uri)
                    batch = job.get("batch") or {}
                    assert batch.get("rows") == total, f"{name}: {batch.get('rows')} rows written, {total} expected"
                    results[name].append(batch["rows_per_second"])
                    walls[name].append(job["wall_s"])
                    over = overhead_ms(times)
                    if over is not None:
                        overheads[name].append(over)
                    print(f"round {rnd}: cible {name} {batch['rows_per_second']:,.0f} rows/s "
                          f"(x{batch['rows_per_second'] / results['floor'][-1]:.2f} of this round's floor), invoke "
                          f"-> Completed {job['wall_s']:.2f} s, runner overhead "
                          f"{'n/a' if over is None else f'{over:.2f} ms'} per mini-batch", flush=True)
        print(f"\nmedians over {args.rounds} rounds, {total:,} rows in {args.files} files:")
        base = statistics.median(results["floor"])
        print(f"  floor     {base:>12,.0f} rows/s  x1.00")
        for name, goal in (("w1", 0.9), ("w2", 1.25)):
            ratios = [r / f for r, f in zip(results[name], results["floor"])]
            over = f"{statistics.median(overheads[name]):.2f} ms" if overheads[name] else "n/a"
            print(f"  cible {name}  {statistics.median(results[name]):>12,.0f} rows/s  x{statistics.median(ratios):.2f} "
                  f"(target >= {goal}); invoke -> Completed {statistics.median(walls[name]):.2f} s; "
                  f"overhead {over} per mini-batch (target <= 5 ms)")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
