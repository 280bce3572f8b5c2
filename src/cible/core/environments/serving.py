"""A deployment's environment as its replicas need it: the scoring server's packages added.

Azure's inference images carry its HTTP server; a conda file lists `azureml-inference-server-http`
(or `azureml-defaults`, which pulls it in with azureml-core) to have it. cible serves the same
contract with its own server (cible.serving), so those two are not installed: the replica's
environment gets the packages cible's server runs on instead, and `inference-schema`, which the
Azure server brings and scripts decorated with `@input_schema` import. The job's log says so.

Pure: no processes, no network, no clock.
"""

from __future__ import annotations

import re
from typing import Any

from cible.core.environments.conda import normalise_name
from cible.core.environments.plan import _build

SERVING_REQUIREMENTS = ("uvicorn[standard]>=0.30", "orjson>=3.9")
SERVED_BY_CIBLE = ("azureml-inference-server-http", "azureml-defaults")
SCHEMA_REQUIREMENT = "inference-schema>=1.8"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirement_name(line: str) -> str:
    match = _NAME.match(line)
    return normalise_name(match.group(1)) if match else ""


def _with_server(build: dict[str, Any], python: str | None) -> tuple[dict[str, Any], list[str]]:
    kept = [r for r in build["requirements"] if _requirement_name(r) not in SERVED_BY_CIBLE]
    dropped = sorted({_requirement_name(r) for r in build["requirements"]} & set(SERVED_BY_CIBLE))
    extra = [*SERVING_REQUIREMENTS, *([SCHEMA_REQUIREMENT] if dropped else [])]
    return _build(python, kept + extra, build.get("torch_backend"), build.get("variables")), dropped


def with_serving(block: dict[str, Any]) -> dict[str, Any]:
    """The launch plan's environment block for a replica: a venv gets the scoring server's packages
    (its key changes with them); the host Python has them already (they are cible's own)."""
    if block.get("kind") != "venv":
        return block
    build, dropped = _with_server(block, block.get("python"))
    served = dict(block, **build)
    if block.get("cpu_build"):
        served["cpu_build"], _ = _with_server(block["cpu_build"], block.get("python"))
    if dropped:
        served["notes"] = [*block.get("notes", []), (
            f"{' and '.join(dropped)}: not installed; cible's scoring server serves the script with the same "
            "contract (init(), run(), /score, /swagger.json)")]
    return served
