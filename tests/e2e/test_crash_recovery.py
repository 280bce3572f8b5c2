"""The server is killed (-9) while a job runs; the next server finds the job and finishes its record.

The job waits for a flag file, so the test decides when it ends: either while no server runs
(the new server must collect a job that ended without it) or after the restart (the new server
must adopt a job that is still running).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest
from e2e_support import Workspace, wait_until, write_yaml

pytestmark = pytest.mark.e2e

WAITING_JOB = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
    command: >-
      echo "before the flag";
      for i in $(seq 1 1200); do [ -f "${{inputs.flag}}" ] && break; sleep 0.1; done;
      [ -f "${{inputs.flag}}" ] || { echo "the flag never appeared"; exit 2; };
      echo "content written after the crash" > ${{outputs.result}}/after.txt;
      echo "after the flag"
    inputs:
      flag: FLAG
    outputs:
      result:
        type: uri_folder
    compute: local
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("flag_while_down", [True, False], ids=["job-ends-while-server-down", "job-ends-after-restart"])
def test_job_survives_a_killed_server(fresh_workspace: Workspace, tmp_path: Path, flag_while_down: bool):
    ws = fresh_workspace
    flag = tmp_path / "flag-dir" / "flag"
    flag.parent.mkdir()
    path = write_yaml(tmp_path, "wait.yml", WAITING_JOB.replace("FLAG", str(flag)))
    name = f"crash-{uuid.uuid4().hex[:8]}"

    ws.cible("job", "create", "-f", path, "-n", name)
    wait_until(lambda: "before the flag" in ws.run_log(name), timeout=60, message="the job's first line")
    assert ws.job(name)["status"] == "Running"

    server_pid = ws.server_info()["pid"]
    os.kill(server_pid, signal.SIGKILL)
    wait_until(lambda: gone(server_pid), timeout=20, message="the killed server to be gone")

    if flag_while_down:
        flag.touch()
        wait_until(lambda: "after the flag" in ws.run_log(name), timeout=60,
                   message="the job to finish while no server runs")

    restarted = json.loads(ws.cible("server", "start", "-o", "json").stdout)
    assert restarted["pid"] != server_pid, restarted

    if not flag_while_down:
        assert ws.job(name)["status"] == "Running", "the new server must adopt the still-running job"
        flag.touch()

    job = ws.wait_status(name, {"Completed", "Failed", "Canceled"}, timeout=90)
    assert job["status"] == "Completed", job
    statuses = [h["status"] for h in job["status_history"]]
    assert statuses[-3:] == ["Running", "Finalizing", "Completed"], statuses

    log = ws.downloaded_log(name, tmp_path / "dl")
    assert "before the flag" in log and "after the flag" in log, log
    assert log.index("before the flag") < log.index("after the flag"), log
    assert "the flag never appeared" not in log, log

    ws.cible("job", "download", "-n", name, "--output-name", "result", "-p", tmp_path / "out")
    after = tmp_path / "out" / "named-outputs" / "result" / "after.txt"
    assert after.is_file(), sorted(str(p) for p in (tmp_path / "out").rglob("*"))
    assert after.read_text().strip() == "content written after the crash"
