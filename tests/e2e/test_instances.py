"""Compute instances end to end: the CLI against a real server; the instance's node is a real
`cible agent` process. Idle times are seconds long (the ISO form, PT4S) so the tests see
idle shutdown happen; the decisions themselves are unit-tested with a fake clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from e2e_support import REPO, Workspace, wait_until, write_yaml

SMALL = "Standard_DS1_v2"


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    yield workspace
    workspace.stop()


def create_instance(ws: Workspace, name: str, idle: str = "PT4S", extra: str = "") -> dict:
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        name: {name}
        type: computeinstance
        size: {SMALL}
        idle_time_before_shutdown: {idle}
        cible: {{idle_warning_minutes: 0.05}}
        {extra}
        """)
    return ws.json("compute", "create", "-f", spec)


def show(ws: Workspace, name: str) -> dict:
    return ws.json("compute", "show", "-n", name)


def wait_shown(ws: Workspace, name: str, holds, timeout: float = 30.0, message: str = "") -> dict:  # noqa: ANN001
    """Poll `compute show` until holds(shown) is true; returns what was shown."""
    def check() -> dict | None:
        shown = show(ws, name)
        return shown if holds(shown) else None

    return wait_until(check, timeout, interval=0.2, message=message or f"compute instance {name}")


def wait_state(ws: Workspace, name: str, state: str, timeout: float = 30.0) -> dict:
    return wait_shown(ws, name, lambda c: c["state"] == state, timeout, f"compute instance {name} to be {state}")


def submit(ws: Workspace, name: str, command: str, compute: str) -> str:
    spec = write_yaml(ws.cwd, f"{name}.yml", f"""
        command: {command}
        environment: azureml:AzureML-sklearn-1.5@latest
        compute: azureml:{compute}
        """)
    return ws.json("job", "create", "-f", spec, "-n", name)["name"]


def stays(ws: Workspace, name: str, state: str, until: float) -> None:
    """Poll until the monotonic deadline `until`, failing if the instance leaves `state` before it."""
    while time.monotonic() < until:
        now = show(ws, name)
        assert now["state"] == state, now


def test_instance_runs_a_job_then_stops_about_its_idle_time_after_and_says_why_beforehand(ws: Workspace) -> None:
    created = create_instance(ws, "ci", idle="PT8S")
    assert created["state"] == "Creating" and created["owner"] == created["created_by"]
    wait_state(ws, "ci", "Running")

    job = submit(ws, "on-ci", "'echo hello from $AZUREML_COMPUTE; sleep 3'", "ci")
    busy = wait_shown(ws, "ci", lambda c: "on-ci" in (c["idleness"]["why_not"] or ""), message="the running job named")
    assert busy["state"] == "JobRunning" and busy["idleness"]["idle"] is False
    done = ws.wait_status(job)
    assert done["status"] == "Completed" and "hello from ci" in ws.run_log(job)
    ended = aware(datetime.fromisoformat(done["end_time"]))

    before = wait_shown(ws, "ci", lambda c: c["idleness"]["idle"], 10, message="the instance idle")
    assert before["state"] == "Running"
    stops_at = datetime.fromisoformat(before["idleness"]["stops_at"])  # said before it happened
    assert timedelta(seconds=7.5) <= stops_at - ended <= timedelta(seconds=10), (ended, stops_at)

    stopped = wait_state(ws, "ci", "Stopped", timeout=20)
    kinds = [e["kind"] for e in stopped["events"]]
    assert "IdleShutdownWarning" in kinds and kinds[-1] == "Stopped"
    stop_event = stopped["events"][-1]
    assert "idle shutdown" in stop_event["message"] and stopped["power_reason"] == stop_event["message"]
    assert abs((datetime.fromisoformat(stop_event["at"]) - stops_at).total_seconds()) < 1.5
    assert stopped["current_node_count"] == 0 and stopped["cost"]["so_far"] > 0
    assert 0 < stopped["cost"]["idle"] < stopped["cost"]["so_far"]


def test_a_job_on_a_stopped_instance_waits_and_says_so_then_runs_after_start(ws: Workspace) -> None:
    create_instance(ws, "ci", idle="PT2M")
    wait_state(ws, "ci", "Running")
    ws.cible("compute", "stop", "-n", "ci")
    wait_state(ws, "ci", "Stopped")
    job = submit(ws, "waits", "'echo ran'", "ci")
    queued = ws.job(job)
    assert queued["status"] == "Queued"
    assert "compute instance ci is Stopped" in queued["queue_reason"] and "cible compute start ci" in queued["queue_reason"]
    ws.cible("compute", "start", "-n", "ci")
    assert ws.wait_status(job)["status"] == "Completed"
    assert show(ws, "ci")["last_operation"]["operation_name"] == "Start"


def test_stop_and_restart_are_refused_while_a_job_runs_and_restart_gives_a_new_node(ws: Workspace) -> None:
    create_instance(ws, "ci", idle="PT2M")
    first = wait_state(ws, "ci", "Running")["node"]["node_id"]
    gate = ws.cwd / "go"
    job = submit(ws, "held", f"'while [ ! -e {gate} ]; do sleep 0.05; done'", "ci")
    ws.wait_status(job, "Running")
    for verb in ("stop", "restart"):
        refused = ws.cible("compute", verb, "-n", "ci", check=False)
        assert refused.returncode != 0 and "job held is running" in refused.stderr, refused.stderr
    gate.touch()
    ws.wait_status(job)
    ws.cible("compute", "restart", "-n", "ci")
    restarted = wait_shown(ws, "ci", lambda c: c["state"] == "Running" and c["node"]["node_id"] != first,
                           message="a new node")
    assert any(e["kind"] == "Restarting" for e in restarted["events"])


def test_a_terminal_keeps_it_running_and_a_snooze_postpones_the_stop(ws: Workspace) -> None:
    create_instance(ws, "ci", idle="PT6S")
    wait_state(ws, "ci", "Running")
    shell = subprocess.Popen([sys.executable, "-m", "cible", "compute", "connect-ssh", "-n", "ci", "-c",
                              "echo kept > notes.txt; pwd; echo node=$CIBLE_NODE_ID; sleep 9"],
                             cwd=ws.cwd, env=ws.env, stdout=subprocess.PIPE, text=True)
    try:
        held = wait_shown(ws, "ci", lambda c: "terminal" in (c["idleness"]["why_not"] or ""), 10,
                          message="the terminal session reported")
        assert held["state"] == "Running" and "1 session open" in held["idleness"]["why_not"]
        stays(ws, "ci", "Running", time.monotonic() + 7)  # past the 6 s idle time: the shell is open
        out, _ = shell.communicate(timeout=30)
    finally:
        shell.kill()
    assert "/instances/ci/home" in out and "node=tvmps_" in out

    ws.cible("compute", "snooze", "-n", "ci", "--minutes", "0.2")  # 12 s later than the stop it had
    after = show(ws, "ci")
    assert after["snoozed_until"] and after["events"][-1]["kind"] == "Snoozed"
    deadline = datetime.fromisoformat(after["snoozed_until"]) - timedelta(minutes=0.2)  # the stop it had
    # Still running a little past where it would have stopped, then stops at the snooze's end.
    stays(ws, "ci", "Running", time.monotonic() + max(0.0, (deadline - datetime.now(deadline.tzinfo)).total_seconds()) + 2)
    wait_state(ws, "ci", "Stopped", timeout=30)

    ws.cible("compute", "start", "-n", "ci")  # the home folder outlives the node
    wait_state(ws, "ci", "Running")
    kept = ws.cible("compute", "connect-ssh", "-n", "ci", "-c", "cat notes.txt").stdout
    assert kept.strip() == "kept"


def test_a_full_disk_is_shown_with_advice_before_a_stop(ws: Workspace) -> None:
    spec = write_yaml(ws.cwd, "tiny.yml", f"""
        name: tiny
        type: computeinstance
        size: {SMALL}
        cible: {{os_disk_gb: 0.002}}
        """)
    ws.json("compute", "create", "-f", spec)
    wait_state(ws, "tiny", "Running")
    ws.cible("compute", "connect-ssh", "-n", "tiny", "-c", "head -c 2500000 /dev/zero > big.bin")
    full = wait_shown(ws, "tiny", lambda c: c.get("warnings"), message="the disk warning")
    assert full["disk"]["used_percent"] > 90
    assert "free 1-2 GB before you stop or restart" in full["warnings"][0]


def test_an_instance_cut_off_from_its_server_stops_itself_after_its_idle_time(ws: Workspace) -> None:
    # An idle time long enough that the server cannot stop the instance itself between Running and
    # the kill (three CLI calls; with PT3S it sometimes did, on a loaded machine), short enough to wait for.
    create_instance(ws, "ci", idle="PT20S")
    node = wait_state(ws, "ci", "Running")["node"]["node_id"]
    pid = ws.agent_pid(node)
    os.kill(ws.server_info()["pid"], signal.SIGKILL)
    wait_until(lambda: not _alive(pid), 60, interval=0.2, message="the agent to stop itself")
    shown = wait_state(ws, "ci", "Stopped", timeout=30)  # the restarted server reads why
    assert "stopped itself" in shown["power_reason"]


def test_a_cron_schedule_stops_the_instance(ws: Workspace) -> None:
    created = create_instance(ws, "ci", idle="PT30M", extra="""schedules:
          compute_start_stop:
            - action: stop
              trigger: {type: cron, expression: "* * * * *", time_zone: Pacific Standard Time}""")
    assert created["next_scheduled"]["action"] == "stop"
    # Not waiting for Running first: an instance created just before a minute boundary may be
    # stopped by the schedule between two polls, so Running is never seen.
    stopped = wait_state(ws, "ci", "Stopped", timeout=105)  # start, then the next minute boundary
    assert "stopped by schedule 0" in stopped["power_reason"]


def test_instance_example_is_valid(ws: Workspace) -> None:
    created = ws.json("compute", "create", "-f", REPO / "examples" / "instances" / "instance.yml",
                      "--set", f"size={SMALL}")
    assert created["type"] == "computeinstance" and created["schedules"]["compute_start_stop"]
    assert created["next_scheduled"]["action"] in ("start", "stop")


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # SQLite keeps UTC without a zone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone for our purpose
        return fh.read().split()[2] != "Z"
