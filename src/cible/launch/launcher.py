"""The launcher: the single place where a job meets a machine.

`python -m cible.launch RUN_DIR` reads RUN_DIR/plan.json (written by the server
or an agent), stages code and inputs, sets Azure's environment variables, runs
the command through a shell with its output in user_logs/std_log.txt, enforces
limits.timeout, publishes outputs and reports every status to RUN_DIR/state.json.
Every target ends here, so the job contract is the same everywhere.

It imports only the standard library and cible's stdlib-only modules: its start
is on the critical path of every dispatch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cible.core.safepaths import under
from cible.core.specs.azureml.expressions import render_command
from cible.launch import sandbox, staging
from cible.launch.environments import EnvironmentBuildError, materialise
from cible.launch.preflight import preflight
from cible.launch.procs import end_group, kill_tree, wait_for_exit
from cible.launch.spark_files import publish_spark_outputs, spark_root
from cible.launch.state import StateWriter, take_wake_fd
from cible.launch.tracking import end_run, job_environment, start_run
from cible.runfiles import CANCEL_FILE, PLAN_FILE

LOG_TAIL_LINES = 20
JOB_OUTPUT_SCHEME = "azureml://jobs/"  # an output that is a job's own folder (its default artifacts)
SERVER_ONLY_ENV = ("CIBLE_", "RAY_AUTH_", "RAY_ADDRESS", "MLFLOW_TRACKING_", "PGPASSWORD")
T = TypeVar("T")


class Launcher:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        with open(run_dir / PLAN_FILE, encoding="utf-8") as fh:
            self.plan: dict[str, Any] = json.load(fh)
        self.state = StateWriter(run_dir)
        self.artifacts = run_dir / "artifacts"
        self.std_log = self.artifacts / "user_logs" / "std_log.txt"
        self.system_log = self.artifacts / "system_logs" / "launcher.txt"
        self.wd = run_dir / "wd"
        self.cancel_signalled = False
        self.interpreter: tuple[Path, bool] = (Path(sys.executable).parent, False)  # (bin dir, is a venv)

    # -- reporting ---------------------------------------------------------
    def log(self, line: str) -> None:
        with open(self.system_log, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def cancel_requested(self) -> bool:
        return self.cancel_signalled or (self.run_dir / CANCEL_FILE).exists()

    # -- the run -------------------------------------------------------------
    def run(self) -> int:
        # The node's GPUs (cible.node.gpus): for the build chosen for this node, the preflight and the command.
        os.environ.update(self.plan.get("node_env") or {})
        for d in (self.artifacts / "user_logs", self.artifacts / "system_logs"):
            d.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.state.status("Preparing", launcher_pid=os.getpid())
        try:
            if self.cancel_requested():
                return self.end("Canceled", error={"code": "Canceled", "message": "canceled before it started"})
            inputs, env = self._stage()
            refusal = preflight(self.plan.get("gpus"), *self.interpreter, env, progress=self.progress)
            if refusal:  # its framework build cannot run on the size's GPU: said before any of its time is spent
                return self.end("Failed", error={"code": "EnvironmentIncompatible", "message": refusal})
            outputs = self._prepare_outputs(env)
            command = render_command(self.plan["command"], inputs=inputs, outputs=outputs)
            self._start_tracking(env)
        except EnvironmentBuildError as exc:
            if self.cancel_requested():  # the build was stopped by the cancel
                return self.end("Canceled", error={"code": "Canceled", "message": "canceled while preparing"})
            return self.end("Failed", error={"code": "EnvironmentBuildFailed", "message": exc.message})
        except Exception as exc:  # any staging failure fails the job at Preparing
            self.log("preparing failed:\n" + traceback.format_exc())
            return self.end("Failed", error={"code": "PreparingFailed", "message": f"preparing the job failed: {exc}"})
        if self.cancel_requested():  # canceled while its inputs were staged
            return self.end("Canceled", error={"code": "Canceled", "message": "canceled before it started"})
        return self._execute(command, env)

    def _start_tracking(self, env: dict[str, str]) -> None:
        """The job's MLflow run, created (or found again after a crash) before the command starts."""
        tracking = self.plan.get("tracking")
        if not tracking:
            return
        plan = self.plan
        recorded = self.state.state.get("mlflow_run_id")
        run = start_run(tracking["uri"], tracking.get("token"), plan["experiment_name"], plan["job_name"],
                        {"cible.job": plan["job_name"], "cible.compute": plan.get("compute", "local")},
                        run_id=recorded, experiment_id=tracking.get("experiment_id"), search_existing=False)
        self.state.update(mlflow_run_id=run["run_id"], mlflow_experiment_id=run["experiment_id"])
        env.update(job_environment(tracking["uri"], tracking.get("token"), run, plan["experiment_name"]))
        env.update(plan.get("environment_variables", {}))  # the user's own values win

    def _end_tracking(self, status: str) -> None:
        tracking, run_id = self.plan.get("tracking"), self.state.state.get("mlflow_run_id")
        if not (tracking and run_id):
            return
        try:
            end_run(tracking["uri"], tracking.get("token"), run_id, status)
        except Exception as exc:  # the job's own end matters more than its run's
            self.log(f"could not end MLflow run {run_id}: {exc}")

    def _on_sigterm(self, *_: object) -> None:
        self.cancel_signalled = True

    def progress(self, line: str) -> None:
        """A line for the user: the job's log shows how preparing goes (`--stream` follows it)."""
        with open(self.std_log, "a", encoding="utf-8") as fh:
            fh.write(f"[cible] {line}\n")
        self.log(line)

    def _environment(self) -> tuple[Path, bool]:
        """The bin dir of the job's interpreter (built or reused) and whether it is a venv."""
        env = self.plan.get("environment") or {"kind": "host"}
        bin_dir = materialise(
            env, cache_root=Path(self.plan["env_cache"]), progress=self.progress,
            build_log=self.artifacts / "system_logs" / "environment_build.txt",
            strict_python=self.plan.get("strict_python", False), cancel=self.cancel_requested,
        )
        self.interpreter = (bin_dir, env.get("kind") == "venv")
        return self.interpreter

    def _stage(self) -> tuple[dict[str, str], dict[str, str]]:
        plan, run_dir = self.plan, self.run_dir
        blob_root = Path(plan["blob_root"])
        bin_dir, is_venv = self._environment()
        self.wd.mkdir(parents=True, exist_ok=True)
        code = plan.get("code")
        if code:
            staging.materialise_snapshot(blob_root, code["snapshot"], self.wd)
            self.log(f"code snapshot {code['snapshot'][:12]} staged in {self.wd}")
        for name in ("outputs", "logs"):
            (self.wd / name).mkdir(exist_ok=True)
        env = self._base_env(bin_dir, is_venv)
        values: dict[str, str] = {}
        spark_dir = spark_root(plan)
        for name, spec in plan.get("inputs", {}).items():
            if spec["kind"] == "literal":
                values[name] = spec["value"]
                env[f"AZUREML_PARAMETER_{name}"] = spec["value"]
                continue
            if spark_dir is not None and plan.get("node_rank", 0) > 0:
                values[name] = ""  # a Spark worker's node runs no command: its executors read what the first staged
                continue
            folder = spark_dir / "inputs" if spark_dir is not None else run_dir / "inputs"
            value = self._stage_input(name, spec, blob_root, under(folder, name, field=f"inputs.{name}"))
            values[name] = value
            env[f"AZURE_ML_INPUT_{name}"] = value
            env[f"AZUREML_DATAREFERENCE_{name}"] = value
        return values, env

    def _stage_input(self, name: str, spec: dict[str, Any], blob_root: Path, dest: Path) -> str:
        source, mode = spec["source"], spec.get("mode") or "ro_mount"
        if mode == "direct" and self.plan.get("spark"):
            # Spark reads paths, not Azure's URIs: the datastore's own path, anything else downloaded.
            mode = "ro_mount" if "local_path" in source else "download"
        if mode == "direct":
            return spec["uri"]
        folder = spec["type"] != "uri_file"
        if "snapshot" in source:
            path = staging.materialise_snapshot(blob_root, source["snapshot"], dest, source.get("subpath", ""))
        elif "url" in source:
            path = staging.download_url(source["url"], dest, folder=folder)
        else:
            local = Path(source["local_path"])
            if not local.exists():
                raise FileNotFoundError(f"input '{name}': {spec['uri']} does not exist")
            if mode in ("ro_mount", "mount", "eval_mount"):
                return str(local)  # datastore storage is local here: a mount is the path itself
            path = staging.copy_path(local, dest)
        if mode in ("ro_mount", "mount", "eval_mount"):
            staging.make_read_only(path)
        self.log(f"input {name} ({spec['type']}, {mode}) staged at {path}")
        return str(path)

    def _prepare_outputs(self, env: dict[str, str]) -> dict[str, str]:
        paths: dict[str, str] = {}
        spark_dir = spark_root(self.plan)
        for name, spec in self.plan.get("outputs", {}).items():
            if spark_dir is not None and spec.get("mode") != "upload":
                # Spark replaces (deletes, then writes) the folder it is given: a staged one of the job's own,
                # published at the end (cible.launch.spark_files).
                paths[name] = env[f"AZURE_ML_OUTPUT_{name}"] = str(under(spark_dir, "outputs", name,
                                                                         field=f"outputs.{name}"))
                continue
            if spec.get("mode") == "upload":
                local = under(self.run_dir / "outputs", name, field=f"outputs.{name}")
            else:  # rw_mount: writes go straight to the datastore path
                local = Path(spec["local_path"])
            local.mkdir(parents=True, exist_ok=True)
            paths[name] = str(local)
            env[f"AZURE_ML_OUTPUT_{name}"] = str(local)
        return paths

    def _base_env(self, bin_dir: Path, is_venv: bool) -> dict[str, str]:
        plan = self.plan
        # The server's own settings and secrets (a database URL with its password, Ray's token) are
        # not the job's: it gets the machine's environment without them, then Azure's variables.
        env = {k: v for k, v in os.environ.items() if not k.startswith(SERVER_ONLY_ENV)}
        # `python` and `pip` in the command are the environment's.
        env["PATH"] = str(bin_dir) + os.pathsep + env.get("PATH", "")
        if is_venv:
            env["VIRTUAL_ENV"] = str(bin_dir.parent)
        env.update(
            {
                "AZUREML_RUN_ID": plan["job_name"],
                "AZUREML_ROOT_RUN_ID": plan["job_name"],
                "AZUREML_ARM_PROJECT_NAME": plan["experiment_name"],
                "AZUREML_EXPERIMENT_NAME": plan["experiment_name"],
                "AZUREML_ARM_WORKSPACE_NAME": plan.get("workspace", "local"),
                "AZUREML_ARM_SUBSCRIPTION": "local",
                "AZUREML_ARM_RESOURCEGROUP": "local",
                "AZUREML_CR_EXECUTION_WORKING_DIR_PATH": str(self.wd),
                "AZUREML_CR_DATA_CAPABILITY_PATH": str(self.run_dir),
                "AZUREML_COMPUTE": plan.get("compute", "local"),
                "PYTHONUNBUFFERED": "1",  # logs reach std_log.txt as they are written
            }
        )
        if plan.get("resume_dir"):  # a cluster job: a folder that outlives a preemption and requeue
            Path(plan["resume_dir"]).mkdir(parents=True, exist_ok=True)
            env["CIBLE_RESUME"] = plan["resume_dir"]
            env["CIBLE_ATTEMPT"] = str(plan.get("attempt", 1))
        if plan.get("serving"):  # an online deployment's replica: cible's scoring server in the job's environment
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self._cible_only_path()), env.get("PYTHONPATH")) if p)
            node_addrs = plan.get("node_addrs") or []
            env["CIBLE_NODE_ADDRESS"] = node_addrs[plan.get("node_rank", 0)] if node_addrs else "127.0.0.1"
        if plan.get("batch"):  # a batch job: cible's batch runner in the job's environment, reporting to the server
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self._cible_only_path()), env.get("PYTHONPATH")) if p)
            env["CIBLE_API_URL"] = plan.get("api_url") or ""
            env["CIBLE_JOB_TOKEN"] = plan.get("api_token") or ""
            env["CIBLE_NODE_RANK"] = str(plan.get("node_rank", 0))
            env["CIBLE_JOB_ATTEMPT"] = str(plan.get("attempt", 1))
        env.update(plan.get("environment_variables", {}))
        return env

    def _cible_only_path(self) -> Path:
        """A folder holding only the `cible` package: on a venv's path it adds cible.serving (which imports
        nothing beyond the standard library and the server's own packages), not cible's dependencies."""
        import cible

        folder = self.run_dir / "inputs" / ".cible-path"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "cible"
        if not link.is_symlink():
            link.symlink_to(Path(cible.__file__).parent, target_is_directory=True)
        return folder

    def sandboxed(self, start: Callable[[Callable[[], None] | None], T]) -> T:
        """`start(preexec_fn)` with the preexec_fn that hides the workspace from the command
        (launch/sandbox.py). Where the sandbox cannot be made, says why and starts it without one,
        or raises SandboxError under CIBLE_JOB_SANDBOX=required."""
        mode = sandbox.mode()
        resume = [Path(self.plan["resume_dir"])] if self.plan.get("resume_dir") else []
        # rw_mount outputs are written in place, in the datastore. The run folder itself is not the
        # command's: the launcher keeps its state and logs there, and must find no link planted.
        # An output that is the job's default artifacts folder (`artifacts`, azureml://jobs/<job>/...) is in
        # the run folder and filled by the launcher from ./outputs and ./logs: never the command's to write.
        outputs = [Path(o["local_path"]) for o in self.plan.get("outputs", {}).values()
                   if o.get("mode") != "upload" and not str(o.get("uri", "")).startswith(JOB_OUTPUT_SCHEME)]
        # Inputs read in place (a mounted job output, a pipeline step's default artifacts) stay visible.
        mounted = [Path(i["source"]["local_path"]) for i in self.plan.get("inputs", {}).values()
                   if i.get("kind") == "data" and "local_path" in (i.get("source") or {})]
        spark_dir = spark_root(self.plan)
        if spark_dir is not None:  # where a Spark job's inputs and outputs are staged, on every node of the job
            outputs.append(spark_dir)
        box = sandbox.Sandbox.from_plan(self.plan, [self.wd, self.run_dir / "outputs", *resume, *outputs],
                                        [self.run_dir / "inputs", *mounted], protect=sandbox.installation())
        if mode == "required" and "sandbox" not in self.plan:
            raise sandbox.SandboxError(0, "this job's plan was made before jobs were sandboxed; submit it again")
        if box is None or mode == "off":
            return start(None)
        try:
            return start(box.preexec(self.wd))
        except subprocess.SubprocessError:  # the preexec_fn failed in the child: ask why, once
            why = box.probe(self.wd) or "entering it failed"
        if mode == "required":
            raise sandbox.SandboxError(0, f"the workspace cannot be hidden from the job here: {why}")
        self.log(f"the workspace is not hidden from this job: {why} (CIBLE_JOB_SANDBOX=required fails instead)")
        with open(self.std_log, "a", encoding="utf-8") as fh:
            fh.write(f"cible: warning: this machine cannot hide the workspace from the job ({why})\n")
        return start(None)

    def _execute(self, command: str, env: dict[str, str]) -> int:
        if self.plan.get("spark"):
            from cible.launch.spark import execute_spark

            return execute_spark(self, command, env)
        if self.plan.get("distribution"):
            return self._execute_ranks(command, env)
        try:
            stopped, code = self.run_shell(command, env)
        except sandbox.SandboxError as exc:
            return self.end("Failed", error={"code": "SandboxUnavailable", "message": exc.strerror})
        return self.conclude(stopped, code, f"the command exited with code {code}" + self.log_tail() if code else "")

    def run_shell(self, command: str, env: dict[str, str]) -> tuple[str | None, int]:
        """Run `command` (sandboxed, its output in std_log) to its end, a cancel or the timeout: (why it was
        stopped or None, its exit code). SandboxError where the sandbox is required and cannot be made."""
        timeout = self.plan.get("timeout")
        shell = shutil.which("bash") or "/bin/sh"

        def start(preexec: Callable[[], None] | None) -> subprocess.Popen:
            with open(self.std_log, "ab", buffering=0) as log:
                return subprocess.Popen(
                    [shell, "-c", command], cwd=self.wd, env=env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec,
                )

        proc = self.sandboxed(start)
        self.state.status("Running", child_pid=proc.pid)
        deadline = time.monotonic() + timeout if timeout else None
        stopped = wait_for_exit(proc, deadline, self.cancel_requested)
        if stopped:
            self.log(f"{stopped}: ending the process tree of pid {proc.pid}")
            kill_tree(proc.pid)
            proc.wait()
        # As when Azure tears down a job's container: nothing the command started
        # in the background outlives the job.
        end_group(proc.pid)
        return stopped, proc.returncode

    def _execute_ranks(self, command: str, env: dict[str, str]) -> int:
        """A distributed job: one process per rank of this node (see cible.launch.ranks)."""
        from cible.launch.distribution import DistributionError, plan_processes, world_size
        from cible.launch.ranks import Ranks

        try:
            processes = plan_processes(self.plan)
        except DistributionError as exc:
            return self.end("Failed", error={"code": "PreparingFailed", "message": str(exc)})
        shell = shutil.which("bash") or "/bin/sh"
        try:
            # The sandbox's preexec_fn is entered once, by a child that starts every rank in it.
            ranks = self.sandboxed(lambda enter: Ranks(shell, command, self.wd, env, processes,
                                                        self.std_log.parent, enter))
        except sandbox.SandboxError as exc:
            return self.end("Failed", error={"code": "SandboxUnavailable", "message": exc.strerror})
        self.state.status("Running", child_pid=ranks.pids[0] if ranks.pids else None, rank_pids=ranks.pids)
        timeout = self.plan.get("timeout")
        stopped, failed = ranks.wait(time.monotonic() + timeout if timeout else None, self.cancel_requested)
        if stopped or failed:
            why = stopped or f"rank {failed.rank} exited with code {failed.proc.returncode}"
            self.log(f"{why}: ending the process trees of ranks {[r.rank for r in ranks.ranks]}")
            ranks.end()
        ranks.end_groups()
        if failed is None:
            return self.conclude(stopped, 0, "")
        code = failed.proc.returncode
        # failed.rank is global; on a multi-node job this node holds only some ranks, so count the job's world.
        world = world_size(self.plan.get("distribution"), self.plan.get("instance_count") or 1)
        return self.conclude(stopped, code, f"rank {failed.rank} (of {world}) exited with code {code}"
                              + self.log_tail(failed.log))

    def conclude(self, stopped: str | None, exit_code: int, failure: str) -> int:
        """Finalize, then the job's end: canceled, timed out, failed (`failure` says why) or completed."""
        self.state.status("Finalizing", exit_code=exit_code)
        try:
            self._finalize()
        except Exception as exc:
            self.log("finalizing failed:\n" + traceback.format_exc())
            return self.end("Failed", error={"code": "FinalizingFailed", "message": f"publishing outputs failed: {exc}"})
        if stopped == "cancel":
            return self.end("Canceled", error={"code": "Canceled", "message": "the job was canceled"})
        if stopped == "timeout":
            timeout = self.plan.get("timeout")
            return self.end("Failed", error={
                "code": "JobTimeout",
                "message": f"the job ran past limits.timeout={timeout}s and was stopped" + self.log_tail(),
            })
        if exit_code != 0:
            return self.end("Failed", error={"code": "UserError", "exit_code": exit_code, "message": failure})
        return self.end("Completed")

    def _finalize(self) -> None:
        publish_spark_outputs(self.plan)
        for name, spec in self.plan.get("outputs", {}).items():
            if spec.get("mode") == "upload":
                staged = under(self.run_dir / "outputs", name, field=f"outputs.{name}")
                staging.publish_output(staged, Path(spec["local_path"]))
        # ./outputs and ./logs are the job's default artifacts; the rest of wd is scratch.
        for name in ("outputs", "logs"):
            src = self.wd / name
            if src.exists():
                shutil.rmtree(self.artifacts / name, ignore_errors=True)
                shutil.move(str(src), self.artifacts / name)
        shutil.rmtree(self.wd, ignore_errors=True)
        shutil.rmtree(self.run_dir / "inputs", ignore_errors=True)

    def log_tail(self, path: Path | None = None) -> str:
        path = path or self.std_log
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 8192))
                lines = fh.read().decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"; last lines of user_logs/{path.name}:\n" + "\n".join(lines) if lines else ""

    def end(self, status: str, error: dict[str, Any] | None = None) -> int:
        self._end_tracking(status)  # before the final status: a finished job never shows a RUNNING run
        self.state.status(status, error=error)
        self.log(f"job ended {status}")
        return 0


def fork_server() -> int:
    """Stay started and imported; for each run dir read on stdin, fork a launcher for it and
    write the launcher's pid on stdout. EOF (the runner went away) ends the server; the
    launchers it forked go on.

    A fork of this warm, single-threaded process costs a few milliseconds where starting
    Python and these imports costs a hundred or more of CPU: that is what a busy node or
    a short job would otherwise pay for every job.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the launchers
    take_wake_fd()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        run_dir = Path(line.strip())
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the launcher waits for its own children
                os.setsid()  # its own session: cancel ends its tree, and it outlives this server
                _redirect_stdio(run_dir)
                code = Launcher(run_dir).run()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _redirect_stdio(run_dir: Path) -> None:
    """The launcher's own stdout/stderr go to system_logs/launcher_stdio.txt; stdin is empty."""
    log_path = run_dir / "artifacts" / "system_logs" / "launcher_stdio.txt"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream in (1, 2):
        os.dup2(fd, stream)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--fork-server"]:
        return fork_server()
    if len(args) != 1:
        print("usage: python -m cible.launch RUN_DIR | --fork-server", file=sys.stderr)
        return 2
    take_wake_fd()
    return Launcher(Path(args[0])).run()
