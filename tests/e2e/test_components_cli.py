"""`cible component create|list|show` against a real server, as `az ml component …`."""

from __future__ import annotations

import json

import pytest
from e2e_support import Workspace, write_yaml

pytestmark = pytest.mark.e2e

COMPONENT = """
    $schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
    name: train_model
    display_name: Train
    type: command
    version: 1
    inputs:
      lr: {type: number, default: 0.1}
    outputs:
      model: {type: uri_folder}
    code: ./src
    environment: azureml:AzureML-sklearn-1.5@latest
    command: python train.py --lr ${{inputs.lr}} --out ${{outputs.model}}
    additional_includes:
      - ../common
"""


def test_register_show_and_list_a_component(workspace: Workspace) -> None:
    cible = workspace
    root = cible.root / "components"
    write_yaml(root, "common/utils.py", "X = 1\n")
    write_yaml(root, "train/src/train.py", "print('train')\n")
    spec = write_yaml(root, "train/train.yml", COMPONENT)

    created = cible.json("component", "create", "-f", spec)
    assert (created["name"], created["version"], created["type"]) == ("train_model", "1", "command")
    assert created["code"].startswith("cible://snapshots/") and "additional_includes" not in created
    assert cible.json("component", "create", "-f", spec)["code"] == created["code"]  # same again: harmless
    # --version and --set version keep the text as typed: 01 is not 1.
    assert cible.json("component", "create", "-f", spec, "-v", "01")["version"] == "01"
    assert cible.json("component", "create", "-f", spec, "--set", "version=02")["version"] == "02"

    shown = cible.json("component", "show", "-n", "train_model", "-v", "1")
    assert shown["display_name"] == "Train" and shown["inputs"]["lr"]["default"] == 0.1
    assert cible.json("component", "show", "-n", "train_model", "-l", "latest")["version"] == "02"
    assert [c["version"] for c in cible.json("component", "list", "-n", "train_model")] == ["02", "01", "1"]
    assert ["train_model"] == [c["name"] for c in cible.json("component", "list")]
    table = cible.cible("component", "list").stdout
    assert "train_model" in table and "command" in table

    write_yaml(root, "common/utils.py", "X = 2\n")  # other code under the same version: refused
    refused = cible.cible("component", "create", "-f", spec, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error:") and "Traceback" not in refused.stderr
    assert "component 'train_model' version 1 already exists with different content" in refused.stderr
    missing = cible.cible("component", "show", "-n", "train_model", "-v", "9", check=False)
    assert missing.returncode == 1 and "versions: 1, 01, 02" in missing.stderr
    assert json.loads(cible.cible("component", "show", "-n", "train_model", "--query", "version", "-o", "json")
                      .stdout) == "02"
