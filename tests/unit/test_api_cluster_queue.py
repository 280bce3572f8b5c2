"""`job show`'s queue reason on a cluster whose pass stored only the queue's head (a long queue:
cluster_pass reads max_instances + 1 jobs): a job behind the head counts the jobs ahead of it."""

from __future__ import annotations

import pytest
from api_support import api_client
from fastapi.testclient import TestClient

from cible.core.models.records import ComputeStatus, DecidedQueue
from cible.server.store.rows import ComputeRow

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 1}


@pytest.fixture
def api(migrated_db_url, tmp_path) -> TestClient:  # noqa: ANN001
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def test_a_job_behind_the_stored_head_says_its_counted_position(api: TestClient):
    assert api.put("/api/v1/computes/cpu", json=CLUSTER).status_code == 200
    for k in range(5):
        assert api.put(f"/api/v1/jobs/j{k}", json={"command": "true", "compute": "azureml:cpu"}).status_code == 200
    assert api.post("/api/v1/jobs/j2:cancel").status_code in (200, 202)  # no longer queued: not counted
    with api.app.state.store.session() as session:  # what a pass that read the head (j0, j1) stored
        row = session.get(ComputeRow, "cpu")
        row.observed = ComputeStatus(queue=DecidedQueue(jobs=["j0", "j1"], head="waiting for 1 node: 0 idle, "
                                                        "1 starting, max 1", more=True))

    def reason(name: str) -> str:
        return api.get(f"/api/v1/jobs/{name}").json()["queue_reason"]

    assert reason("j1").startswith("position 2 in the queue of cpu: waiting for the 1 job ahead of it (FIFO)")
    assert reason("j3").startswith("position 3 in the queue of cpu: waiting for the 2 jobs ahead of it (FIFO)")
    assert reason("j4").startswith("position 4 in the queue of cpu: waiting for the 3 jobs ahead of it (FIFO)")
