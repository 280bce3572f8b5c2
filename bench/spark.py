"""Spark: the same small application on the same standalone cluster, submitted with `spark-submit` and
through cible (a `type: spark` job on that cluster, attached as a synapsespark compute with
cible.master_url), interleaved run by run. Prints each side's median wall time and the ratio
(target: cible <= 1.1x spark-submit).

- spark-submit: from its start to its exit, as a user's terminal sees it.
- cible: from `create_or_update` (the SDK, in-process) to the job read back Completed (polled every
  50 ms), which includes the upload of its code, the launcher, and the run's end reaching the server.

Both run the same interpreter's pyspark (cible's jobs: CIBLE_SPARK_ENVIRONMENT=host) with the same conf.

    .venv/bin/python bench/spark.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from cible.testing.spark import StandaloneSpark, spark_unavailable

APP = """\
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
total = spark.sparkContext.parallelize(range(200_000), 2).map(lambda x: x * x).sum()
print("sum of squares", total)
spark.stop()
"""
CONF = {"spark.driver.memory": "512m", "spark.executor.cores": "1", "spark.executor.memory": "512m",
        "spark.cores.max": "2", "spark.ui.enabled": "false"}


def direct_once(master: str, app: Path, env: dict[str, str]) -> float:
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", master, "--deploy-mode", "client"]
    for key, value in CONF.items():
        command += ["--conf", f"{key}={value}"]
    t0 = time.perf_counter()
    subprocess.run([*command, str(app)], env=env, capture_output=True, check=True)
    return time.perf_counter() - t0


def cible_once(client, job) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    name = client.jobs.create_or_update(job)["name"]
    while (status := client.jobs.get(name)["status"]) not in ("Completed", "Failed", "Canceled"):
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    if status != "Completed":
        raise SystemExit(f"job {name} ended {status}: {client.jobs.get(name).get('error')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if why := spark_unavailable():
        raise SystemExit(f"cannot run: {why}")
    root = Path(tempfile.mkdtemp(prefix="cible-bench-spark-"))
    home = root / "home"
    os.environ.update({"CIBLE_HOME": str(home), "CIBLE_TRACKING": "0", "CIBLE_SPARK_ENVIRONMENT": "host"})
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    (root / "src").mkdir()
    app = root / "src" / "app.py"
    app.write_text(APP)
    from cible import MLClient, load_job

    with StandaloneSpark(root / "spark", workers=1, cores=2, memory="1g") as cluster:
        (root / "bench-spark.yml").write_text(f"name: bench-spark\ntype: synapsespark\n"
                                              f"cible: {{master_url: '{cluster.master_url}'}}\n")
        subprocess.run([sys.executable, "-m", "cible", "compute", "attach", "-f", str(root / "bench-spark.yml")],
                       env=env, capture_output=True, check=True)
        conf = "\n".join(f"  {key}: {value}" for key, value in CONF.items())
        (root / "job.yml").write_text(textwrap.dedent("""\
            type: spark
            code: ./src
            entry: {file: app.py}
            compute: azureml:bench-spark
            experiment_name: bench
            conf:
            """) + conf + "\n")
        job = load_job(root / "job.yml")
        client = MLClient(home=home)
        try:
            for _ in range(2):  # warm-up: the JVM's and the page cache's first runs, the server's first job
                direct_once(cluster.master_url, app, env), cible_once(client, job)
            direct, through = [], []
            for _ in range(args.runs):  # interleaved, so machine noise hits both alike
                direct.append(direct_once(cluster.master_url, app, env))
                through.append(cible_once(client, job))
        finally:
            subprocess.run([sys.executable, "-m", "cible", "server", "stop"], env=env, capture_output=True, check=False)
    d, c = statistics.median(direct), statistics.median(through)
    print(f"runs: {args.runs} each, interleaved; medians; one standalone master and worker on 127.0.0.1")
    print(f"spark-submit:        {d:7.2f} s  (min {min(direct):.2f}, max {max(direct):.2f})")
    print(f"cible (spark job):   {c:7.2f} s  (min {min(through):.2f}, max {max(through):.2f})")
    print(f"ratio cible / spark-submit: {c / d:.3f}  (target <= 1.1)  added: {c - d:+.2f} s")


if __name__ == "__main__":
    main()
