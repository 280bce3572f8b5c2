"""A real server process on PostgreSQL runs a job end to end (and migrations are idempotent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cible.server.store.db import Store
from cible.testing import kill_nodes, wait_until


def test_migrations_run_twice_without_harm(db_url: str):
    store = Store(db_url)
    store.migrate()
    store.migrate()
    from sqlalchemy import inspect

    assert {"jobs", "job_status_history", "computes", "alembic_version"} <= set(inspect(store.engine).get_table_names())
    store.close()


def test_server_process_runs_a_job_on_this_store(db_url: str, tmp_path: Path):
    home = tmp_path / "ws"
    env = {**os.environ, "CIBLE_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "cible", "server", "--database-url", db_url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        info = wait_until(lambda: (home / "server.json").exists() and json.loads((home / "server.json").read_text()), 60, message="server.json")
        assert info["pid"] == server.pid
        assert "***" in info["database"] or db_url.startswith("sqlite")
        from cible import MLClient, command

        client = MLClient(url=info["url"], token=(home / "token").read_text().strip())
        wait_until(lambda: _healthy(client), 30, message="the server to answer")
        job = client.jobs.create_or_update(command(command="echo on-$STORE", environment_variables={"STORE": "db"}, compute="local"))
        done = client.jobs.wait(job["name"], timeout=60)
        assert done["status"] == "Completed", done
        assert [h["status"] for h in done["status_history"]] == ["NotStarted", "Queued", "Preparing", "Running", "Finalizing", "Completed"]
        log = (home / "runs" / job["name"] / "artifacts" / "user_logs" / "std_log.txt").read_text()
        assert log == "on-db\n"

        # A cluster on this store: a node is started for the job and given back once idle.
        from cible.core.specs.azureml.loader import load_spec_dict

        cluster = load_spec_dict({"name": "cpu", "type": "amlcompute", "size": "Standard_DS1_v2", "max_instances": 1,
                                  "idle_time_before_scale_down": 1}, "compute", source="test").entity
        client.compute.begin_create_or_update(cluster).result()
        job = client.jobs.create_or_update(command(command="echo on-a-node", compute="azureml:cpu"))
        done = client.jobs.wait(job["name"], timeout=90)
        assert done["status"] == "Completed", done
        assert (home / "runs" / job["name"] / "artifacts" / "user_logs" / "std_log.txt").read_text() == "on-a-node\n"
        wait_until(lambda: not client.compute.list_nodes("cpu"), 30, message="the idle node to leave")
    finally:
        server.terminate()
        server.wait(timeout=30)
        kill_nodes(home)
    assert not (home / "server.json").exists()  # a clean stop removes it


def _healthy(client) -> bool:  # noqa: ANN001
    try:
        return bool(client.compute.list())
    except Exception:
        return False
