"""A node agent's watcher is woken by its launchers: each status a launcher records puts a byte in
the pipe the runner handed it (cible.launch.state), through the fork server and without it. The
job itself gets neither the pipe nor its variable."""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path

import pytest

from cible.node.runner import LocalProcessRunner
from cible.runfiles import read_state

# Prints the pipes the job holds (by inode) and whether it sees the wake variable, as one JSON line.
PROBE = ("import json, os; fds = [os.readlink(f'/proc/self/fd/{n}') for n in os.listdir('/proc/self/fd') "
         "if os.path.exists(f'/proc/self/fd/{n}')]; "
         "print('PROBE ' + json.dumps({'pipes': [f for f in fds if f.startswith('pipe:')], "
         "'wake_var': 'CIBLE_WAKE_FD' in os.environ}))")


def _plan(tmp_path: Path) -> dict:
    return {"version": 1, "job_name": "wake_job", "experiment_name": "exp", "workspace": "local",
            "compute": "local", "command": f'{sys.executable} -c "{PROBE}"', "code": None, "inputs": {},
            "outputs": {}, "environment_variables": {}, "timeout": None, "blob_root": str(tmp_path / "blobs"),
            "environment": {"kind": "host"}, "env_cache": str(tmp_path / "envs")}


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "plain-spawn"])
def test_each_status_of_a_launcher_wakes_the_watcher_and_the_job_holds_no_end_of_the_pipe(tmp_path: Path,
                                                                                        fork_server: bool):
    news, wake = os.pipe()
    runner = LocalProcessRunner(tmp_path / "runs", fork_server=fork_server, wake_fd=wake)
    runner.prepare()
    try:
        handle = runner.submit("wake_job.1", _plan(tmp_path))
        woken, deadline = b"", time.monotonic() + 60
        while not runner.poll(handle).ended:
            assert time.monotonic() < deadline, f"the launcher did not end: {read_state(Path(handle['run_dir']))}"
            if select.select([news], [], [], 1.0)[0]:  # news comes without polling the run folder
                woken += os.read(news, 4096)
        history = runner.poll(handle).history
        assert history == ["Preparing", "Running", "Finalizing", "Completed"]
        # The launcher writes a status to its state file, then the byte: the last may follow the end seen.
        while len(woken) < len(history) and select.select([news], [], [], 5.0)[0]:
            woken += os.read(news, 4096)
        assert len(woken) >= len(history)  # a byte per status at least (facts recorded wake it too)
        log = (Path(handle["run_dir"]) / "artifacts" / "user_logs" / "std_log.txt").read_text()
        probe = json.loads(next(line for line in log.splitlines() if line.startswith("PROBE "))[len("PROBE "):])
        wake_pipe = f"pipe:[{os.fstat(wake).st_ino}]"
        assert probe["wake_var"] is False
        assert wake_pipe not in probe["pipes"], probe
    finally:
        runner.close()
        os.close(news)
        os.close(wake)
