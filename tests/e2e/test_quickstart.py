"""The README's main command (`cible quickstart` trains, tracks and registers a model), and its "Use" section."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
from e2e_support import REPO, Workspace


def _mlflow_children(ws: Workspace) -> list[psutil.Process]:
    server = psutil.Process(ws.server_info()["pid"])
    return [p for p in server.children() if "cible.server.tracking" in " ".join(p.cmdline())]


def test_quickstart_trains_tracks_and_registers_a_model(tmp_path: Path):
    ws = Workspace(tmp_path / "ws", tracking=True)
    try:
        ws.cible("compute", "list")  # starts the workspace's server
        assert _mlflow_children(ws) == []  # an idle workspace does not carry MLflow: it starts with the first job
        run = ws.cible("quickstart", timeout=900)
        assert "Status: Completed" in run.stdout, run.stdout + run.stderr
        assert "accuracy" in run.stdout  # the training script's own output, streamed
        assert "[cible] inline environment:" in run.stdout  # the environment build or reuse, in the log
        job_name = json.loads(ws.cible("job", "list", "-r", "1", "-o", "json").stdout)[0]["name"]
        job = json.loads(ws.cible("job", "show", "-n", job_name, "-o", "json").stdout)
        assert job["status"] == "Completed" and job["experiment_name"] == "quickstart"
        assert set(job["metrics"]) == {"accuracy", "f1_macro"} and job["params"] == {"C": "1.0"}
        model = json.loads(ws.cible("model", "show", "-n", "iris-classifier", "-o", "json").stdout)
        assert model["type"] == "mlflow_model"
        assert model["path"].endswith(f"azureml/{job_name}/model")
        ws.cible("job", "download", "-n", job_name, "--output-name", "model", "-p", tmp_path / "dl")
        assert (tmp_path / "dl" / "named-outputs" / "model" / "MLmodel").is_file()
        assert len(_mlflow_children(ws)) == 1
    finally:
        ws.stop()


def _readme_block(language: str) -> str:
    """The first `language` code block of the README's "Use" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    use = text[text.index("\n## Use\n"):]
    start = use.index(f"```{language}\n") + len(language) + 4
    return use[start:use.index("```", start)]


def test_the_readme_use_section_runs_as_written(tmp_path: Path):
    """What a new user types after the first command, from the repository's root, unchanged."""
    ws = Workspace(tmp_path / "ws", tracking=True)
    root = tmp_path / "clone"  # only what the commands read: the examples and the quickstart's files
    shutil.copytree(REPO / "examples", root / "examples")
    shutil.copytree(REPO / "src" / "cible" / "quickstart", root / "src" / "cible" / "quickstart")
    env = {**ws.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    try:
        for language, command in (("bash", ["bash", "-euo", "pipefail", "-c"]), ("python", [sys.executable, "-c"])):
            block = _readme_block(language)
            proc = subprocess.run([*command, block], cwd=root, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"README's {language} block failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert (root / "models" / "clf" / "model" / "MLmodel").is_file()
        assert (root / "out" / "named-outputs" / "model" / "MLmodel").is_file()
        assert ws.job("my-run")["display_name"] == "baseline"
    finally:
        ws.stop()
