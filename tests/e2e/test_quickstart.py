"""The README's main command: `cible quickstart` trains, tracks and registers a model."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_support import Workspace


def test_quickstart_trains_tracks_and_registers_a_model(tmp_path: Path):
    ws = Workspace(tmp_path / "ws", tracking=True)
    try:
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
    finally:
        ws.stop()
