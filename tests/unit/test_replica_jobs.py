"""A replica's job body: a no-code MLflow deployment without `environment` gets the model's own
(its conda.yaml, read from the model's snapshot or, for --local, from its folder)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cible.runfiles import blob_path
from cible.server.services.blobs import manifest_bytes
from cible.server.services.replica_jobs import ModelSource, replica_job

CONDA = "name: mlflow-env\ndependencies:\n  - python=3.11\n  - pip:\n    - mlflow\n    - scikit-learn\n"
SPEC = {"name": "blue", "instance_type": "Standard_DS1_v2"}


def put(blob_root: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = blob_path(blob_root, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def snapshot_with(blob_root: Path, files: dict[str, str]) -> str:
    entries = {rel: {"sha256": put(blob_root, text.encode()), "size": len(text), "mode": 0o644}
               for rel, text in files.items()}
    return put(blob_root, manifest_bytes(entries))


def test_a_no_code_mlflow_deployment_gets_the_models_conda_environment(tmp_path: Path):
    snapshot = snapshot_with(tmp_path, {"credit/MLmodel": "flavors: {}\n", "credit/conda.yaml": CONDA})
    model = ModelSource(path="azureml:credit:1", basename="credit", mlflow=True,
                        stored=f"cible://snapshots/{snapshot}/credit")
    body = replica_job(SPEC, endpoint="my-ep", endpoint_compute=None, local=False, port=5000, model=model,
                       blob_root=tmp_path)
    assert body["environment"]["conda_file"]["dependencies"][1] == {"pip": ["mlflow", "scikit-learn"]}
    assert "--mlflow-model" in body["command"]


def test_a_local_model_folder_is_read_in_place_and_a_model_without_conda_yaml_runs_on_the_host(tmp_path: Path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "conda.yaml").write_text(CONDA)
    local = ModelSource(path=str(folder), basename="model", mlflow=True, stored=str(folder))
    body = replica_job(SPEC, endpoint="my-ep", endpoint_compute=None, local=True, port=5000, model=local,
                       blob_root=tmp_path)
    assert body["environment"]["conda_file"]["name"] == "mlflow-env"
    (folder / "conda.yaml").unlink()
    body = replica_job(SPEC, endpoint="my-ep", endpoint_compute=None, local=True, port=5000, model=local,
                       blob_root=tmp_path)
    assert "environment" not in body
    named = replica_job({**SPEC, "environment": "azureml:env:1"}, endpoint="my-ep", endpoint_compute=None,
                        local=True, port=5000, model=local, blob_root=tmp_path)
    assert named["environment"] == "azureml:env:1"  # the deployment's own environment wins
    json.dumps(body)
