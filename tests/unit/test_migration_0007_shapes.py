"""Migration 0007 turns every shape the previous release stored into a record that loads: rows
written by SQL into a database made by the migrations up to 0006, upgraded, then read as records.
A row that does not convert is logged with its key and left to fail alone, not the upgrade."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from cible.core.errors import UnreadableRecordError
from cible.core.models.records import ClusterHandle, LocalHandle
from cible.server.store.db import MIGRATIONS_DIR, Store, migrate
from cible.server.store.rows import ComputeRow, JobRow, NodeRow

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
AT = "2026-01-01T00:00:00+00:00"  # as the previous release wrote time stamps
PLAN = {"command": "echo hi", "node_count": 1}
OLD_JOBS = {
    "local-running": ("Running", "local", {
        "plan": {**PLAN, "job_name": "local-running"}, "cost_estimate": None,
        "handle": {"runner": "local", "run_dir": "/ws/runs/local-running", "pid": 4242, "create_time": 1767225600.25}}),
    "placed": ("Running", "cpu", {
        "plan": {**PLAN, "job_name": "placed"}, "attempts": 2, "queue_reason": None,
        "handle": {"runner": "cluster", "job_name": "placed", "compute": "cpu", "attempt": 2, "nodes": ["n1"],
                   "node_addrs": ["127.0.0.1"], "master_port": 29500},
        "requeues": [{"attempt": 1, "reason": "node n0 was preempted", "at": AT}]}),
    "queued": ("Queued", "cpu", {
        "plan": {**PLAN, "job_name": "queued"}, "attempts": 1, "handle": None,
        "queue_reason": "waiting for 1 node: 0 idle, 1 starting, max 2",
        "requeues": [{"attempt": 1, "reason": "node n1 was lost", "at": AT}],
        "cost_estimate": {"currency": "USD", "per_hour": 0.1, "max": None}}),
    "newer-runner": ("Running", "local", {"plan": {**PLAN, "job_name": "newer-runner"},
                                          "handle": {"runner": "slurm", "job_id": 7}}),
}
INSTANCE_STATUS = {
    "power": "off", "power_reason": "stop requested by ci-user", "powered_on_at": AT, "ever_ready": True,
    "snoozed_until": AT, "warned_for": None, "idleness": {"idle": True, "stops_at": None},
    "events": [{"at": AT, "kind": "Started", "message": "started"},
               {"at": AT, "kind": "Stopped", "message": "stopped"}],
}
CLUSTER_SPEC = {"name": "cpu", "type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0,
                "max_instances": 2, "target_node_count": 1, "provisioning_errors": None}


def _table(name: str, *columns: tuple[str, sa.types.TypeEngine]) -> sa.Table:
    return sa.table(name, *(sa.column(c, t) for c, t in columns))


def _old_workspace(store: Store) -> None:
    """The schema at 0006, with rows as the previous release wrote them."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")
    json, text, when, num = sa.JSON(), sa.String(), sa.DateTime(timezone=True), sa.Integer()
    jobs = _table("jobs", ("name", text), ("job_type", text), ("display_name", text), ("experiment_name", text),
                  ("status", text), ("compute", text), ("target", text), ("spec", json), ("spec_version", num),
                  ("warnings", json), ("run", json), ("created_at", when), ("updated_at", when))
    computes = _table("computes", ("name", text), ("compute_type", text), ("spec", json), ("spec_version", num),
                      ("provisioning_state", text), ("status", json), ("created_at", when), ("updated_at", when))
    nodes = _table("nodes", ("node_id", text), ("compute", text), ("provider", text), ("state", text),
                   ("job_name", text), ("info", json), ("created_at", when), ("updated_at", when))
    with store.engine.begin() as conn:
        for name, (status, target, run) in OLD_JOBS.items():
            conn.execute(jobs.insert().values(name=name, job_type="command", display_name=name, experiment_name="exp",
                                              status=status, compute=target, target=target, spec={}, spec_version=1,
                                              warnings=[], run=run, created_at=NOW, updated_at=NOW))
        conn.execute(computes.insert().values(name="cpu", compute_type="amlcompute", spec=CLUSTER_SPEC, spec_version=1,
                                              provisioning_state="Succeeded", status={"quota_wait": "no quota"},
                                              created_at=NOW, updated_at=NOW))
        conn.execute(computes.insert().values(name="ci", compute_type="computeinstance", spec_version=1,
                                              spec={"name": "ci", "type": "computeinstance", "size": "Standard_DS1_v2"},
                                              provisioning_state="Succeeded", status=INSTANCE_STATUS,
                                              created_at=NOW, updated_at=NOW))
        conn.execute(nodes.insert().values(node_id="n1", compute="cpu", provider="local", state="running",
                                           job_name="placed", created_at=NOW, updated_at=NOW, info={
                                               "size": "Standard_DS1_v2", "vcpus": 1, "price_per_hour": 0.1,
                                               "usage": {"cpu_percent": 5.0}, "root": "/ws/nodes/n1"}))


def test_the_previous_releases_shapes_load_as_records_after_the_upgrade(db_url, caplog):
    store = Store(db_url)
    try:
        _old_workspace(store)
        with caplog.at_level(logging.WARNING, logger="cible.server.migrations"):
            migrate(store.engine)
        # The one row that does not convert is named, and the upgrade went on.
        [warning] = [r.getMessage() for r in caplog.records if r.name == "cible.server.migrations"]
        assert "jobs.run of job 'newer-runner'" in warning and "handle" in warning

        with store.session() as session:
            local = session.get(JobRow, "local-running").run
            assert local.handle == LocalHandle(run_dir="/ws/runs/local-running", pid=4242, create_time=1767225600.25)

            placed = session.get(JobRow, "placed").run
            assert isinstance(placed.handle, ClusterHandle) and placed.attempts == 2
            assert (placed.handle.attempt, placed.handle.nodes, placed.handle.master_port) == (2, ["n1"], 29500)
            assert [(r.attempt, r.at) for r in placed.requeues] == [(1, NOW)]

            queued = session.get(JobRow, "queued").run
            assert queued.handle is None and queued.queue_reason.startswith("waiting for 1 node")
            assert queued.requeues[0].reason == "node n1 was lost" and queued.cost_estimate["per_hour"] == 0.1

            cpu = session.get(ComputeRow, "cpu")
            assert cpu.observed.target_node_count == 1 and cpu.observed.quota_wait == "no quota"
            assert "target_node_count" not in cpu.spec and cpu.observed.instance is None
            instance = session.get(ComputeRow, "ci").observed.instance
            assert (instance.power, instance.ever_ready, instance.powered_on_at, instance.snoozed_until) == (
                "off", True, NOW, NOW)
            assert [(e.kind, e.at) for e in instance.events] == [("Started", NOW), ("Stopped", NOW)]
            assert instance.idleness == {"idle": True, "stops_at": None}

            info = session.get(NodeRow, "n1").info
            assert (info.size, info.vcpus, info.price_per_hour, info.usage) == (
                "Standard_DS1_v2", 1, 0.1, {"cpu_percent": 5.0})
        with pytest.raises(UnreadableRecordError, match="jobs.run"), store.session() as session:
            session.get(JobRow, "newer-runner")
        with store.session() as session:  # kept as converted, for the job's failure to show
            raw = session.scalar(sa.select(sa.type_coerce(JobRow.run, sa.JSON)).where(JobRow.name == "newer-runner"))
        assert raw["handle"] == {"runner": "slurm", "job_id": 7} and raw["schema_version"] == 1
    finally:
        store.close()
