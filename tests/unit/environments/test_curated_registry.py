"""`cible environment list|show --registry-name azureml`: Azure's curated environments as the `azureml`
registry lists them, with what cible builds each from; read from the package, no server asked."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cible.cli.main import app
from cible.core.environments.curated import registry_entry, registry_listing
from cible.core.errors import InvalidRequestError, NotFoundError


def test_the_listing_names_each_environment_once_by_its_registry_name():
    names = [item["name"] for item in registry_listing()]
    assert names[:2] == ["sklearn-1.5", "lightgbm-3.3"]  # Azure's registry names, not AzureML-…
    assert "acpt-pytorch-<torch>-cuda<cuda>" in names and "Spark-<spark>" in names  # a family, placeholders shown
    assert len(names) == len(set(names))  # two families of one name (two version ranges) are listed once
    assert all("{" not in item["description"] for item in registry_listing())


def test_an_entry_resolves_a_family_member_with_its_packages():
    entry = registry_entry("acpt-pytorch-2.8-cuda12.6")
    assert (entry["curated_name"], entry["cuda"]) == ("AzureML-acpt-pytorch-2.8-cuda12.6", "12.6")
    assert entry["reference"] == "azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/labels/latest"
    assert "torch==2.8.*" in entry["requirements"]
    with pytest.raises(NotFoundError, match=r"'sklearn-9\.9' is not in the azureml registry \(its environments: "
                                            r"sklearn-1\.5, "):
        registry_entry("sklearn-9.9")
    with pytest.raises(InvalidRequestError, match="cible knows one registry, 'azureml'"):
        registry_entry("sklearn-1.5", registry="my-registry")


def test_the_cli_lists_and_shows_them_and_refuses_a_registry_elsewhere():
    runner = CliRunner()
    listed = runner.invoke(app, ["environment", "list", "--registry-name", "azureml", "-o", "json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == registry_listing()
    shown = runner.invoke(app, ["environment", "show", "-n", "sklearn-1.5", "--registry-name", "azureml", "-o", "json"])
    assert shown.exit_code == 0 and json.loads(shown.output)["curated_name"] == "AzureML-sklearn-1.5", shown.output
    unknown = runner.invoke(app, ["environment", "show", "-n", "nope", "--registry-name", "azureml"])
    assert isinstance(unknown.exception, NotFoundError)  # `cible` prints it as `error: …`, exit 1 (cli/main.py)
    elsewhere = runner.invoke(app, ["model", "list", "--registry-name", "azureml"])
    assert elsewhere.exit_code == 2 and "only environments are read from a registry" in elsewhere.output
