"""A job's environment -> the launch plan's environment block."""

from __future__ import annotations

import json

import pytest

from cible.core.environments import classify_image, environment_key, plan_environment
from cible.core.errors import InvalidSpecError

CONDA = {"name": "x", "channels": ["conda-forge"], "dependencies": ["python=3.10", "numpy=1.26", "mkl", {"pip": ["six"]}]}


@pytest.mark.parametrize(
    "image",
    [None, "", "python", "python:3.10", "python:3.11-slim", "library/python:latest", "docker.io/python",
     "docker.io/library/python:3.10", "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04",
     "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest", "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04",
     "mcr.microsoft.com/azureml/openmpi5.0-cuda12.4-ubuntu22.04", "mcr.microsoft.com/azureml/minimal-py312-inference:latest",
     "mcr.microsoft.com/azureml/curated/no-such-environment:latest"],
)
def test_host_images_without_conda_file(image):
    plan = plan_environment({"image": image})
    if not image:
        assert plan == {"kind": "host", "label": "inline environment"}
        return
    assert {k: v for k, v in plan.items() if k != "notes"} == {"kind": "host", "label": "inline environment"}
    assert len(plan["notes"]) == 1 and image in plan["notes"][0] and "this machine's Python" in plan["notes"][0]


def test_none_is_host():
    assert plan_environment(None)["kind"] == "host"


@pytest.mark.parametrize(
    "image", ["myacr.azurecr.io/team/img:1", "registry.contoso.com/ml/train:2", "localhost:5000/img"],
)
def test_custom_images_need_a_container(image):  # images of private registries: public ones run on the host
    assert classify_image(image)[0] == "custom"
    plan = plan_environment({"image": image, "conda_file": CONDA})
    assert plan["kind"] == "container"
    assert image in plan["reason"] and "container engine" in plan["reason"] and "conda_file" in plan["reason"]


def test_build_context_needs_a_container():
    plan = plan_environment({"build": {"path": "docker-context", "dockerfile_path": "Dockerfile"}, "name": "e", "version": "2"})
    assert plan["kind"] == "container" and plan["label"] == "e:2"
    assert "build.path: docker-context" in plan["reason"] and "docker or podman" in plan["reason"]


def test_windows_needs_a_container():
    assert plan_environment({"image": "python", "os_type": "windows"})["kind"] == "container"


def test_inline_conda_file_is_a_venv():
    plan = plan_environment({"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "conda_file": CONDA})
    assert plan["kind"] == "venv"
    assert plan["python"] == "3.10"
    assert plan["requirements"] == ["numpy==1.26.*", "six"]
    assert plan["conda_only"] == ["mkl"]
    assert plan["label"] == "inline environment"
    assert len(plan["key"]) == 64
    json.dumps(plan)  # goes into plan.json as is


def test_named_inline_environment_label():
    plan = plan_environment({"name": "train-env", "version": 3, "image": "python:3.10", "conda_file": CONDA})
    assert plan["label"] == "train-env:3"


def test_conda_file_without_packages_is_host():
    assert plan_environment({"image": "python", "conda_file": {"dependencies": ["pip"]}})["kind"] == "host"


def test_python_pin_alone_is_a_venv():
    plan = plan_environment({"image": "python", "conda_file": {"dependencies": ["python=3.12"]}})
    assert plan["kind"] == "venv" and plan["python"] == "3.12" and plan["requirements"] == []


@pytest.mark.parametrize(
    "ref",
    ["AzureML-sklearn-1.5", "sklearn-1.5", "azureml:AzureML-sklearn-1.5@latest", "azureml:AzureML-sklearn-1.5:1",
     "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"],
)
def test_curated_reference(ref):
    plan = plan_environment(ref)
    assert plan["kind"] == "venv" and plan["label"] == "AzureML-sklearn-1.5:1" and plan["python"] == "3.10"
    assert any(r.startswith("scikit-learn~=1.5") for r in plan["requirements"])
    assert plan["key"] == plan_environment("AzureML-sklearn-1.5")["key"]
    assert plan["notes"] == []


def test_curated_other_version_is_noted():
    plan = plan_environment("azureml:AzureML-sklearn-1.5:25")
    assert plan["key"] == plan_environment("sklearn-1.5")["key"]
    assert "version 25 requested" in plan["notes"][0]


def test_curated_image_brings_its_packages():
    plan = plan_environment({"image": "mcr.microsoft.com/azureml/curated/sklearn-1.5:latest",
                             "conda_file": {"dependencies": [{"pip": ["six"]}]}})
    assert plan["kind"] == "venv" and plan["python"] == "3.10"
    assert "six" in plan["requirements"] and any(r.startswith("scikit-learn") for r in plan["requirements"])


def test_lightgbm_curated():
    plan = plan_environment("azureml:AzureML-lightgbm-3.3@latest")
    assert any(r.startswith("lightgbm") for r in plan["requirements"])


def test_registered_environment_is_planned_like_inline():
    registered = {"name": "my-env", "version": "4", "image": "python:3.10", "conda_file": CONDA}
    plan = plan_environment("azureml:my-env:4", registered=registered)
    assert plan["kind"] == "venv" and plan["label"] == "my-env:4"
    assert plan["key"] == plan_environment({"image": "python", "conda_file": CONDA})["key"]
    no_name = plan_environment("azureml:my-env:4", registered={"image": "python"})
    assert no_name["kind"] == "host" and no_name["label"] == "my-env:4"


def test_registered_errors_name_the_reference():
    with pytest.raises(InvalidSpecError) as info:
        plan_environment("azureml:bad:1", registered={"image": "python", "conda_file": {"dependencies": [7]}})
    assert info.value.message.startswith("environment (azureml:bad:1).conda_file.dependencies[0]:")


def test_unknown_reference_lists_curated_names():
    with pytest.raises(InvalidSpecError) as info:
        plan_environment("azureml:my-env:1")
    msg = info.value.message
    assert "'azureml:my-env:1'" in msg and "AzureML-sklearn-1.5" in msg and "AzureML-lightgbm-3.3" in msg


def test_malformed_inline_conda_file():
    with pytest.raises(InvalidSpecError) as info:
        plan_environment({"image": "python", "conda_file": {"dependencies": ["numpy", "scipy", {"pip": [None]}]}})
    assert info.value.message.startswith("environment.conda_file.dependencies[2].pip[0]:")
    assert info.value.details == {"field": "environment.conda_file.dependencies[2].pip[0]"}


def test_bad_env_type():
    with pytest.raises(InvalidSpecError):
        plan_environment(42)  # type: ignore[arg-type]


# -- the cache key ---------------------------------------------------------------------------------------
def test_key_is_stable_and_order_free():
    a = plan_environment({"image": "python", "conda_file": {"dependencies": ["python=3.10", {"pip": ["six", "tomli"]}]}})
    b = plan_environment({"image": "python:3.11", "name": "other", "version": "9",
                          "conda_file": {"dependencies": ["python=3.10", {"pip": ["tomli", "six", "six"]}]}})
    assert a["key"] == b["key"]  # the label, image tag and pip-list order do not change what is built
    assert a["requirements"] == ["six", "tomli"]
    assert a["key"] == environment_key("3.10", ["tomli", "six"])
    # Pinned: a change of the key's recipe rebuilds every cached environment (bump KEY_VERSION on purpose).
    assert a["key"] == "bb672ac4f5ebefed777c86311f46d40c6bce290edbced61ea04f15ec75f1395b"


def test_key_changes_with_inputs():
    base = environment_key("3.10", ["six"])
    assert environment_key("3.11", ["six"]) != base
    assert environment_key(None, ["six"]) != base
    assert environment_key("3.10", ["six==1.16.0"]) != base
    assert environment_key("3.10", ["six", "tomli"]) != base


def test_key_ignores_conda_only_and_notes():
    a = plan_environment({"image": "python", "conda_file": {"dependencies": ["numpy", "mkl"]}})
    b = plan_environment({"image": "python", "conda_file": {"dependencies": ["conda-forge::numpy"]}})
    assert a["key"] == b["key"]
