"""A Slurm job's pilot token: its scope (kind pilot, the job, the attempt), and the routes it may
reach: its pilot nodes' heartbeats and its own job's run routes, nothing else."""

from __future__ import annotations

import pytest

from cible.server.auth import _pilot_route, _refusal
from cible.server.tokens import Scope, Tokens

TOKENS = Tokens("the-workspace-token")
JOB = "khaki_boot"


def test_a_pilot_token_is_scoped_to_its_job_submission_and_attempt():
    token = TOKENS.pilot(JOB, 3, "s4lt")
    assert token.startswith("cible-pilot.")
    assert TOKENS.scope_of(token.encode()) == Scope("pilot", JOB, "s4lt-3")
    assert TOKENS.pilot(JOB, 3, "other") != token  # another submission of the same name: another token


def test_each_attempt_and_job_has_its_own_pilot_token():
    assert TOKENS.pilot(JOB, 1) != TOKENS.pilot(JOB, 2)
    assert TOKENS.pilot(JOB, 1) != TOKENS.pilot("other_job", 1)
    assert TOKENS.pilot(JOB, 1) == TOKENS.pilot(JOB, 1)  # recomputed, never stored


def test_a_pilot_token_is_neither_a_run_nor_a_node_token():
    assert TOKENS.pilot(JOB, 1) != TOKENS.job(JOB, "1")
    assert TOKENS.scope_of(TOKENS.job(JOB, "1").encode()).kind == "job"


def test_a_forged_or_foreign_pilot_token_grants_nothing():
    token = TOKENS.pilot(JOB, 1)
    kind, name, _salt, mac = token.split(".")
    assert TOKENS.scope_of(f"{kind}.{name}.2.{mac}".encode()) is None  # another attempt, same MAC
    assert TOKENS.scope_of(token[:-2].encode()) is None
    assert Tokens("another-workspace").scope_of(token.encode()) is None
    assert TOKENS.scope_of(f"{kind}.{name}.{mac}".encode()) is None  # no salt: not a pilot's shape


PILOT = Scope("pilot", JOB, "1")


@pytest.mark.parametrize("path", [
    "/api/v1/agent/nodes/slurm-job-4242-0/heartbeat",
    "/api/v1/agent/nodes/slurm-job-4242-1/heartbeat",
    f"/api/v1/agent/nodes/slurm-job-4242-0/runs/{JOB}/report",
    f"/api/v1/agent/nodes/slurm-job-4242-1/runs/{JOB}/files/user_logs/std_log.txt",
])
def test_a_pilot_may_reach_its_heartbeat_and_its_jobs_run_routes(path):
    assert _pilot_route(JOB, path)
    assert _refusal(PILOT, path) is None


@pytest.mark.parametrize("path", [
    "/api/v1/agent/nodes/slurm-job-4242-0/runs/other_job/report",  # another job's run
    f"/api/v1/agent/nodes/slurm-job-4242-0/runs/{JOB}x/report",  # a job whose name starts with its own
    f"/api/v1/agent/nodes/slurm-job-4242-0/runs/{JOB}",  # no route under it
    "/api/v1/agent/nodes/node-1/heartbeat",  # a cluster node's
    f"/api/v1/agent/nodes/node-1/runs/{JOB}/report",
    "/api/v1/agent/nodes/slurm-job-4242-0",
    "/api/v1/agent/nodes/slurm-job-4242-0/usage",
    "/api/v1/jobs",
    f"/api/v1/jobs/{JOB}",
    f"/api/v1/jobs/{JOB}/batch",
    "/api/v1/computes",
    "/mlflow",
    "/mlflow/api/2.0/mlflow/runs/create",
])
def test_a_pilot_may_reach_nothing_else(path):
    assert not _pilot_route(JOB, path)
    refusal = _refusal(PILOT, path)
    assert refusal is not None and f"Slurm pilots of job '{JOB}'" in refusal


def test_other_scopes_do_not_reach_a_pilots_routes():
    heartbeat = "/api/v1/agent/nodes/slurm-job-4242-0/heartbeat"
    assert _refusal(Scope("node", "node-1"), heartbeat) is not None
    assert _refusal(Scope("job", JOB, "1"), heartbeat) is not None
    assert _refusal(Scope("workspace"), heartbeat) is None
