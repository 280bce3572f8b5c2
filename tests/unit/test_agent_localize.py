"""localize: a node plan made by the server (job_plans + node_plan) rewritten for a node that does not
share the workspace folder, and the steps that move its files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from node_files_support import World, node_files_world

import cible.agent.localize as localize_module
from cible.agent.localize import AFTER, BEFORE, DOWNLOAD, SNAPSHOT, UPLOAD, Step, localize, run_dir_of

NODE_ROOT = Path("/remote/agent/nodes/n1")
RUN_DIR = NODE_ROOT / "runs" / "j1.1"


@pytest.fixture
def world(tmp_path) -> Iterator[World]:  # noqa: ANN001
    with node_files_world(f"sqlite:///{tmp_path / 'cible.db'}", tmp_path) as made:
        yield made


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(key path, string) of every string in a plan."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def test_no_path_of_the_servers_workspace_is_left(world: World, monkeypatch: pytest.MonkeyPatch):
    plan = world.node_plan()
    home = str(world.paths.home)
    assert {key for key, text in strings(plan) if home in text} > {"sandbox.hide"}  # the server's paths, before
    monkeypatch.setattr(localize_module.os, "access", lambda path, mode: False)  # another machine, another user
    localized, _ = localize(plan, NODE_ROOT)
    assert {key for key, text in strings(localized) if home in text} == set()
    assert "/root/.cache" not in json.dumps(localized)
    # What the command may not see is the host's node folders (other runs, the agent's files).
    assert localized["sandbox"] == {"hide": str(NODE_ROOT.parent), "readable": []}


def test_a_workspace_this_node_can_read_stays_hidden_from_the_job(world: World):
    """A node whose user can read the server's workspace (a Slurm cluster used with the server
    machine's own commands runs jobs as the server's user): the workspace is what the job may not see."""
    plan = world.node_plan()
    localized, _ = localize(plan, NODE_ROOT)
    assert localized["sandbox"] == {"hide": str(world.paths.home), "readable": []}


def test_each_path_goes_to_the_nodes_own_folders(world: World):
    plan = world.node_plan()
    localized, _ = localize(plan, NODE_ROOT)
    assert localized["blob_root"] == str(NODE_ROOT / "blobs")
    assert localized["env_cache"] == str(NODE_ROOT / "envs")
    assert localized["resume_dir"] == str(RUN_DIR / "checkpoint")
    inputs = localized["inputs"]
    assert inputs["data"]["source"] == {"local_path": str(RUN_DIR / "inputs-src" / "data" / "data")}
    assert inputs["one"]["source"] == {"local_path": str(RUN_DIR / "inputs-src" / "one" / "single.csv")}
    assert inputs["snap"] == plan["inputs"]["snap"]  # a snapshot: read from the node's blob cache
    assert inputs["lr"] == plan["inputs"]["lr"]
    outputs = localized["outputs"]
    for name in ("model", "up", "artifacts"):
        assert outputs[name]["local_path"] == str(RUN_DIR / "outputs-stage" / name)
        assert {k: v for k, v in outputs[name].items() if k != "local_path"} == \
            {k: v for k, v in plan["outputs"][name].items() if k != "local_path"}
    # What is not a path is as it was.
    assert set(localized) == set(plan)
    unchanged = {k for k in plan if plan[k] == localized[k]}
    assert unchanged == set(plan) - {"blob_root", "env_cache", "resume_dir", "inputs", "outputs", "sandbox"}
    assert localized["transfer"] == "http"


def test_the_steps_say_what_to_fetch_before_and_send_after(world: World):
    plan = world.node_plan()
    _, steps = localize(plan, NODE_ROOT)
    blobs = NODE_ROOT / "blobs"
    assert steps == [
        Step(BEFORE, SNAPSHOT, "blobs", blobs, "code", snapshot=world.code),
        Step(BEFORE, DOWNLOAD, "inputs/data", RUN_DIR / "inputs-src" / "data" / "data", "input 'data'"),
        Step(BEFORE, DOWNLOAD, "inputs/one", RUN_DIR / "inputs-src" / "one" / "single.csv", "input 'one'"),
        Step(BEFORE, SNAPSHOT, "blobs", blobs, "input 'snap'", snapshot=world.snapshot, subpath="d"),
        # `direct`: handed its URI, its files are not fetched
        Step(BEFORE, DOWNLOAD, "resume", RUN_DIR / "checkpoint", "the resume folder"),
        Step(AFTER, UPLOAD, "outputs/model", RUN_DIR / "outputs-stage" / "model", "output 'model'"),
        Step(AFTER, UPLOAD, "outputs/up", RUN_DIR / "outputs-stage" / "up", "output 'up'"),
        Step(AFTER, UPLOAD, "outputs/artifacts", RUN_DIR / "outputs-stage" / "artifacts", "output 'artifacts'"),
        Step(AFTER, UPLOAD, "resume", RUN_DIR / "checkpoint", "the resume folder", periodic=True),
    ]


def test_only_node_rank_0_sends_the_resume_folder(world: World):
    _, steps = localize(world.node_plan(node_rank=1), NODE_ROOT)
    resume = [s for s in steps if s.route == "resume"]
    assert [(s.phase, s.action) for s in resume] == [(BEFORE, DOWNLOAD)]  # every node starts from it


def test_the_given_plan_is_left_as_it_was(world: World):
    plan = world.node_plan()
    before = json.dumps(plan, sort_keys=True)
    localize(plan, NODE_ROOT, server_url="http://127.0.0.1:9")
    assert json.dumps(plan, sort_keys=True) == before


def test_the_run_dir_is_the_agents_unless_given():
    plan = {"job_name": "j", "attempt": 3, "resume_dir": "/srv/ws/runs/j/checkpoint"}
    assert run_dir_of(NODE_ROOT, plan) == NODE_ROOT / "runs" / "j.3"
    assert localize(plan, NODE_ROOT)[0]["resume_dir"] == str(NODE_ROOT / "runs" / "j.3" / "checkpoint")
    assert localize(plan, NODE_ROOT, run_dir=Path("/x"))[0]["resume_dir"] == "/x/checkpoint"


def test_the_servers_urls_become_the_one_the_node_reaches(world: World):
    tracking = {"uri": "http://127.0.0.1:8765/mlflow", "token": "t", "experiment_id": "1"}
    plan = {**world.node_plan(), "tracking": tracking, "api_url": "http://127.0.0.1:8765"}
    localized, _ = localize(plan, NODE_ROOT, server_url="http://127.0.0.1:40123/")
    assert localized["tracking"] == {"uri": "http://127.0.0.1:40123/mlflow", "token": "t", "experiment_id": "1"}
    assert localized["api_url"] == "http://127.0.0.1:40123"
    assert localize(plan, NODE_ROOT)[0]["tracking"]["uri"] == "http://127.0.0.1:8765/mlflow"  # no URL given: kept


def test_a_plan_with_no_code_inputs_or_outputs_has_only_the_resume_steps():
    plan = {"job_name": "j", "attempt": 1, "node_rank": 0, "code": None, "inputs": {}, "outputs": {},
            "blob_root": "/srv/blobs", "resume_dir": "/srv/ws/runs/j/checkpoint"}
    localized, steps = localize(plan, NODE_ROOT)
    assert [(s.phase, s.action, s.route) for s in steps] == [(BEFORE, DOWNLOAD, "resume"), (AFTER, UPLOAD, "resume")]
    assert localized["blob_root"] == str(NODE_ROOT / "blobs") and "env_cache" not in localized


def test_localize_is_standard_library_only():
    import ast

    import cible.agent.localize as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "copy", "dataclasses", "os", "pathlib", "typing", "urllib"}
