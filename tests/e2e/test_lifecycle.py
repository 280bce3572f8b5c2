"""A job's life through the CLI: cancel, status history, listing; and the local server's start/stop."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import psutil
import pytest
from e2e_support import Workspace, wait_until, write_yaml

pytestmark = pytest.mark.e2e

HAPPY_PATH = ["Queued", "Preparing", "Running", "Finalizing", "Completed"]


def gone(pid: int) -> bool:
    """The process has ended (a zombie waiting to be reaped has ended too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_cancel_ends_the_running_process_tree(workspace: Workspace, tmp_path: Path):
    path = write_yaml(tmp_path, "sleep.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo "shell_pid=$$"; echo started; sleep 600
        compute: local
    """)
    name = unique("cancel")
    workspace.cible("job", "create", "-f", path, "-n", name)
    log = wait_until(lambda: "started" in workspace.run_log(name) and workspace.run_log(name),
                     timeout=60, message="the job's log to say 'started'")
    shell_pid = int(re.search(r"shell_pid=(\d+)", log).group(1))

    def job_processes() -> list[psutil.Process]:
        try:
            shell = psutil.Process(shell_pid)
            procs = [shell, *shell.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return procs if any(p.name() == "sleep" for p in procs) else []

    procs = wait_until(job_processes, timeout=30, message="the job's `sleep 600` to be running")
    pids = [p.pid for p in procs]
    assert workspace.job(name)["status"] == "Running"

    cancelled = workspace.json("job", "cancel", "-n", name)
    assert cancelled["name"] == name
    assert cancelled["status"] in ("CancelRequested", "Canceled"), cancelled["status"]

    job = workspace.wait_status(name, {"Canceled", "Completed", "Failed"}, timeout=60)
    assert job["status"] == "Canceled", job
    statuses = [h["status"] for h in job["status_history"]]
    assert statuses.index("CancelRequested") < statuses.index("Canceled"), statuses
    assert "Completed" not in statuses, statuses
    wait_until(lambda: all(gone(p) for p in pids), timeout=30, message=f"the job's processes {pids} to end")
    assert "started" in workspace.run_log(name)

    # Cancelling again: the job already ended; say so, exit 1.
    again = workspace.cible("job", "cancel", "-n", name, check=False)
    assert again.returncode == 1, again
    assert again.stderr.startswith("error:"), again.stderr
    assert "Canceled" in again.stderr, again.stderr


def test_status_history_of_a_completed_job_is_in_order(workspace: Workspace, tmp_path: Path):
    path = write_yaml(tmp_path, "ok.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo ok
        compute: local
    """)
    name = unique("history")
    workspace.cible("job", "create", "-f", path, "-n", name, "--stream", "-o", "json")
    job = workspace.job(name)
    assert job["status"] == "Completed"
    history = job["status_history"]
    statuses = [h["status"] for h in history]
    if statuses and statuses[0] == "NotStarted":  # Azure's status before Queued
        statuses = statuses[1:]
    assert statuses == HAPPY_PATH, statuses
    stamps = [h["at"] for h in history]
    assert stamps == sorted(stamps), f"status_history times go backwards: {history}"
    assert job["start_time"] and job["end_time"], job
    assert job["start_time"] <= job["end_time"], job


def test_job_list_contains_submitted_jobs(workspace: Workspace, tmp_path: Path):
    path = write_yaml(tmp_path, "ok.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo listed
        compute: local
        experiment_name: listing
    """)
    names = [unique("listed"), unique("listed")]
    for name in names:
        workspace.cible("job", "create", "-f", path, "-n", name)
    jobs = workspace.json("job", "list")
    assert isinstance(jobs, list), jobs
    by_name = {j["name"]: j for j in jobs}
    for name in names:
        assert name in by_name, f"{name} not in job list: {sorted(by_name)}"
        assert by_name[name]["experiment_name"] == "listing"
        assert by_name[name]["compute"] == "local"
    # newest first
    listed = [j["name"] for j in jobs if j["name"] in names]
    assert listed == names[::-1], listed
    for name in names:
        workspace.wait_status(name, "Completed")
    completed = workspace.json("job", "list", "--status", "Completed")
    assert set(names) <= {j["name"] for j in completed}
    assert all(j["status"] == "Completed" for j in completed), completed


def test_default_experiment_is_the_working_directory(workspace: Workspace, tmp_path: Path):
    path = write_yaml(tmp_path, "ok.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo where
        compute: local
    """)
    job = workspace.json("job", "create", "-f", path, "-n", unique("exp"))
    assert job["experiment_name"] == workspace.cwd.name, job["experiment_name"]
    assert job["display_name"], job


def test_server_status_shows_pid_and_url(workspace: Workspace):
    workspace.cible("compute", "list")  # any command starts the server
    info = workspace.server_info()
    assert info["status"] == "running", info
    assert isinstance(info["pid"], int) and psutil.pid_exists(info["pid"]), info
    assert re.match(r"^https?://[^/:]+:\d+", info["url"]), info
    assert Path(info["workspace"]) == workspace.home.resolve(), info


def test_server_status_exits_non_zero_when_no_server_runs(fresh_workspace: Workspace):
    proc = fresh_workspace.cible("server", "status", "-o", "json", check=False)
    assert json.loads(proc.stdout)["status"] == "stopped", proc
    # `cible server status` is a check scripts can use: non-zero when stopped (the CLI means 3).
    assert proc.returncode != 0, f"`cible server status` exited 0 with no server running:\n{proc.stdout}"


def test_server_stop_then_any_command_starts_it_again(fresh_workspace: Workspace):
    ws = fresh_workspace
    started = json.loads(ws.cible("server", "start", "-o", "json").stdout)
    assert started["pid"] and started["url"], started
    assert ws.server_info()["pid"] == started["pid"]

    ws.cible("server", "stop")
    wait_until(lambda: gone(started["pid"]), timeout=20, message="the stopped server to exit")
    stopped = ws.cible("server", "status", "-o", "json", check=False)
    assert json.loads(stopped.stdout)["status"] == "stopped", stopped

    # stopping a stopped server is fine
    ws.cible("server", "stop")

    assert ws.json("job", "list") == []  # auto-starts a new server
    again = ws.server_info()
    assert again["status"] == "running"
    assert again["pid"] != started["pid"]


def test_stream_prints_the_summary_and_fails_with_the_job(workspace: Workspace, tmp_path: Path):
    ok = write_yaml(tmp_path, "ok.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo streamed-line
        compute: local
    """)
    bad = write_yaml(tmp_path, "bad.yml", """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        command: echo failing-line; exit 5
        compute: local
    """)
    good_name, bad_name = unique("stream-ok"), unique("stream-bad")
    proc = workspace.cible("job", "create", "-f", ok, "-n", good_name, "--stream")
    assert f"RunId: {good_name}" in proc.stdout, proc.stdout
    assert "streamed-line" in proc.stdout, proc.stdout
    assert "Status: Completed" in proc.stdout, proc.stdout

    workspace.cible("job", "create", "-f", bad, "-n", bad_name)
    proc = workspace.cible("job", "stream", "-n", bad_name, check=False)
    assert proc.returncode != 0, proc
    assert "failing-line" in proc.stdout, proc.stdout
    assert "Status: Failed" in proc.stdout, proc.stdout
    assert proc.stderr.startswith("error:") and bad_name in proc.stderr, proc.stderr
    error = workspace.job(bad_name)["error"]
    assert error["exit_code"] == 5, error
