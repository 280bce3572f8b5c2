"""A job's `environment` -> the block of the launch plan that tells the node what to run it with.

Three kinds:

- ``host``: the node's own Python (no conda file, and an image that is plain Python or an Azure ML
  base image: Azure would only add an OS around the same interpreter).
- ``venv``: a uv virtual environment built from a conda file and/or a curated package list, cached
  on the node under ``key``, the SHA-256 of the build inputs (interpreter version and the sorted,
  de-duplicated requirement lines). Two environments with the same inputs share one build whatever
  their names; the order of the pip list does not matter (uv resolves the set as a whole).
- ``container``: a Docker build context or a custom image. These need a container engine; the
  node says so at Preparing, with ``reason``.

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


def environment_key(python: str | None, requirements: list[str]) -> str:
    """SHA-256 of the canonical build inputs."""
    canonical = json.dumps(
        {"v": KEY_VERSION, "python": python, "requirements": sorted(set(requirements))},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def classify_image(image: str | None) -> tuple[str, dict[str, Any] | None]:
    """("host", curated entry or None) for Python and Azure ML base images, ("custom", None) otherwise.

    `mcr.microsoft.com/azureml/curated/<name>` images that cible knows as curated environments
    come back with that entry: the image is the curated environment's image.
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
    return "custom", None


def _container(label: str, what: str) -> dict[str, Any]:
    reason = (
        f"the environment ({label}) uses {what}, which needs a container engine; cible runs jobs on this "
        f"machine's Python without one. To run it here, use an `image:` that is a Python or Azure ML base image "
        f"(for example {HOST_IMAGE_EXAMPLE}) with a `conda_file` that lists the packages the job needs, "
        f"or a curated environment (for example azureml:AzureML-sklearn-1.5@latest); or install a "
        f"container engine (docker or podman) on the machine."
    )
    return {"kind": "container", "label": label, "reason": reason}


def _venv(label: str, python: str | None, requirements: list[str], conda_only: list[str], notes: list[str]) -> dict[str, Any]:
    reqs = sorted(set(requirements))
    return {
        "kind": "venv",
        "key": environment_key(python, reqs),
        "python": python,
        "requirements": reqs,
        "conda_only": list(conda_only),
        "notes": list(notes),
        "label": label,
    }


def _curated_plan(entry: dict[str, Any], label: str, notes: list[str] | None = None) -> dict[str, Any]:
    return _venv(label, entry.get("python"), list(entry["requirements"]), [], notes or [])


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
        what = f"the custom image '{image}'" + (" (with a conda_file)" if conda_file else "")
        return _container(label, what)
    conda = parse_conda(conda_file, field=f"{field}.conda_file") if conda_file is not None else CondaPlan()
    requirements = list(conda.requirements)
    python = conda.python
    notes = list(conda.notes)
    if curated is not None:
        requirements = list(curated["requirements"]) + requirements
        python = python or curated.get("python")
        notes.insert(0, f"image {image} is the curated environment {curated['name']}; its packages are installed")
    if conda_file is None and curated is None:
        return {"kind": "host", "label": label}
    if not requirements and python is None and not conda.conda_only:
        return {"kind": "host", "label": label}
    return _venv(label, python, requirements, conda.conda_only, notes)


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
