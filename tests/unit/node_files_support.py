"""A workspace with a cluster job placed on node n1, for the tests of the files a node that does not
share the workspace fetches and sends (routes: tests/unit/test_api_node_files.py; the agent's side:
test_agent_transfer.py, test_agent_localize.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api_support import api_client, assert_envelope, upload  # noqa: F401 (assert_envelope: for the tests)
from fastapi.testclient import TestClient

from cible.core.models.records import ClusterHandle
from cible.server.clusters.runs import node_plan
from cible.server.store.rows import JobRow
from cible.testing import serve_asgi
from cible.workspace import WorkspacePaths

CLUSTER = {"type": "amlcompute", "size": "Standard_DS1_v2", "min_instances": 0, "max_instances": 2,
           "idle_time_before_scale_down": 120}
DATASTORE = "azureml://datastores/workspaceblobstore/paths"
CODE = {"train.py": b"print('train')\n", "lib/util.py": b"X = 1\n", "lib/__init__.py": b""}  # an empty file too
SNAPSHOT_INPUT = {"d/1.txt": b"one", "d/2.txt": b"two", "other.txt": b"not under d"}
DATA = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 40}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



@dataclass
class World:
    api: TestClient
    paths: WorkspacePaths
    code: str  # the code snapshot's id
    snapshot: str  # the snapshot input's id

    def token(self, node_id: str) -> str:
        return self.api.app.state.tokens.node(node_id)

    def as_node(self, node_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(node_id)}"}

    def url(self, rel: str, node_id: str = "n1", job: str = "j1") -> str:
        return f"/api/v1/agent/nodes/{node_id}/runs/{job}/{rel}"

    def get(self, rel: str, *, node_id: str = "n1", job: str = "j1", attempt: int | None = 1,
            headers: dict[str, str] | None = None):  # noqa: ANN201
        params = {} if attempt is None else {"attempt": attempt}
        return self.api.get(self.url(rel, node_id, job), params=params,
                            headers={**self.as_node(node_id), **(headers or {})})

    def put(self, rel: str, data: bytes, *, offset: int = 0, node_id: str = "n1", job: str = "j1", attempt: int = 1):  # noqa: ANN201
        return self.api.put(self.url(rel, node_id, job), params={"attempt": attempt, "offset": offset},
                            content=data, headers=self.as_node(node_id))

    def post(self, rel: str, body: Any, *, node_id: str = "n1", job: str = "j1", attempt: int = 1):  # noqa: ANN201
        return self.api.post(self.url(rel, node_id, job), params={"attempt": attempt}, json=body,
                             headers=self.as_node(node_id))

    def plan(self, job: str = "j1") -> dict[str, Any]:
        with self.api.app.state.store.session() as session:
            return dict(session.get(JobRow, job).run.plan)

    def node_plan(self, job: str = "j1", node_rank: int = 0) -> dict[str, Any]:
        """The plan n1's agent gets for the job, as a node that does not share the workspace."""
        with self.api.app.state.store.session() as session:
            row = session.get(JobRow, job)
            return node_plan(row.run.plan, row.run.handle, node_rank, self.paths, "run-token", shares_workspace=False)

    def submit(self, name: str, body: dict[str, Any]) -> None:
        response = self.api.put(f"/api/v1/jobs/{name}", json=body)
        assert response.status_code == 200, response.text

    def place(self, name: str, nodes: list[str], attempt: int = 1) -> None:
        handle = ClusterHandle(job_name=name, compute="cpu-cluster", attempt=attempt, nodes=nodes,
                               node_addrs=["127.0.0.1"] * len(nodes), master_port=12345)
        with self.api.app.state.store.session() as session:
            row = session.get(JobRow, name)
            row.run = row.run.model_copy(update={"handle": handle})


def job_body(code: str, snapshot: str, **extra: Any) -> dict[str, Any]:
    return {
        "command": "python train.py ${{inputs.data}} ${{inputs.one}} ${{inputs.snap}} ${{inputs.lr}} "
                   "${{outputs.model}} ${{outputs.up}}",
        "code": code, "compute": "azureml:cpu-cluster",
        "inputs": {"data": {"type": "uri_folder", "path": f"{DATASTORE}/data"},
                   "one": {"type": "uri_file", "path": f"{DATASTORE}/single.csv"},
                   "snap": {"type": "uri_folder", "path": f"{snapshot}/d"},
                   "direct": {"type": "uri_folder", "path": f"{DATASTORE}/data", "mode": "direct"},
                   "lr": 0.1},
        "outputs": {"model": {"type": "uri_folder"}, "up": {"type": "uri_folder", "mode": "upload"}, "artifacts": None},
        **extra,
    }


@contextmanager
def node_files_world(db_url: str, tmp_path: Path, **settings: Any) -> Iterator[World]:
    """Job j1 (code, a datastore folder and file, a snapshot input, a literal; outputs model, up (upload
    mode) and the default artifacts) placed on node n1, attempt 1; job j2 on node n2."""
    with api_client(db_url, tmp_path, **settings) as api:
        assert api.put("/api/v1/computes/cpu-cluster", json=CLUSTER).status_code == 200
        paths = api.app.state.settings.paths
        datastore = paths.datastore()
        for rel, data in DATA.items():
            (datastore / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            (datastore / "data" / rel).write_bytes(data)
        (datastore / "single.csv").write_bytes(b"x,y\n1,2\n")
        code, snapshot = upload(api, CODE), upload(api, SNAPSHOT_INPUT)
        world = World(api, paths, code.removeprefix("cible://snapshots/"), snapshot.removeprefix("cible://snapshots/"))
        world.submit("j1", job_body(code, snapshot))
        world.place("j1", ["n1"])
        world.submit("j2", job_body(code, snapshot))
        world.place("j2", ["n2"])
        yield world


@contextmanager
def served_world(tmp_path: Path) -> Iterator[tuple[World, str]]:
    """A node-files world served by a real HTTP server on 127.0.0.1 (for the agent's transfer code)."""
    with node_files_world(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path) as world, serve_asgi(world.api.app) as url:
        yield world, url
