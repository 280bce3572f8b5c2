"""A job that waits for a slot on `local` says why, and starts when one frees."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from cible.testing import wait_until


def test_a_queued_job_says_why_it_waits(tmp_path: Path, monkeypatch):  # noqa: ANN001
    monkeypatch.setenv("CIBLE_LOCAL_MAX_CONCURRENT", "1")  # read by the server the client starts
    from cible import MLClient, command

    home = tmp_path / "ws"
    flag = tmp_path / "go"
    client = MLClient(home=home)
    try:
        blocker = client.jobs.create_or_update(command(
            command=f"echo waiting; while [ ! -f {flag} ]; do sleep 0.05; done", compute="local"))
        wait_until(lambda: client.jobs.get(blocker.name).status == "Running", 60, message="the first job to run")
        second = client.jobs.create_or_update(command(command="echo second", compute="local"))
        wait_until(lambda: client.jobs.get(second.name).get("queue_reason", "").startswith("position"),
                   30, message="a queue reason")
        shown = client.jobs.get(second.name)
        assert shown.status == "Queued"
        assert shown.queue_reason == "position 1 in the queue of local: waiting for a free slot, 1 of 1 jobs running"
        flag.touch()
        assert client.jobs.wait(second.name, timeout=60).status == "Completed"
        assert "queue_reason" not in client.jobs.get(second.name)
    finally:
        flag.touch()
        pid = json.loads((home / "server.json").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
