"""A job's `environment` -> the block of the launch plan that tells the node what to run it with.

Three kinds:

- ``host``: the node's own Python (no conda file, and an image that is plain Python, an Azure ML
  base image, or another public image: cible runs no container, so the job gets this machine's
  interpreter; ``notes`` say so in the job's log).
- ``venv``: a uv virtual environment built from a conda file and/or a curated package list, cached
  on the node under ``key``, the SHA-256 of the build inputs (interpreter version and the sorted,
  de-duplicated requirement lines). Two environments with the same inputs share one build whatever
  their names; the order of the pip list does not matter (uv resolves the set as a whole). A CUDA
  environment (``cuda``) also carries ``cpu_build``: the key and requirements of its CPU build,
  which a node without a GPU builds instead (the node decides: the plan is made on the server).
- ``container``: a Docker build context, a Windows environment, or an image from a private
  registry. These need a container engine; the node says so at Preparing, with ``reason``.

Pure: no processes, no network, no clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from cible.core.environments.conda import CondaPlan, parse_conda
from cible.core.environments.curated import curated_names, resolve_curated, split_reference
from cible.core.errors import InvalidSpecError

KEY_VERSION = 1  # bump when the meaning of the build inputs changes: every cached environment is rebuilt

HOST_IMAGE_EXAMPLE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
_DOCKER_HUB = r"(?:(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?(?:library/)?"
_PYTHON_IMAGE = re.compile(rf"^{_DOCKER_HUB}python(?::[^/]*)?(?:@sha256:[0-9a-f]+)?$", re.IGNORECASE)
_AZUREML_IMAGE = re.compile(r"^mcr\.microsoft\.com/azureml/(?P<repo>[^:@]+)(?::[^/]*)?(?:@sha256:[0-9a-f]+)?$", re.IGNORECASE)
# Registries anyone can pull from without credentials; an image elsewhere (an Azure container
# registry, a company's own) is private: its content is unknown, so it still needs an engine.
PUBLIC_REGISTRIES = ("docker.io", "index.docker.io", "registry-1.docker.io", "mcr.microsoft.com", "ghcr.io",
                     "quay.io", "nvcr.io", "gcr.io", "public.ecr.aws", "registry.k8s.io")
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$", re.IGNORECASE)


def environment_key(python: str | None, requirements: list[str], *, torch_backend: str | None = None,
                    variables: dict[str, str] | None = None) -> str:
    """SHA-256 of the canonical build inputs. The optional inputs count only when set, so the key of
    an environment without them is the same as before they existed."""
    inputs: dict[str, Any] = {"v": KEY_VERSION, "python": python, "requirements": sorted(set(requirements))}
    if torch_backend:
        inputs["torch_backend"] = torch_backend
    if variables:
        inputs["variables"] = dict(variables)
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _registry(image: str) -> str | None:
    """The registry host of an image reference (Docker's rule: a first part with a dot or a port,
    or `localhost`), or None for Docker Hub's short form."""
    first, slash, _rest = image.partition("/")
    if slash and ("." in first or ":" in first or first.lower() == "localhost"):
        return first.lower()
    return None


def classify_image(image: str | None) -> tuple[str, dict[str, Any] | None]:
    """What cible runs an environment's `image` as, with the curated entry the image is, if any:

    - ("host", None) for Python and Azure ML base images (Azure would only add an OS around the
      same interpreter), and ("host", entry) for `mcr.microsoft.com/azureml/curated/<name>`
      images of curated environments cible knows;
    - ("public", None) for any other image of a public registry: run on this machine's Python;
    - ("custom", None) for an image of a private registry, which needs a container engine.
    """
    if image is None or not str(image).strip():
        return "host", None
    image = str(image).strip()
    if _PYTHON_IMAGE.fullmatch(image):
        return "host", None
    m = _AZUREML_IMAGE.fullmatch(image)
    if m:
        repo = m["repo"]
        if repo.lower().startswith("curated/"):
            return "host", resolve_curated(repo.split("/", 1)[1])
        return "host", None
    registry = _registry(image)
    if _IMAGE_REF.fullmatch(image) and (registry is None or registry in PUBLIC_REGISTRIES):
        return "public", None
    return "custom", None


def _image_note(image: str, kind: str, curated: dict[str, Any] | None, *, conda: bool) -> str:
    """The job log's line on what became of its image."""
    if curated is not None:
        return f"image {image} is the curated environment {curated['name']}; its packages are installed"
    if kind == "public":
        what = f"image {image} is not run (cible runs jobs without a container engine)"
    elif _PYTHON_IMAGE.fullmatch(image):
        what = f"image {image} is a Python image"
    else:
        what = f"image {image} is an Azure ML base image"
    if conda:
        return f"{what}: the job runs in a virtual environment with its conda_file's packages"
    return f"{what}: the job runs on this machine's Python"


def _container(label: str, what: str) -> dict[str, Any]:
    reason = (
        f"the environment ({label}) uses {what}, which needs a container engine; cible runs jobs on this "
        f"machine's Python without one. To run it here, use an `image:` from a public registry (a Python or "
        f"Azure ML base image, for example {HOST_IMAGE_EXAMPLE}) with a `conda_file` that lists the packages the job needs, "
        f"or a curated environment (for example azureml:AzureML-sklearn-1.5@latest); or install a "
        f"container engine (docker or podman) on the machine."
    )
    return {"kind": "container", "label": label, "reason": reason}


def _build(python: str | None, requirements: list[str], torch_backend: str | None,
           variables: dict[str, str] | None) -> dict[str, Any]:
    """The build inputs of a venv and their key; the optional ones only when set."""
    reqs = sorted(set(requirements))
    block: dict[str, Any] = {"key": environment_key(python, reqs, torch_backend=torch_backend, variables=variables),
                             "requirements": reqs}
    if torch_backend:
        block["torch_backend"] = torch_backend
    if variables:
        block["variables"] = dict(variables)
    return block


def _venv(label: str, python: str | None, requirements: list[str], conda_only: list[str], notes: list[str],
          *, torch_backend: str | None = None, variables: dict[str, str] | None = None) -> dict[str, Any]:
    build = _build(python, requirements, torch_backend, variables)
    return {
        "kind": "venv",
        "key": build.pop("key"),
        "python": python,
        "requirements": build.pop("requirements"),
        **build,
        "conda_only": list(conda_only),
        "notes": list(notes),
        "label": label,
    }


def _curated_plan(entry: dict[str, Any], label: str, notes: list[str] | None = None, *,
                  extra: list[str] | None = None, python: str | None = None,
                  conda_only: list[str] | None = None) -> dict[str, Any]:
    """A curated entry's venv block, with a conda file's requirements (`extra`) on top. A CUDA entry's
    block is its CUDA build, and carries its CPU build for nodes without a GPU."""
    python = python or entry.get("python")
    base = list(entry["requirements"]) + list(extra or [])
    variables = {str(k): str(v) for k, v in (entry.get("variables") or {}).items()} or None
    builds = entry.get("builds") or {}
    gpu, cpu = builds.get("gpu") or {}, builds.get("cpu") or {}
    block = _venv(label, python, base + list(gpu.get("requirements") or []), list(conda_only or []), list(notes or []),
                  torch_backend=gpu.get("torch_backend"), variables=variables)
    if entry.get("cuda"):
        block["cuda"] = str(entry["cuda"])
        block["cpu_build"] = _build(python, base + list(cpu.get("requirements") or []), cpu.get("torch_backend"), variables)
    return block


def _asset_label(env: dict[str, Any], fallback: str) -> str:
    name, version = env.get("name"), env.get("version")
    if name and version is not None:
        return f"{name}:{version}"
    return str(name) if name else fallback


def _from_dict(env: dict[str, Any], *, label: str, field: str) -> dict[str, Any]:
    if env.get("build"):
        build = env["build"]
        path = build.get("path") if isinstance(build, dict) else build
        return _container(label, f"a Docker build context (build.path: {path})")
    os_type = str(env.get("os_type") or "linux").lower()
    if os_type != "linux":
        return _container(label, f"os_type: {os_type}")
    image = env.get("image")
    kind, curated = classify_image(image)
    conda_file = env.get("conda_file")
    if kind == "custom":
        what = f"the image '{image}' of a private registry" + (" (with a conda_file)" if conda_file else "")
        return _container(label, what)
    conda = parse_conda(conda_file, field=f"{field}.conda_file") if conda_file is not None else CondaPlan()
    shown = str(image).strip() if image is not None else ""
    if curated is not None:
        notes = [_image_note(shown, kind, curated, conda=False), *conda.notes]
        return _curated_plan(curated, label, notes, extra=list(conda.requirements), python=conda.python,
                             conda_only=list(conda.conda_only))
    if conda_file is None or (not conda.requirements and conda.python is None and not conda.conda_only):
        return {"kind": "host", "label": label, **({"notes": [_image_note(shown, kind, None, conda=False)]} if shown else {})}
    notes = ([_image_note(shown, kind, None, conda=True)] if shown else []) + list(conda.notes)
    return _venv(label, conda.python, list(conda.requirements), conda.conda_only, notes)


def plan_environment(env: dict[str, Any] | str | None, *, registered: dict[str, Any] | None = None) -> dict[str, Any]:
    """The launch plan's environment block for a job's `environment`.

    env: None, a reference string (curated name or URI, `azureml:<name>:<version>`) or an inline
    environment mapping (Azure's fields: image, conda_file (content), build, name, version ...).
    registered: the workspace environment a reference names, when the server found one; it is
    planned like an inline environment and takes precedence over the curated table.
    """
    field = "environment"
    if env is None:
        return {"kind": "host", "label": "host Python"}
    if isinstance(env, str):
        ref = env.strip()
        if registered is not None:
            if not isinstance(registered, dict):
                raise InvalidSpecError(f"{field}: registered environment {ref} is not a mapping", details={"field": field})
            parts = split_reference(ref)
            fallback = f"{parts[0]}:{parts[1]}" if parts and parts[1] else (parts[0] if parts else ref)
            return _from_dict(registered, label=_asset_label(registered, fallback), field=f"{field} ({ref})")
        entry = resolve_curated(ref)
        if entry is None:
            raise InvalidSpecError(
                f"{field}: '{ref}' is neither a curated environment nor an environment registered in this "
                f"workspace; curated environments: {'; '.join(curated_names())}",
                details={"field": field},
            )
        parts = split_reference(ref)
        requested = parts[1] if parts else None
        notes = []
        if requested is not None and str(requested) != str(entry["version"]):
            notes.append(
                f"{entry['name']} version {requested} requested; cible has one definition of it "
                f"(version {entry['version']}), which is used"
            )
        return _curated_plan(entry, f"{entry['name']}:{entry['version']}", notes)
    if isinstance(env, dict):
        return _from_dict(env, label=_asset_label(env, "inline environment"), field=field)
    raise InvalidSpecError(
        f"{field}: expected a reference string or an environment mapping; got {type(env).__name__}",
        details={"field": field},
    )
