"""Batch scoring: 1,000,000 rows in 100 CSV files through a cible batch endpoint, against the floor measured in
the same run (perf-anchors §5).

Data: 100 CSV files x 10,000 rows x 20 float columns (`%.5f`, numpy seed 42), kept in the page cache. Model: a
LogisticRegression on make_classification(20000 x 20), saved with joblib. Every variant writes one output line
per input row (file, row, prediction).

  floor      one process, after its imports: pyarrow `read_csv` -> `predict` per file -> Arrow CSV writer
             (perf-anchors' FLOOR, `floor_1proc_arrow_arrowwrite`)
  one-worker   a batch deployment with max_concurrency_per_instance 1 on a warm one-node cluster
             (Standard_D2s_v3, 2 vCPUs, the local node provider), mini_batch_size 10, append_row; the scoring
             script (bench/batch/score.py) reads with pyarrow, predicts and returns one DataFrame per mini-batch
  two-workers  the same with max_concurrency_per_instance 2

The cible rows/s is the job's own (`job show` → batch.rows_per_second: rows over the span from the first
mini-batch's start to the last one's end), so it leaves out, like the floor, process start, imports and
`init()`; the invocation's whole time (invoke → Completed, node already up) is printed beside it. The
runner's overhead per mini-batch is the time each worker spends between two `run()` calls (the part file
written, the result reported, the next mini-batch claimed), from the script's own timestamps.

Targets (issue 17): one worker >= 0.9x the floor, two >= 1.25x, overhead <= 5 ms per mini-batch.

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
    joblib.load(model_dir / "model_lr.joblib")  # the model file in the page cache, as the others have it
    start = time.perf_counter()
    n = _score_part((sorted(data.glob("*.csv")), model_dir, out))
    return n, time.perf_counter() - start


def _score_part(args: tuple[list[Path], Path, Path]) -> int:
    """Score `files` into `out`: pyarrow read -> predict -> Arrow CSV writer, one line per row."""
    files, model_dir, out = args
    model = joblib.load(model_dir / "model_lr.joblib")
    n = 0
    with open(out, "wb") as sink:
        for path in files:
            table = pv.read_csv(path)
            pred = model.predict(np.column_stack([c.to_numpy() for c in table.columns]))
            n += len(pred)
            rows = pa.table({"file": pa.array([path.name] * len(pred)).dictionary_encode(),
                             "row": pa.array(np.arange(len(pred))), "pred": pa.array(pred)})
            pv.write_csv(rows, sink, write_options=pv.WriteOptions(include_header=False))
    return n


def floor_two_processes(data: Path, model_dir: Path, work: Path) -> tuple[int, float]:
    """perf-anchors' `mp_2proc_arrow_arrowwrite_parts`: 2 forked processes, the files split in two, each
    writing its own part: what two workers can reach on this machine at best. (rows, seconds)"""
    import multiprocessing

    files = sorted(data.glob("*.csv"))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(abs, [0, 0])  # the pool's processes started before the clock
        start = time.perf_counter()
        n = sum(pool.map(_score_part, [(files[w::2], model_dir, work / f"part{w}.txt") for w in range(2)]))
        return n, time.perf_counter() - start


def write_cost_ms(data: Path, model_dir: Path, work: Path) -> float:
    """What writing one mini-batch's result (score.py's DataFrame for 10 files) costs the runner's writer
    in this process: the part of the time between two run() calls that is per row, not per mini-batch."""
    sys.path.insert(0, str(HERE / "batch"))
    os.environ["AZUREML_MODEL_DIR"] = str(model_dir.parent)
    import score  # bench/batch/score.py

    from cible.serving.batch.output import write_part

    score.init()
    result = score.run([str(p) for p in sorted(data.glob("*.csv"))[:10]])
    costs = []
    for k in range(5):
        start = time.perf_counter()
        write_part(str(work / "write-cost"), k, result)
        costs.append(time.perf_counter() - start)
    return statistics.median(costs) * 1000


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
    for name, workers in (("one-worker", 1), ("two-workers", 2)):
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
    results: dict[str, list[float]] = {"floor": [], "floor-2proc": [], "one-worker": [], "two-workers": []}
    walls: dict[str, list[float]] = {"one-worker": [], "two-workers": []}
    overheads: dict[str, list[float]] = {"one-worker": [], "two-workers": []}
    try:
        data, model = make_inputs(work, args.files, args.rows)
        total = args.files * args.rows
        times = work / "times"
        with workspace(work) as (client, home):
            uri = setup(client, home, data, model, times)
            times.mkdir()
            invoke(client, "one-worker", uri)  # warm-up: the node, its environment, the page cache
            for rnd in range(1, args.rounds + 1):
                n, seconds = floor(data, model, work / "floor.txt")
                results["floor"].append(n / seconds)
                n2, seconds2 = floor_two_processes(data, model, work)
                results["floor-2proc"].append(n2 / seconds2)
                print(f"round {rnd}: floor {n / seconds:,.0f} rows/s; two processes {n2 / seconds2:,.0f} rows/s "
                      f"(x{n2 / seconds2 / (n / seconds):.2f})", flush=True)
                for name in ("one-worker", "two-workers"):
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
        writing = write_cost_ms(data, model, work)
        print(f"\nmedians over {args.rounds} rounds, {total:,} rows in {args.files} files:")
        base = statistics.median(results["floor"])
        two = [t / f for t, f in zip(results["floor-2proc"], results["floor"])]
        print(f"  floor              {base:>12,.0f} rows/s  x1.00")
        print(f"  floor, 2 processes {statistics.median(results['floor-2proc']):>12,.0f} rows/s  "
              f"x{statistics.median(two):.2f} (what 2 workers can reach here)")
        for name, goal in (("one-worker", 0.9), ("two-workers", 1.25)):
            ratios = [r / f for r, f in zip(results[name], results["floor"])]
            print(f"  cible {name:<12} {statistics.median(results[name]):>12,.0f} rows/s  "
                  f"x{statistics.median(ratios):.2f} (target >= {goal}); invoke -> Completed "
                  f"{statistics.median(walls[name]):.2f} s")
            if overheads[name]:
                gap = statistics.median(overheads[name])
                print(f"      between two run() calls {gap:.2f} ms per mini-batch of {10 * args.rows:,} rows: writing "
                      f"them {writing:.2f} ms ({writing * 1000 / (10 * args.rows):.3f} us/row, target <= 1), the "
                      f"runner's bookkeeping {gap - writing:.2f} ms (target <= 5 ms)")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
