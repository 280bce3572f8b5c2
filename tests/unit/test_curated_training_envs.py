"""Azure's curated training environments (PyTorch, TensorFlow, scikit-learn, LightGBM) as data, their
CPU builds on a machine without a GPU, and public images run on this machine's Python.

Planning only: nothing here installs a package (the fake uv below records what it is asked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import api_client
from fastapi.testclient import TestClient
from packaging.requirements import Requirement

from cible.core.environments import (
    classify_image,
    curated_families,
    curated_names,
    environment_key,
    plan_environment,
    resolve_curated,
)
from cible.launch import environments as envs

PYTORCH = "AzureML-acpt-pytorch-2.8-cuda12.6"
PYTORCH_22 = "AzureML-acpt-pytorch-2.2-cuda12.1"
TENSORFLOW = "AzureML-tensorflow-2.16-cuda12"
NO_GPU = "is a CUDA environment (CUDA 12.6); this node has no GPU: running its CPU build"


def requirement(plan_or_build: dict, name: str) -> str:
    return next(r for r in plan_or_build["requirements"] if Requirement(r).name.lower() == name)


# -- every spelling resolves -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/labels/latest", PYTORCH),
        ("azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/versions/12", PYTORCH),
        ("azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6", PYTORCH),
        ("azureml:AzureML-acpt-pytorch-2.8-cuda12.6@latest", PYTORCH),
        ("azureml:AzureML-ACPT-pytorch-2.8-cuda12.6:1", PYTORCH),  # any case; the name is the table's
        ("AzureML-acpt-pytorch-2.8-cuda12.6@latest", PYTORCH),
        ("acpt-pytorch-2.8-cuda12.6", PYTORCH),
        ("azureml://registries/azureml/environments/acpt-pytorch-2.2-cuda12.1/labels/latest", PYTORCH_22),
        ("azureml:AzureML-acpt-pytorch-2.2-cuda12.1@latest", PYTORCH_22),
        ("azureml://registries/azureml/environments/tensorflow-2.16-cuda12/labels/latest", TENSORFLOW),
        ("azureml:AzureML-tensorflow-2.16-cuda12@latest", TENSORFLOW),
        ("AzureML-tensorflow-2.16-cuda12@latest", TENSORFLOW),
        ("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest", "AzureML-sklearn-1.0"),
        ("azureml://registries/azureml/environments/sklearn-1.0/labels/latest", "AzureML-sklearn-1.0"),
        ("azureml:sklearn-1.0@latest", "AzureML-sklearn-1.0"),
        ("azureml://registries/azureml/environments/sklearn-1.1/versions/29", "AzureML-sklearn-1.1"),
        ("azureml:AzureML-sklearn-0.24-ubuntu18.04-py37-cpu@latest", "AzureML-sklearn-0.24"),
        ("azureml:AzureML-lightgbm-3.3@latest", "AzureML-lightgbm-3.3"),
        ("azureml://registries/azureml/environments/lightgbm-3.3/labels/latest", "AzureML-lightgbm-3.3"),
        ("azureml://registries/azureml/environments/sklearn-1.5/labels/latest", "AzureML-sklearn-1.5"),
    ],
)
def test_every_spelling_resolves(ref: str, name: str):
    entry = resolve_curated(ref)
    assert entry is not None and entry["name"] == name


def test_a_family_entry_is_filled_from_the_name():
    torch = resolve_curated("azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/labels/latest")
    assert (torch["python"], torch["cuda"], torch["version"]) == ("3.10", "12.6", "1")
    assert requirement(torch, "torch") == "torch==2.8.*" and "2.8" in torch["description"]
    assert not {"match", "examples", "defaults"} & set(torch)
    old_torch = resolve_curated("azureml:AzureML-acpt-pytorch-2.2-cuda12.1@latest")
    assert requirement(old_torch, "torch") == "torch==2.2.*" and requirement(old_torch, "numpy") == "numpy<2"
    legacy = resolve_curated("azureml:AzureML-pytorch-1.9-ubuntu18.04-py37-cuda11-gpu:26")
    assert (legacy["python"], legacy["cuda"], requirement(legacy, "torch")) == ("3.7", "11", "torch==1.9.*")
    acpt_1 = resolve_curated("azureml://registries/azureml/environments/acpt-pytorch-1.13-cuda11.7/labels/latest")
    assert acpt_1["python"] == "3.8"  # the group's default where the name has no py3X
    tf = resolve_curated("azureml:AzureML-tensorflow-2.16-cuda12@latest")
    assert tf["builds"]["gpu"]["requirements"] == ["tensorflow[and-cuda]==2.16.*"]
    assert tf["builds"]["cpu"]["requirements"] == ["tensorflow==2.16.*"]
    assert tf["variables"] == {"TF_USE_LEGACY_KERAS": "1"} and requirement(tf, "tf-keras") == "tf-keras==2.16.*"
    sk = resolve_curated("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest")
    assert requirement(sk, "scikit-learn") == "scikit-learn~=1.0.0" and "cuda" not in sk


@pytest.mark.parametrize(
    "ref",
    ["acpt-pytorch-2.8", "acpt-pytorch-2.8-cuda12.6-extra", "azureml:AzureML-acpt-pytorch-x-cuda12.6@latest",
     "azureml://registries/contoso/environments/acpt-pytorch-2.8-cuda12.6/labels/latest",
     "tensorflow-2.4-ubuntu18.04-py37-cuda11-gpu", "sklearn-1.2", "my-acpt-pytorch-2.8-cuda12.6"],
)
def test_names_outside_the_families_are_not_curated(ref: str):
    assert resolve_curated(ref) is None


@pytest.mark.parametrize("family", curated_families(), ids=lambda f: f["name"])
def test_every_example_of_a_family_plans_to_valid_requirements(family: dict):
    assert family["examples"], "a family names the spellings Azure's examples use"
    for ref in family["examples"]:
        entry = resolve_curated(ref)
        assert entry is not None, ref
        text = json.dumps(entry)
        assert "{" not in text.replace("{\"", "").replace("{}", ""), f"{ref}: a placeholder is left: {text}"
        plan = plan_environment(ref)
        assert plan["kind"] == "venv" and plan["label"] == f"{entry['name']}:1" and plan["python"] == entry["python"]
        builds = [plan, plan["cpu_build"]] if entry.get("cuda") else [plan]
        for build in builds:
            assert len(build["key"]) == 64
            for line in build["requirements"]:
                Requirement(line)
            assert any(Requirement(r).name == "mlflow-skinny" for r in build["requirements"]), ref
        json.dumps(plan)  # it goes into plan.json as is


def test_each_example_belongs_to_its_own_family():
    families = curated_families()
    for family in families:
        for ref in family["examples"]:
            others = [f for f in families if f is not family and _matches(f, ref)]
            assert not others, f"{ref} matches {[f['name'] for f in others]} too"


def _matches(family: dict, ref: str) -> bool:
    import re

    bare = ref.split("environments/")[-1].split("/")[0] if "://" in ref else ref.removeprefix("azureml:")
    bare = re.split(r"[@:]", bare)[0]
    bare = bare[len("azureml-"):] if bare.lower().startswith("azureml-") else bare
    return re.fullmatch(family["match"], bare, re.IGNORECASE) is not None


def test_error_messages_name_the_families():
    names = curated_names()
    assert "AzureML-acpt-pytorch-<torch>-cuda<cuda>" in names and "AzureML-tensorflow-<tf>-cuda<cuda>" in names
    with pytest.raises(Exception) as info:
        plan_environment("azureml:AzureML-acpt-pytorch-2.8@latest")
    assert "AzureML-acpt-pytorch-<torch>-cuda<cuda>" in str(info.value)


# -- planning: the CUDA build, the CPU build, one key per build --------------------------------------------
def test_a_cuda_environment_plans_both_builds():
    plan = plan_environment("azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/labels/latest")
    assert plan["cuda"] == "12.6" and "torch_backend" not in plan  # the CUDA build: PyPI's Linux wheel
    cpu = plan["cpu_build"]
    assert cpu["torch_backend"] == "cpu" and cpu["requirements"] == plan["requirements"]
    assert cpu["key"] != plan["key"]
    assert cpu["key"] == environment_key("3.10", cpu["requirements"], torch_backend="cpu")
    # Every spelling is one build.
    same = plan_environment("azureml:AzureML-acpt-pytorch-2.8-cuda12.6@latest")
    assert (same["key"], same["cpu_build"]["key"]) == (plan["key"], cpu["key"])


def test_tensorflow_builds_differ_by_package_and_carry_its_variables():
    plan = plan_environment("azureml:AzureML-tensorflow-2.16-cuda12@latest")
    assert "tensorflow[and-cuda]==2.16.*" in plan["requirements"] and "tensorflow==2.16.*" not in plan["requirements"]
    cpu = plan["cpu_build"]
    assert "tensorflow==2.16.*" in cpu["requirements"] and "tensorflow[and-cuda]==2.16.*" not in cpu["requirements"]
    assert plan["variables"] == cpu["variables"] == {"TF_USE_LEGACY_KERAS": "1"}
    assert cpu["key"] == environment_key("3.10", cpu["requirements"], variables={"TF_USE_LEGACY_KERAS": "1"})


def test_keys_without_the_new_inputs_are_unchanged():
    reqs = ["six", "tomli"]
    assert environment_key("3.10", reqs) == environment_key("3.10", reqs, torch_backend=None, variables={})
    assert environment_key("3.10", reqs, torch_backend="cpu") != environment_key("3.10", reqs)
    assert environment_key("3.10", reqs, variables={"A": "1"}) != environment_key("3.10", reqs)
    assert "cpu_build" not in plan_environment("sklearn-1.5")  # not a CUDA environment


def test_a_curated_cuda_image_with_a_conda_file_adds_its_packages_to_both_builds():
    plan = plan_environment({"image": "mcr.microsoft.com/azureml/curated/acpt-pytorch-2.8-cuda12.6:latest",
                             "conda_file": {"dependencies": ["python=3.11", {"pip": ["transformers==4.57.*"]}]}})
    assert plan["kind"] == "venv" and plan["python"] == "3.11" and plan["cuda"] == "12.6"
    assert "transformers==4.57.*" in plan["requirements"] and "transformers==4.57.*" in plan["cpu_build"]["requirements"]
    assert "torch==2.8.*" in plan["cpu_build"]["requirements"]
    assert "curated environment AzureML-acpt-pytorch-2.8-cuda12.6" in plan["notes"][0]


# -- public images: this machine's Python, a conda_file honoured ----------------------------------------
@pytest.mark.parametrize(
    ("image", "kind"),
    [("ubuntu:22.04", "public"), ("nvidia/cuda:12.1.0-runtime-ubuntu22.04", "public"),
     ("docker.io/pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime", "public"), ("nvcr.io/nvidia/pytorch:24.01-py3", "public"),
     ("ghcr.io/org/train:1", "public"), ("quay.io/org/img@sha256:" + "a" * 64, "public"),
     ("mcr.microsoft.com/other/thing:1", "public"), ("python:3.11-slim", "host"),
     ("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "host"), ("myacr.azurecr.io/team/img:1", "custom"),
     ("registry.contoso.com:5000/img", "custom"), ("localhost/img", "custom")],
)
def test_images_are_classified_by_registry(image: str, kind: str):
    assert classify_image(image)[0] == kind


def test_a_public_image_runs_on_this_machines_python_and_says_so():
    plan = plan_environment({"image": "nvidia/cuda:12.1.0-runtime-ubuntu22.04"})
    assert plan["kind"] == "host"
    assert plan["notes"] == [("image nvidia/cuda:12.1.0-runtime-ubuntu22.04 is not run (cible runs jobs without a "
                              "container engine): the job runs on this machine's Python")]


def test_a_conda_file_beside_a_public_image_is_honoured():
    conda = {"dependencies": ["python=3.10", "numpy=1.26", "mkl", {"pip": ["mlflow-skinny", "six"]}]}
    plan = plan_environment({"image": "ubuntu:22.04", "conda_file": conda})
    assert plan["kind"] == "venv" and plan["python"] == "3.10"
    assert plan["requirements"] == ["mlflow-skinny", "numpy==1.26.*", "six"] and plan["conda_only"] == ["mkl"]
    assert plan["notes"][0].startswith("image ubuntu:22.04 is not run") and "conda_file" in plan["notes"][0]
    # The image is not a build input: the same conda file on a Python image is the same environment.
    assert plan["key"] == plan_environment({"image": "python:3.10", "conda_file": conda})["key"]


def test_a_private_image_still_needs_an_engine():
    plan = plan_environment({"image": "myacr.azurecr.io/team/img:1", "conda_file": {"dependencies": ["six"]}})
    assert plan["kind"] == "container" and "private registry" in plan["reason"] and "public registry" in plan["reason"]


def test_the_host_note_reaches_the_job_log_with_the_python(tmp_path: Path):
    lines: list[str] = []
    plan = plan_environment({"image": "ubuntu:22.04"})
    bin_dir = envs.materialise(plan, cache_root=tmp_path, progress=lines.append, build_log=tmp_path / "b.log")
    assert bin_dir == Path(sys.executable).parent
    version = ".".join(map(str, sys.version_info[:3]))
    assert lines == [f"inline environment: {plan['notes'][0]} (Python {version}, {sys.executable})"]
    assert envs.materialise({"kind": "host"}, cache_root=tmp_path, progress=lines.append,
                            build_log=tmp_path / "b.log") == bin_dir
    assert len(lines) == 1  # no image, nothing to say


# -- the node: CPU build without a GPU -------------------------------------------------------------------
def fake_ready(cache: Path, key: str) -> Path:
    """A built environment in the cache (the warm path: no process runs)."""
    bin_dir = cache / key / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (cache / key / envs.READY_MARKER).write_text("{}")
    return bin_dir


@pytest.mark.parametrize("gpus", [0, 2])
def test_the_node_builds_the_cpu_build_without_a_gpu_and_says_so(gpus: int, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    plan = plan_environment("azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/labels/latest")
    cpu_bin, cuda_bin = fake_ready(tmp_path, plan["cpu_build"]["key"]), fake_ready(tmp_path, plan["key"])
    monkeypatch.setattr(envs, "visible_gpus", lambda: gpus)
    lines: list[str] = []
    got = envs.materialise(plan, cache_root=tmp_path, progress=lines.append, build_log=tmp_path / "b.log")
    label = f"environment {PYTORCH}:1"
    if gpus:
        assert got == cuda_bin
        assert lines[0] == f"{label} is a CUDA environment (CUDA 12.6); this node has 2 GPUs: running its CUDA build"
    else:
        assert got == cpu_bin
        assert lines[0] == f"{label} {NO_GPU}"
    assert lines[1].endswith("), reused")


def test_visible_gpus_counts_devices_unless_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert envs.visible_gpus(str(tmp_path)) == 2
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert envs.visible_gpus(str(tmp_path)) == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert envs.visible_gpus(str(tmp_path / "missing")) == 0


FAKE_UV = """#!/bin/sh
echo "$@" >> "{calls}"
if [ "$1" = venv ]; then
  for last; do :; done
  mkdir -p "$last/bin" "$last/lib/python3.11/site-packages"
  ln -s "{python}" "$last/bin/python"
fi
exit 0
"""


def test_a_cold_cpu_build_asks_uv_for_pytorchs_cpu_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = tmp_path / "calls.txt"
    uv = tmp_path / "fake-uv"
    uv.write_text(FAKE_UV.format(calls=calls, python=sys.executable))
    uv.chmod(0o755)
    monkeypatch.setattr(envs, "find_uv", lambda: str(uv))
    monkeypatch.setattr(envs, "visible_gpus", lambda: 0)
    plan = plan_environment("azureml:AzureML-acpt-pytorch-2.8-cuda12.6@latest")
    lines: list[str] = []
    bin_dir = envs.materialise(plan, cache_root=tmp_path / "envs", progress=lines.append, build_log=tmp_path / "b.log")
    assert bin_dir == tmp_path / "envs" / plan["cpu_build"]["key"] / "bin"
    install = next(line for line in calls.read_text().splitlines() if line.startswith("pip install"))
    assert "--torch-backend cpu" in install
    facts = json.loads((bin_dir.parent / envs.READY_MARKER).read_text())
    assert facts["variant"] == "cpu" and facts["torch_backend"] == "cpu" and facts["key"] == plan["cpu_build"]["key"]
    assert NO_GPU in lines[0]


def test_environment_variables_are_set_at_interpreter_start(tmp_path: Path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    envs._write_variables(env_dir, {"TF_USE_LEGACY_KERAS": "1", "QUOTE": "it's"})
    code = "import os; print(os.environ['TF_USE_LEGACY_KERAS'], os.environ['QUOTE'])"
    base = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "QUOTE", "PYTHONPATH")}
    run = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], capture_output=True, text=True, env=base,
                         check=True, timeout=60)
    assert run.stdout.split() == ["1", "it's"]
    # The job's own value wins (setdefault).
    run = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         env={**base, "TF_USE_LEGACY_KERAS": "0"}, check=True, timeout=60)
    assert run.stdout.split() == ["0", "it's"]


# -- a GPU size this machine overcommits: not refused for the environment's name ---------------------------
@pytest.fixture
def api(migrated_db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with api_client(migrated_db_url, tmp_path) as client:
        yield client


def test_a_gpu_size_overcommitted_here_takes_cuda_environments_by_name(api: TestClient):
    body = {"type": "amlcompute", "size": "Standard_NC4as_T4_v3", "min_instances": 0, "max_instances": 1,
            "idle_time_before_scale_down": 120, "cible": {"overcommit": True}}
    created = api.put("/api/v1/computes/gpu-t4", json=body)
    assert created.status_code == 200, created.text
    for i, environment in enumerate([
        "azureml://registries/azureml/environments/acpt-pytorch-2.8-cuda12.6/labels/latest",
        "azureml:AzureML-tensorflow-2.16-cuda12@latest",
        {"image": "mcr.microsoft.com/azureml/curated/acpt-pytorch-2.2-cuda12.1:latest"},
        {"image": "nvcr.io/nvidia/pytorch:24.01-py3", "conda_file": {"dependencies": [{"pip": ["six"]}]}},
    ]):
        job = api.put(f"/api/v1/jobs/gpu-job-{i}", json={"command": "python -c 'import torch'", "compute": "azureml:gpu-t4",
                                                         "environment": environment})
        assert job.status_code == 200, (environment, job.text)
        assert job.json()["status"] == "Queued"
        assert not any("GPU" in w for w in job.json()["warnings"]), job.json()["warnings"]
