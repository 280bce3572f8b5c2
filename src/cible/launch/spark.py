"""Spark in the launcher: the master a Spark job's spark-submit is given, and on cible's nodes the job's
own standalone cluster (core/planning/spark.py decides which, at submit).

Standalone: the first node's launcher starts the master (`spark-class ...Master`, the JVM itself, so its
pid is the daemon's) on the job's master port, every node's launcher a worker holding the node's cores
and memory; the first waits for every worker to register, then runs spark-submit (client mode: the
driver is the job's command). The other nodes' launchers keep their worker until the master goes away
(the driver ended), then end. Each launcher stops its daemons however its job ends, and copies its
executors' stdout and stderr into user_logs.

Stdlib only, like the rest of the launcher.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cible.launch.procs import kill_tree

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
POLL_S = 0.5
# A line that names why a Spark application failed: a Python exception, a JVM one ("Exception in thread
# "main" java.lang.ClassNotFoundException: x"), or Spark's own error classes ("[PATH_NOT_FOUND] ...").
_REASON = re.compile(r"(?:^|Exception in thread \"\w+\" )((?:[\w$]+\.)*[\w$]*(?:Exception|Error)\b(?::.*)?)$")


class SparkSetupError(Exception):
    """The job's Spark could not be started (no pyspark, no Java, a worker that never registered)."""


def spark_home(bin_dir: Path) -> Path:
    """The pyspark package of the job's environment: Spark's home (its bin/ and jars/)."""
    python = bin_dir / "python"
    if bin_dir == Path(sys.executable).parent:  # the launcher's own Python: asked here, no process started
        import importlib.util

        found = importlib.util.find_spec("pyspark")
        home = found.submodule_search_locations[0] if found and found.submodule_search_locations else ""
        return _checked_home(home)
    try:
        out = subprocess.run(
            [str(python if python.exists() else "python3"), "-c",
             "import importlib.util as u; s = u.find_spec('pyspark'); print(s.submodule_search_locations[0] if s else '')"],
            capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SparkSetupError(f"could not ask the job's Python where pyspark is: {exc}") from None
    return _checked_home(out.stdout.strip())


def _checked_home(home: str) -> Path:
    if not home:
        raise SparkSetupError("the job's environment has no pyspark; a Spark job runs in its runtime's environment "
                              "(AzureML-Spark-<version>), or in one that installs pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise SparkSetupError("no Java runtime on this node (Spark needs Java 17); install one, e.g. "
                              "`apt-get install openjdk-17-jre-headless`, or set JAVA_HOME")
    return Path(home)


def free_port(addr: str) -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def port_open(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=1):
            return True
    except OSError:
        return False


def write_properties(path: Path, props: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key} {value}\n" for key, value in props.items()), encoding="utf-8")


class Daemon:
    """A Spark master or worker JVM, its output in a system log."""

    def __init__(self, home: Path, args: list[str], env: dict[str, str], log: Path,
                 preexec: Callable[[], None] | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab", buffering=0) as out:
            self.proc = subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=preexec)  # noqa: PLW1509 (the sandbox's, as the command's)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            kill_tree(self.proc.pid, grace_s=5.0)
        self.proc.wait()


def master_view(addr: str, ui_port: int) -> dict | None:
    """The master's own account of itself (its web UI's /json/), or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{addr}:{ui_port}/json/", timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def wait_for_workers(addr: str, ui_port: int, count: int, deadline: float, stop: Callable[[], bool],
                     master: Daemon) -> str | None:
    """None once `count` workers are ALIVE at the master; else why not (cancel, a dead master, the deadline)."""
    seen = 0
    while time.monotonic() < deadline:
        if stop():
            return "cancel"
        if not master.alive():
            return f"the Spark master exited with code {master.proc.returncode}"
        view = master_view(addr, ui_port)
        if view and view.get("status") == "ALIVE":
            seen = sum(1 for w in view.get("workers") or [] if w.get("state") == "ALIVE")
            if seen >= count:
                return None
        time.sleep(POLL_S)
    return f"{seen} of the job's {count} Spark worker(s) registered with its master in time"


def wait_for_master_end(addr: str, port: int, deadline: float, stop: Callable[[], bool],
                        worker: Daemon) -> str | None:
    """A worker node's wait: None once the master, seen up, is gone (its driver ended); else why it stopped
    waiting (cancel, the worker died, no master came before the deadline)."""
    seen = False
    while True:
        if stop():
            return "cancel"
        if not worker.alive():
            return f"the Spark worker exited with code {worker.proc.returncode}"
        up = port_open(addr, port)
        if seen and not up:
            return None
        if not seen and not up and time.monotonic() > deadline:
            return f"the job's Spark master on {addr}:{port} did not come up in time"
        seen |= up
        time.sleep(POLL_S)


def collect_executor_logs(work_dir: Path, user_logs: Path) -> int:
    """Each executor's stdout and stderr (the worker's work dir: <app>/<executor>/) into user_logs/spark/."""
    copied = 0
    if not work_dir.is_dir():
        return 0
    # The work dir is the job's to write: a link it left there (to a file the job's sandbox hides) is not followed.
    for app in sorted(p for p in work_dir.iterdir() if p.is_dir() and not p.is_symlink()):
        for executor in sorted(p for p in app.iterdir() if p.is_dir() and not p.is_symlink()):
            for stream in ("stdout", "stderr"):
                source = executor / stream
                if source.is_file() and not source.is_symlink():
                    dest = user_logs / "spark" / f"executor_{executor.name}_{stream}.txt"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, dest)
                    copied += 1
    return copied


def failure_reason(log: Path) -> str | None:
    """The last line of the driver's log that names an exception: Spark's (or the app's) own reason."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = _REASON.search(line.strip())
        if match:
            return match.group(1)[:2000]
    return None


# -- the launcher's Spark run ------------------------------------------------------------------------------

SPARK_MASTER_ENV = "CIBLE_SPARK_MASTER"  # as core/planning/spark.py names them (the launcher imports no core)
SPARK_PROPERTIES_ENV = "CIBLE_SPARK_PROPERTIES"


def execute_spark(launcher, command: str, env: dict[str, str]) -> int:  # noqa: ANN001 (a Launcher)
    """Run a Spark job's spark-submit `command` on this node with the master its plan's `spark` block asks for."""
    plan, block = launcher.plan, launcher.plan["spark"]
    addrs = plan.get("node_addrs") or ["127.0.0.1"]
    rank = plan.get("node_rank", 0)
    addr = addrs[rank]
    system_logs, user_logs = launcher.system_log.parent, launcher.std_log.parent
    # Under the job's folder: the only place beside its outputs the sandboxed driver and executors may write.
    scratch = launcher.wd / ".spark"
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    daemons: list[Daemon] = []

    def finish(stopped: str | None, code: int, failure: str) -> int:
        for daemon in reversed(daemons):
            daemon.stop()
        copied = collect_executor_logs(work, user_logs)
        if copied:
            launcher.log(f"{copied} executor log(s) copied into user_logs/spark")
        return launcher.conclude(stopped, code, failure)

    try:
        bin_dir = launcher.interpreter[0]
        home = spark_home(bin_dir)
        python = str(bin_dir / "python") if (bin_dir / "python").exists() else "python3"
        env.update({"SPARK_HOME": str(home), "SPARK_LOCAL_IP": addr, "PYSPARK_PYTHON": python,
                    "PYSPARK_DRIVER_PYTHON": python, "PYARROW_IGNORE_TIMEZONE": "1",
                    "SPARK_LOG_DIR": str(system_logs), "SPARK_WORKER_DIR": str(work),
                    "SPARK_LOCAL_DIRS": str(scratch / "local")})
        mode = block["mode"]
        if mode == "standalone":
            master_addr, master_port = addrs[0], plan.get("master_port") or free_port(addrs[0])
            master_url = f"spark://{master_addr}:{master_port}"
            deadline = time.monotonic() + float(block.get("ready_timeout_s") or 300)
            if rank == 0:
                master_ui = free_port(master_addr)
                daemons.append(Daemon(home, [MASTER_CLASS, "--host", master_addr, "--port", str(master_port),
                                             "--webui-port", str(master_ui)], env, system_logs / "spark_master.txt"))
                launcher.progress(f"Spark master {master_url} starting (its UI: http://{master_addr}:{master_ui})")
            worker_args = [WORKER_CLASS, master_url, "--host", addr, "--cores", str(block["worker_cores"]),
                           "--memory", f"{block['worker_memory_mb']}m", "--work-dir", str(work),
                           "--webui-port", str(free_port(addr))]
            worker_log = system_logs / f"spark_worker_{rank}.txt"
            # The executors run the job's code: the worker that forks them is sandboxed as the command is.
            daemons.append(launcher.sandboxed(lambda preexec: Daemon(home, worker_args, env, worker_log, preexec)))
            if rank > 0:
                launcher.state.status("Running", child_pid=daemons[-1].proc.pid)
                why = wait_for_master_end(master_addr, master_port, deadline, launcher.cancel_requested, daemons[-1])
                if why == "cancel":
                    return finish("cancel", 0, "")
                return finish(None, 1 if why else 0, f"node {rank}: {why}" if why else "")
            why = wait_for_workers(master_addr, master_ui, plan.get("instance_count") or 1, deadline,
                                   launcher.cancel_requested, daemons[0])
            if why == "cancel":
                return finish("cancel", 0, "")
            if why:
                return finish(None, 1, f"the job's Spark cluster did not start: {why} (see system_logs/spark_*.txt)")
            launcher.progress(f"Spark master {master_url}: {plan.get('instance_count') or 1} worker(s) registered")
        elif mode == "attached":
            master_url = block["master"]
        else:
            master_url = f"local[{block.get('local_cores') or '*'}]"
    except SparkSetupError as exc:
        for daemon in reversed(daemons):
            daemon.stop()
        return launcher.end("Failed", error={"code": "SparkUnavailable", "message": str(exc)})
    ui_port = free_port(addr)
    properties = scratch / "spark.properties"
    write_properties(properties, {
        "spark.driver.host": addr, "spark.driver.bindAddress": addr, "spark.ui.port": str(ui_port),
        "spark.ui.showConsoleProgress": "false",
        # Each node is a machine of its own (its folders hidden from the others' sandboxes), even where
        # several share one address: shuffle blocks are fetched through their executors, never read off disk.
        "spark.shuffle.readHostLocalDisk": "false",
    })
    env[SPARK_MASTER_ENV], env[SPARK_PROPERTIES_ENV] = master_url, str(properties)
    services = {"Spark UI": f"http://{addr}:{ui_port}"}
    (system_logs / "spark_ui.json").write_text(json.dumps(services), encoding="utf-8")
    launcher.progress(f"spark-submit on {master_url}; the Spark UI, while it runs: http://{addr}:{ui_port}")
    try:
        stopped, code = launcher.run_shell(command, env)
    except OSError as exc:  # the sandbox could not be made (required): the daemons stop with the job
        for daemon in reversed(daemons):
            daemon.stop()
        return launcher.end("Failed", error={"code": "SandboxUnavailable", "message": exc.strerror or str(exc)})
    failure = ""
    if code:
        reason = failure_reason(launcher.std_log)
        failure = (f"the Spark application failed: {reason}" if reason else
                   f"spark-submit exited with code {code}") + launcher.log_tail()
    return finish(stopped, code, failure)
