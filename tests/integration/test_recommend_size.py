"""`recommend-size` end to end against a real server: a replica (a real scoring-server process on a
node of the local provider) whose init() holds 150 MiB is loaded with real HTTP requests, its
process tree's memory is sampled, and the answer names a catalog size with 150 % of the peak
and the replicas for a target requests/s. Its own workspace and server for the module.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from integration_support import served_workspace, wait_until

from cible import MLClient
from cible.core.catalog import get_size
from cible.core.errors import ConflictError, InvalidRequestError

DEPLOY_TIMEOUT_S = 120
HELD_MB = 150
TARGET_RPS = 1000.0
# init() waits for a gate file (so the test can see the deployment before any replica is ready), then
# holds 150 MiB with every page written (bytes * n fills them: resident, not lazily mapped zeros).
SCORE_PY = textwrap.dedent(
    f"""
    import json, os, time

    HELD = None

    def init():
        global HELD
        deadline = time.monotonic() + 120
        while not os.path.exists(os.environ["GATE"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        HELD = b"\\x01" * ({HELD_MB} << 20)

    def run(raw_data):
        return {{"rows": len(json.loads(raw_data)["data"]), "held_mb": len(HELD) >> 20}}
    """
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with served_workspace(tmp_path_factory.mktemp("ws")) as home:
        yield home


@pytest.fixture(scope="module")
def ml(home: Path) -> Any:
    client = MLClient(home=home)
    yield client
    client.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "src").mkdir()
    (root / "src" / "score.py").write_text(SCORE_PY)
    (root / "request.json").write_text(json.dumps({"data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}))
    return root


def deployment(project: Path, name: str) -> dict[str, Any]:
    return {"name": name, "endpoint_name": "sizing",
            "code_configuration": {"code": str(project / "src"), "scoring_script": "score.py"},
            # An Azure ML base image: run on this machine's Python, nothing to build.
            "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"},
            "instance_type": "Standard_DS1_v2", "instance_count": 1,
            "environment_variables": {"GATE": str(project / "gate")},
            "readiness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 60},
            "liveness_probe": {"initial_delay": 1, "period": 1, "failure_threshold": 60}}


def test_a_deployment_without_a_ready_replica_is_told_to_wait(ml: MLClient, project: Path):
    ml.online_endpoints.begin_create_or_update({"name": "sizing", "auth_mode": "key"}).result()
    ml.online_deployments.begin_create_or_update(deployment(project, "big"), all_traffic=True)  # init() waits
    with pytest.raises(ConflictError) as refused:
        ml.online_deployments.recommend_size("big", "sizing", request_file=project / "request.json", duration_s=1)
    assert "has no Ready replica to measure yet; wait until it has one" in str(refused.value)


def test_the_recommended_size_has_150_percent_of_the_measured_peak(ml: MLClient, project: Path):
    (project / "gate").touch()
    assert wait_until(lambda: ml.online_deployments.get("big", "sizing")["provisioning_state"] == "Succeeded",
                      timeout=DEPLOY_TIMEOUT_S)
    answer = ml.online_deployments.recommend_size("big", "sizing", request_file=project / "request.json",
                                                  duration_s=2, concurrency=4, target_rps=TARGET_RPS)
    assert answer["peak_memory_bytes"] >= HELD_MB << 20
    assert answer["peak_memory_mb"] >= HELD_MB
    size = get_size(answer["recommended_instance_type"])
    assert size.memory_gb == answer["memory_gb"]
    assert size.memory_gb * (1 << 30) >= 1.5 * answer["peak_memory_bytes"]
    assert size.gpus == 0 and not size.isolated
    assert answer["errors"] == 0 and answer["requests"] > 0
    assert answer["rps"] > 0 and 0 < answer["p50_ms"] <= answer["p99_ms"]
    assert answer["instance_count"] == math.ceil(TARGET_RPS / answer["rps"])
    assert answer["current_instance_type"] == "Standard_DS1_v2"
    assert "150 % of the peak memory" in answer["explanation"]
    assert f"ceil({TARGET_RPS:g} / {answer['rps']:g})" in answer["explanation"]


def test_a_request_that_always_fails_is_refused_with_the_replicas_answer(ml: MLClient):
    with pytest.raises(InvalidRequestError) as refused:
        ml.online_deployments.recommend_size("big", "sizing", request='{"not": "data"}', duration_s=1)
    message = str(refused.value)
    assert "every one of the" in message and "status 500" in message


def test_the_cli_prints_the_recommendation_as_json(home: Path, project: Path):
    done = subprocess.run(
        [sys.executable, "-m", "cible", "online-deployment", "recommend-size", "-n", "big", "-e", "sizing",
         "--request-file", str(project / "request.json"), "--duration", "1", "--concurrency", "2",
         "--target-rps", "50", "-o", "json"],
        env={**os.environ, "CIBLE_HOME": str(home)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["peak_memory_mb"] >= HELD_MB
    assert answer["instance_count"] == math.ceil(50 / answer["rps"])
    assert answer["concurrency"] == 2
