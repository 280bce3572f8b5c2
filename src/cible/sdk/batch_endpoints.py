"""client.batch_endpoints / client.batch_deployments: as azure-ai-ml's BatchEndpointOperations and
BatchDeploymentOperations, over /api/v1/batch-endpoints.

A deployment's body is its loaded spec with every local path uploaded as a content-addressed
snapshot (its code folder, an inline model's path), as for online deployments; an invocation's
local input (a file or a folder) is uploaded the same way, as a job's local inputs are.

This module is imported with MLClient: the spec models (pydantic) load only when a spec is sent.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.sdk.resources import Done, Resource

# What the server adds to a resource: dropped from a dict given back to begin_create_or_update.
ENDPOINT_READ_ONLY = ("id", "scoring_uri", "provisioning_state", "deployments", "created_at", "created_by",
                      "updated_at")
DEPLOYMENT_READ_ONLY = ("id", "provisioning_state", "is_default", "created_at", "created_by", "updated_at")
SCHEMA_KEYS = ("schema_", "$schema")
ROOT = "/batch-endpoints"


class BatchEndpointOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def begin_create_or_update(self, endpoint: Any, *, update: bool = True) -> Done:
        """Create the endpoint, or (`update`, Azure's way) replace the spec of the one of that name;
        `update=False` refuses one that exists (409). `.result()` is the endpoint (ready at once)."""
        body = endpoint_spec(endpoint)
        params = {"update": "true"} if update else {}
        return Done(Resource(self._client.json("PUT", f"{ROOT}/{body['name']}", params=params, json={"spec": body})))

    def begin_update(self, name: str, *, endpoint: Any = None, set: list[str] | None = None) -> Done:  # noqa: A002
        """cible's `batch-endpoint update`: a whole new spec, or `set` assignments applied by the server
        to the stored one (`["defaults.deployment_name=blue"]`)."""
        body: dict[str, Any] = {"spec": endpoint_spec(endpoint)} if endpoint is not None else {"set": list(set or [])}
        return Done(Resource(self._client.json("PATCH", f"{ROOT}/{name}", json=body)))

    def get(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"{ROOT}/{name}"))

    def list(self) -> list[Resource]:
        return [Resource(e) for e in self._client.json("GET", ROOT)["value"]]

    def begin_delete(self, name: str) -> Done:
        """Delete the endpoint and its deployments (at once: nothing of theirs runs between invocations)."""
        return Done(Resource(self._client.json("DELETE", f"{ROOT}/{name}")))

    def invoke(self, endpoint_name: str, input: Any = None, deployment_name: str | None = None, *,  # noqa: A002
               inputs: dict[str, Any] | None = None, input_type: str | None = None, output_path: str | None = None,
               mini_batch_size: int | None = None, instance_count: int | None = None, job_name: str | None = None,
               experiment_name: str | None = None, set: list[str] | None = None,  # noqa: A002
               params_override: list[dict[str, Any]] | None = None, **_: Any) -> Resource:
        """Score `input` with the deployment (else the endpoint's default): the job it makes, as `jobs.get`
        gives it. `input` is a path (a local file or folder, uploaded; `azureml:<data>@latest`;
        `azureml://datastores/<ds>/paths/<p>`), a {"path", "type"} dict or an Input; Azure's
        `inputs={"input_data": Input(...)}` works too. `set`: settings for this job only
        (`["output_file_name=scores.csv"]`), as Azure's `params_override`."""
        if input is None and inputs:
            if len(inputs) != 1:
                from cible.core.errors import InvalidRequestError

                raise InvalidRequestError(f"inputs: a model deployment takes one input, got {', '.join(inputs)}",
                                          details={"field": "input"})
            input = next(iter(inputs.values()))  # noqa: A001
        path, given_type = _path_and_type(input)
        body: dict[str, Any] = {"deployment_name": deployment_name, "input": path,
                                "input_type": input_type or given_type, "output_path": output_path,
                                "mini_batch_size": mini_batch_size, "instance_count": instance_count,
                                "job_name": job_name, "experiment_name": experiment_name,
                                "set": [*(set or []), *_overrides(params_override)]}
        if isinstance(path, str):
            body["input"], local_type = _uploaded(self._client, path)
            body["input_type"] = body["input_type"] or local_type
        body = {k: v for k, v in body.items() if v not in (None, [])}
        return Resource(self._client.json("POST", f"{ROOT}/{endpoint_name}:invoke", json=body))

    def list_jobs(self, endpoint_name: str) -> list[Resource]:
        """The jobs the endpoint's invocations made, newest first."""
        return [Resource(j) for j in self._client.items(f"{ROOT}/{endpoint_name}/jobs")]


class BatchDeploymentOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def begin_create_or_update(self, deployment: Any, *, set_default: bool = False, update: bool = True,
                               **_: Any) -> Done:
        """Create the deployment (or, `update`, replace the spec of the one of that name; `update=False`
        refuses one that exists). `set_default` makes it its endpoint's default. `.result()` is it."""
        spec = deployment_spec(self._client, deployment)
        params = {"update": "true"} if update else {}
        answer = self._client.json("PUT", _path(spec["endpoint_name"], spec["name"]), params=params,
                                   json={"spec": spec, "set_default": bool(set_default)})
        return Done(Resource(answer))

    def begin_update(self, name: str, endpoint_name: str, *, deployment: Any = None,
                     set: list[str] | None = None, set_default: bool = False) -> Done:  # noqa: A002
        """cible's `batch-deployment update`: a whole new spec, or `set` assignments on the stored one
        (`["settings.mini_batch_size=20"]`)."""
        body: dict[str, Any] = {"set_default": bool(set_default)}
        if deployment is not None:
            body["spec"] = deployment_spec(self._client, deployment)
        else:
            body["set"] = list(set or [])
        return Done(Resource(self._client.json("PATCH", _path(endpoint_name, name), json=body)))

    def get(self, name: str, endpoint_name: str) -> Resource:
        return Resource(self._client.json("GET", _path(endpoint_name, name)))

    def list(self, endpoint_name: str) -> list[Resource]:
        return [Resource(d) for d in self._client.json("GET", f"{ROOT}/{endpoint_name}/deployments")["value"]]

    def begin_delete(self, name: str, endpoint_name: str) -> Done:
        return Done(Resource(self._client.json("DELETE", _path(endpoint_name, name))))

    def list_jobs(self, endpoint_name: str, name: str) -> list[Resource]:
        """The jobs the deployment's invocations made, newest first."""
        return [Resource(j) for j in self._client.items(f"{_path(endpoint_name, name)}/jobs")]


def _path(endpoint: str, name: str) -> str:
    return f"{ROOT}/{endpoint}/deployments/{name}"


# ---- request bodies ---------------------------------------------------------------------------


def endpoint_spec(endpoint: Any) -> dict[str, Any]:
    """An endpoint (a loaded spec, or a dict such as `get` returns) as the API's `spec`."""
    from cible.core.specs.azureml.loader import load_spec_dict

    if isinstance(endpoint, dict):
        data = {k: v for k, v in endpoint.items() if k not in ENDPOINT_READ_ONLY + SCHEMA_KEYS}
        if not (data.get("defaults") or {}).get("deployment_name"):
            data.pop("defaults", None)  # `get`'s {deployment_name: null}: not a change of the default
        endpoint = load_spec_dict(copy.deepcopy(data), "batch-endpoint", source="the endpoint given").entity
    body = endpoint.model_dump(mode="json", exclude_none=True, by_alias=False)
    if "defaults" not in endpoint.model_fields_set:
        body.pop("defaults", None)  # the server keeps the endpoint's default
    return {k: v for k, v in body.items() if k not in ("id", "scoring_uri", "provisioning_state", *SCHEMA_KEYS)}


def deployment_spec(client: WorkspaceClient, deployment: Any) -> dict[str, Any]:
    """A deployment (a loaded spec, or a dict: its paths relative to the working folder) as the API's
    `spec`: local code and an inline model uploaded, an inline environment's conda file inlined."""
    from cible.sdk.endpoints import _inline_environment, _upload_local_paths

    if isinstance(deployment, dict):
        from cible.core.specs.azureml.loader import load_spec_dict

        data = {k: v for k, v in deployment.items() if k not in DEPLOYMENT_READ_ONLY + SCHEMA_KEYS}
        deployment = load_spec_dict(copy.deepcopy(data), "batch-deployment", base_dir=Path.cwd(),
                                    source="the deployment given").entity
    body = deployment.model_dump(mode="json", exclude_none=True, by_alias=False)
    body = {k: v for k, v in body.items() if k not in ("id", "provisioning_state", *SCHEMA_KEYS)}
    if isinstance(body.get("environment"), dict):
        body["environment"] = _inline_environment(body["environment"])
    _upload_local_paths(client, body)
    return body


def _path_and_type(value: Any) -> tuple[Any, str | None]:
    """An invocation's input as (path, type): a path, a {"path", "type"} dict, or an Input."""
    if isinstance(value, dict):
        return value.get("path"), value.get("type")
    if value is not None and not isinstance(value, (str, Path)) and hasattr(value, "path"):
        return getattr(value, "path"), getattr(value, "type", None)
    return (str(value) if isinstance(value, Path) else value), None


def _uploaded(client: WorkspaceClient, path: str) -> tuple[str, str | None]:
    """A local input uploaded (its snapshot's URI) and the type it implies (uri_file for a file);
    any other path as it is."""
    from cible.core.specs.azureml.refs import classify_path, strip_file_prefix

    try:
        local = classify_path(path) == "local"
    except Exception:  # the server says what is wrong with it
        return path, None
    if not local:
        return path, None
    from cible.sdk.uploads import upload_path  # pathspec: only when something is uploaded

    target = Path(strip_file_prefix(path)).expanduser()
    if not target.exists():
        from cible.core.errors import InvalidRequestError

        raise InvalidRequestError(f"input: '{path}' does not exist (looked for {target.resolve()})",
                                  details={"field": "input"})
    return upload_path(client, str(target), "input"), ("uri_file" if target.is_file() else "uri_folder")


def _overrides(params_override: list[dict[str, Any]] | None) -> list[str]:
    """Azure's `params_override=[{"output_file_name": "x.csv"}]` as `set` assignments."""
    import json

    return [f"{key}={json.dumps(value) if not isinstance(value, str) else value}"
            for item in params_override or [] for key, value in item.items()]
