"""What a batch job's launcher gives its runner: only the cible package on the path, the server's API URL and
the job's run token (added when a launcher is handed its plan, never stored), its node rank and attempt."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cible.launch.launcher import Launcher
from cible.launch.tracking import with_run_token


def launcher(tmp_path: Path, plan: dict) -> Launcher:
    (tmp_path / "plan.json").write_text(json.dumps({"job_name": "j", "experiment_name": "e", **plan}))
    return Launcher(tmp_path)


def test_a_batch_plan_gets_the_api_and_its_token(tmp_path: Path) -> None:
    stored = {"batch": {"mini_batch_size": 2}, "api_url": "http://127.0.0.1:9", "node_rank": 1, "attempt": 2}
    handed = with_run_token(stored, "cible-job.x.y.z")
    assert "api_token" not in stored and handed["api_token"] == "cible-job.x.y.z"
    env = launcher(tmp_path, handed)._base_env(Path("/usr/bin"), is_venv=False)
    assert (env["CIBLE_API_URL"], env["CIBLE_JOB_TOKEN"]) == ("http://127.0.0.1:9", "cible-job.x.y.z")
    assert (env["CIBLE_NODE_RANK"], env["CIBLE_JOB_ATTEMPT"]) == ("1", "2")
    cible_only = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert sorted(p.name for p in cible_only.iterdir()) == ["cible"]


def test_other_plans_get_no_api_token(tmp_path: Path) -> None:
    assert "api_token" not in with_run_token({"tracking": {"uri": "u"}}, "t")
    env = launcher(tmp_path, {})._base_env(Path("/usr/bin"), is_venv=False)
    assert "CIBLE_JOB_TOKEN" not in env and "CIBLE_API_URL" not in env
