"""The curated environment table and every spelling of a curated reference."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from cible.core.environments import curated_environments, curated_names, resolve_curated, split_reference


@pytest.mark.parametrize(
    "ref",
    [
        "AzureML-sklearn-1.5",
        "sklearn-1.5",
        "azureml-sklearn-1.5",
        "AZUREML-SKLEARN-1.5",
        "azureml:AzureML-sklearn-1.5@latest",
        "azureml:AzureML-sklearn-1.5:1",
        "azureml:AzureML-sklearn-1.5:25",
        "azureml:AzureML-sklearn-1.5",
        "azureml:sklearn-1.5@latest",
        "AzureML-sklearn-1.5@latest",
        "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
        "azureml://registries/azureml/environments/sklearn-1.5/versions/3",
        "azureml://registries/AzureML/environments/AzureML-sklearn-1.5/versions/3",
        "azureml:/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/environments/AzureML-sklearn-1.5/versions/1",
    ],
)
def test_sklearn_spellings(ref):
    entry = resolve_curated(ref)
    assert entry is not None and entry["name"] == "AzureML-sklearn-1.5"


@pytest.mark.parametrize(
    "ref",
    ["AzureML-lightgbm-3.3", "azureml:AzureML-lightgbm-3.3@latest", "lightgbm-3.3",
     "azureml://registries/azureml/environments/lightgbm-3.3/labels/latest"],
)
def test_lightgbm_spellings(ref):
    assert resolve_curated(ref)["name"] == "AzureML-lightgbm-3.3"


@pytest.mark.parametrize(
    "ref",
    ["my-env", "azureml:my-env:1", "azureml:my-env@latest", "AzureML-sklearn-1.3",
     "azureml://registries/contoso/environments/sklearn-1.5/labels/latest", "", "azureml:", "a/b"],
)
def test_not_curated(ref):
    assert resolve_curated(ref) is None


def test_split_reference():
    assert split_reference("azureml:env:3") == ("env", "3", None)
    assert split_reference("azureml:env@latest") == ("env", None, None)
    assert split_reference("azureml://registries/r/environments/e/versions/2") == ("e", "2", "r")
    assert split_reference("a/b") is None


def test_entries_carry_the_specified_packages():
    sk = resolve_curated("sklearn-1.5")
    assert sk["python"] == "3.10" and sk["version"] == "1" and sk["description"]
    names = {Requirement(r).name.lower() for r in sk["requirements"]}
    for pkg in ("scikit-learn", "pandas", "scipy", "numpy", "joblib", "matplotlib", "mlflow-skinny",
                "azureml-inference-server-http", "psutil", "tqdm", "tensorboard", "debugpy", "ipykernel"):
        assert pkg in names, pkg
    assert not names & {"azureml-core", "azureml-defaults"}
    assert any(r.startswith("scikit-learn~=1.5") for r in sk["requirements"])
    lgb = resolve_curated("AzureML-lightgbm-3.3")
    lgb_names = {Requirement(r).name.lower() for r in lgb["requirements"]}
    assert {"lightgbm", "scikit-learn", "pandas", "numpy", "mlflow-skinny"} <= lgb_names


def test_requirements_are_valid_pep508():
    for entry in curated_environments():
        for line in entry["requirements"]:
            Requirement(line)


def test_resolve_returns_a_copy():
    resolve_curated("sklearn-1.5")["requirements"].append("junk")
    assert "junk" not in resolve_curated("sklearn-1.5")["requirements"]


def test_curated_names_for_messages():
    assert "AzureML-sklearn-1.5 (sklearn-1.5)" in curated_names()
