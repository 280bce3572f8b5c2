"""What an instance's agent reports: open sessions, disk use, and when it stops itself alone."""

from __future__ import annotations

import os
import subprocess
import time

from cible.agent.presence import Presence, open_sessions, session_file


def test_a_session_counts_while_its_process_runs_and_its_file_goes_after(tmp_path):
    shell = subprocess.Popen(["sleep", "30"])
    try:
        marker = session_file(tmp_path, "terminal", shell.pid)
        marker.parent.mkdir(parents=True)
        marker.write_text("ci")
        assert open_sessions(tmp_path) == [f"terminal (pid {shell.pid})"]
    finally:
        shell.kill()
        shell.wait()
    assert open_sessions(tmp_path) == []
    assert not marker.exists()  # a stale session file is cleaned up


def test_disk_use_counts_the_node_and_its_home_against_the_os_disk(tmp_path):
    root, home = tmp_path / "node", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    (home / "data.bin").write_bytes(b"x" * 1_000_000)
    disk = Presence(root, home, disk_gb=0.001, idle_shutdown_s=None).report(busy=False)["disk"]
    assert disk["size_gb"] == 0.001 and disk["used_percent"] > 90


def test_cut_off_it_stops_alone_only_once_idle_past_its_idle_time_or_the_servers_later_word(tmp_path):
    presence = Presence(tmp_path, None, None, idle_shutdown_s=60)
    assert presence.should_stop_alone(busy=False) is None  # just started: idle for ~0 s
    presence.last_work = time.time() - 61
    assert presence.should_stop_alone(busy=True) is None  # a run keeps it
    assert "idle for 60 s" in presence.should_stop_alone(busy=False)
    later = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 300))
    presence.told({"idle_shutdown_at": later})  # the server said: snoozed, stop in 5 minutes
    assert presence.should_stop_alone(busy=False) is None


def test_without_an_idle_time_it_never_stops_alone(tmp_path):
    presence = Presence(tmp_path, None, None, idle_shutdown_s=None)
    presence.last_work = 0
    assert presence.should_stop_alone(busy=False) is None
    assert os.listdir(tmp_path) == []


def test_a_gpu_at_work_is_activity_and_keeps_an_instance_cut_off_from_stopping(tmp_path):
    presence = Presence(tmp_path, None, None, idle_shutdown_s=60)
    presence.last_work = time.time() - 61
    report = presence.report(busy=False, gpus_busy=["GPU 0 (93 %)"])
    assert report["last_activity_at"] is not None
    assert presence.should_stop_alone(busy=False) is None
