"""A Spark standalone cluster on loopback, for the tests and bench/spark.py: a master and workers from the
pyspark the Python running this has (`spark-class`, the JVMs themselves), in a folder of their own.

    with StandaloneSpark(tmp_path, workers=2) as spark:
        spark.master_url  # spark://127.0.0.1:<port>
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from cible.launch.spark import MASTER_CLASS, WORKER_CLASS, master_view, spark_home

READY_S = 180  # a master and its workers take 10-30 s to register on a loaded 2-core machine


def spark_unavailable() -> str | None:
    """Why a Spark cluster cannot be started here (no pyspark, no Java), or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'cible[test]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (apt-get install openjdk-17-jre-headless)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandaloneSpark:
    """A master and `workers` workers (each `cores` cores, `memory` of memory) on 127.0.0.1."""

    def __init__(self, root: Path, *, workers: int = 1, cores: int = 1, memory: str = "1g",
                 python: Path | None = None) -> None:
        """`python`: an interpreter whose pyspark (and Spark version) the cluster runs; default this one's."""
        self.root = root
        self.python = python or Path(sys.executable)
        self.home = spark_home(self.python.parent)
        self.port, self.ui_port = _free_port(), _free_port()
        self.workers, self.cores, self.memory = workers, cores, memory
        self.procs: list[subprocess.Popen] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _start(self, args: list[str], log: str) -> None:
        env = {**os.environ, "SPARK_HOME": str(self.home), "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": str(self.python), "SPARK_LOG_DIR": str(self.root)}
        with open(self.root / log, "ab") as out:
            self.procs.append(subprocess.Popen([str(self.home / "bin" / "spark-class"), *args], env=env,
                                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               start_new_session=True))

    def __enter__(self) -> StandaloneSpark:
        self.root.mkdir(parents=True, exist_ok=True)
        self._start([MASTER_CLASS, "--host", "127.0.0.1", "--port", str(self.port), "--webui-port",
                     str(self.ui_port)], "master.log")
        for index in range(self.workers):
            self._start([WORKER_CLASS, self.master_url, "--host", "127.0.0.1", "--cores", str(self.cores),
                         "--memory", self.memory, "--work-dir", str(self.root / f"work-{index}"),
                         "--webui-port", str(_free_port())], f"worker-{index}.log")
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            view = master_view("127.0.0.1", self.ui_port) or {}
            if sum(1 for w in view.get("workers") or [] if w.get("state") == "ALIVE") >= self.workers:
                return self
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.5)
        self.__exit__()
        logs = "\n".join(f"{p.name}: {p.read_text(errors='replace')[-2000:]}" for p in sorted(self.root.glob("*.log")))
        raise RuntimeError(f"the Spark standalone cluster did not start in {READY_S} s:\n{logs}")

    def applications(self) -> list[dict]:
        """The master's applications, running and completed (its /json/ view)."""
        view = master_view("127.0.0.1", self.ui_port) or {}
        return [*view.get("activeapps", []), *view.get("completedapps", [])]

    def __exit__(self, *_: object) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
