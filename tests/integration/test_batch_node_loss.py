"""Issue 17, "checked after landing": killing a node mid-run loses no finished results.

A batch job on two nodes of a `local` cluster (a real workspace server in this process, agents, launchers,
node runners, workers); once some mini-batches are done one node's whole process tree is killed with -9.
The cluster requeues the job (attempt 2) on a replacement node; the mini-batches done before the kill must
be kept (not scored again), those the dead attempt held must be redone without counting as a failed try
(max_retries is 0: a lost claim counted as a try would be recorded failed), and the result must hold every
row once, in mini-batch order.
"""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select
from test_batch_runner import BLOCK, ended, output_file, workspace  # noqa: F401 - the fixture

from cible.server.services.jobs import Lineage
from cible.server.store.rows import MiniBatchRow
from cible.testing import wait_until

pytestmark = pytest.mark.timeout(180)

FILES = 14
ROWS = 3  # per file
HELD_FROM = 4  # files from this one on wait for the gate
# Appends each file it scored to a log outside the workspace (so a file scored twice shows).
SLOW_SCORE = """
    import os
    import time

    LOG, GATE, HELD_FROM = {log!r}, {gate!r}, {held_from}

    def init():
        pass

    def run(mini_batch):
        rows = []
        for path in mini_batch:
            name = os.path.basename(path)
            # the first files score at once; the later ones wait for the test's gate, so that the kill
            # lands while both nodes hold a claim, whenever each node started (at most 60 s: never a hang)
            deadline = time.monotonic() + 60
            while int(name[1:3]) >= HELD_FROM and not os.path.exists(GATE) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.1)
            with open(path) as handle:
                values = handle.read().split()[1:]
            rows += [f"{{name}} {{value}}" for value in values]
            with open(LOG, "a") as log:
                log.write(f"{{name}} {{os.environ.get('CIBLE_JOB_ATTEMPT')}}\\n")
        return rows
"""


def submit(ws: Any, tmp: Path, name: str, files: dict[str, str], score: str, instance_count: int,
           **block: Any) -> None:
    """A job as a batch invoke makes it (test_batch_runner's submit, on `instance_count` nodes)."""
    from cible.sdk.job_bodies import upload_local_paths

    app, ml, _ = ws
    code, data = tmp / name / "code", tmp / name / "data"
    for folder, contents in ((code, {"score.py": textwrap.dedent(score)}), (data, files)):
        folder.mkdir(parents=True)
        for rel, text in contents.items():
            (folder / rel).write_text(text)
    body = {"type": "command", "code": str(code), "compute": "azureml:cpu-cluster",
            "command": "python -m cible.serving.batch --input ${{inputs.input_data}} --output ${{outputs.score}} "
                       "--entry-script score.py --app-root .",
            "inputs": {"input_data": {"type": "uri_folder", "path": str(data)}},
            "outputs": {"score": {"type": "uri_folder"}}, "experiment_name": "e", "display_name": "e/d",
            "resources": {"instance_count": instance_count}}
    upload_local_paths(ml._client, body)
    app.state.jobs.create_child(name, body, Lineage(batch_of="e/d", batch={**BLOCK, **block}))


def claim_holders(app: Any, name: str) -> set[str]:
    """The workers holding running mini-batches."""
    with app.state.store.session() as session:
        return set(session.scalars(select(MiniBatchRow.worker).where(MiniBatchRow.job_name == name,
                                                                     MiniBatchRow.state == "running")))


def done_files(app: Any, name: str) -> set[str]:
    """The files of the mini-batches the server has recorded done."""
    with app.state.store.session() as session:
        rows = session.scalars(select(MiniBatchRow).where(MiniBatchRow.job_name == name,
                                                          MiniBatchRow.state == "done")).all()
        return {f for row in rows for f in row.files}


def agent_pid(home: Path, node_id: str) -> int:
    return json.loads((home / "nodes" / node_id / "agent.json").read_text())["pid"]


def kill_node(home: Path, node_id: str) -> list[psutil.Process]:
    """SIGKILL a node's agent and everything under it at once (launcher, node runner, workers: the workers run
    in sessions of their own, so they are found as descendants, not by group); what was killed."""
    root = psutil.Process(agent_pid(home, node_id))
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return procs


@pytest.mark.parametrize("rank", [1, 0], ids=["node-1", "node-0-which-listed-the-input"])
def test_killing_a_node_mid_run_loses_no_finished_results(workspace: Any, tmp_path: Path, rank: int) -> None:  # noqa: F811
    app, ml, home = workspace
    name = f"batch-node-loss-{rank}"
    log, gate = tmp_path / "scored.log", tmp_path / "gate"
    files = {f"f{i:02d}.csv": "x\n" + "".join(f"{i * 100 + r}\n" for r in range(ROWS)) for i in range(FILES)}
    score = SLOW_SCORE.format(log=str(log), gate=str(gate), held_from=HELD_FROM)
    submit(workspace, tmp_path, name, files, score, instance_count=2,
           mini_batch_size=1, max_concurrency_per_instance=1, max_retries=0, timeout=60)

    # Once the first mini-batches are done and both nodes' workers hold claims (waiting at the gate), kill one.
    def scoring() -> dict[str, Any] | None:
        batch = ml.jobs.get(name).get("batch") or {}
        return batch if batch.get("done") == HELD_FROM and len(claim_holders(app, name)) == 2 else None

    before = wait_until(scoring, 120, interval=0.1, message="the first mini-batches done, both nodes scoring")
    assert ml.jobs.get(name)["status"] == "Running"
    nodes = app.state.jobs.run_handle(name)[1].handle.nodes
    assert len(nodes) == 2, nodes
    under_agent = [" ".join(p.cmdline()) for p in psutil.Process(agent_pid(home, nodes[rank])).children(recursive=True)]
    assert any("cible.serving.batch.worker" in c for c in under_agent), under_agent  # the kill reaches the workers
    killed = kill_node(home, nodes[rank])
    kept = done_files(app, name)
    assert kept == {f"f{i:02d}.csv" for i in range(HELD_FROM)}, (kept, before)
    gate.touch()  # the surviving node scores on until the requeue stops it
    psutil.wait_procs(killed, timeout=5)

    job = ended(workspace, name)
    assert job["status"] == "Completed", job.get("error")
    assert job["attempt"] == 2, job.get("requeues")  # the dead node's job was requeued
    batch = job["batch"]
    assert (batch["total"], batch["done"], batch["failed"], batch["failed_files"]) == (FILES, FILES, 0, 0), batch
    assert batch["failed_mini_batches"] == [] and batch["rows"] == FILES * ROWS

    # Every input row once, in mini-batch (file name) order: nothing lost, nothing duplicated.
    expected = [f"f{i:02d}.csv {i * 100 + r}" for i in range(FILES) for r in range(ROWS)]
    output = output_file(workspace, name)
    assert output.read_text().splitlines() == expected
    assert sorted(p.name for p in output.parent.iterdir()) == ["predictions.csv"]  # the parts joined and removed

    # The mini-batches done before the kill were kept: each was scored once, by the first attempt.
    scored = [line.split() for line in log.read_text().splitlines()]
    for file in sorted(kept):
        assert [attempt for f, attempt in scored if f == file] == ["1"], (file, scored)
    assert {f for f, _ in scored} == set(files)
    assert any(attempt == "2" for _, attempt in scored), scored  # the rest was scored by the requeued attempt
