"""client.online_endpoints / client.online_deployments: as azure-ai-ml's OnlineEndpointOperations and
OnlineDeploymentOperations, over /api/v1/online-endpoints.

`local=True` addresses the local endpoints (`--local`): a namespace of their own on the server
(the same name may exist both ways, as on Azure), served on the server's machine without auth.

A deployment's body is its loaded spec (the YAML loader resolved its local paths) with, for a
workspace deployment, every local path uploaded as a content-addressed snapshot: the code folder
(its content at the snapshot's root: the scoring script is relative to it) and an inline model's
path (its basename kept, as Azure registers it). A local deployment keeps its absolute paths: the
server reads them in place. Either way an inline environment's conda file is sent as its content.

This module is imported with MLClient: the spec models (pydantic) load only when a spec is sent.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient, tls_verify
from cible.core.errors import CibleError, NotFoundError
from cible.sdk.resources import Done, Resource

POLL_MIN_S = 0.1
POLL_MAX_S = 2.0
# Where a deployment's create or update has ended, for better or worse.
SETTLED = frozenset({"Succeeded", "Failed", "Canceled"})
# What the server adds to a resource: dropped from a dict given back to begin_create_or_update
# (a resource from `get`, changed and sent again), since the spec models refuse unknown keys.
ENDPOINT_READ_ONLY = ("id", "scoring_uri", "openapi_uri", "provisioning_state", "deployments", "metrics", "local",
                      "created_at", "created_by", "updated_at")
DEPLOYMENT_READ_ONLY = ("id", "provisioning_state", "generation", "desired_instances", "reason", "replicas", "spec",
                        "local", "created_at", "created_by", "updated_at")
SCHEMA_KEYS = ("schema_", "$schema")
INVOKE_TIMEOUT_S = 360.0  # above the longest request_timeout_ms (300 s) and a scale from zero
RECOMMEND_SLACK_S = 360.0  # recommend-size: past its duration, the last requests' timeouts (300 s at most)


class DeploymentFailedError(CibleError):
    """A deployment's create or update ended Failed (or Canceled, or it was deleted meanwhile)."""

    code = "DeploymentFailed"
    http_status = 409


class OperationTimeoutError(CibleError):
    """A wait (`.result(timeout=...)`) reached its deadline before the operation ended."""

    code = "OperationTimeout"
    http_status = 504


class InvokeError(CibleError):
    """The endpoint answered an invocation with a non-2xx status (details: status and body)."""

    code = "InvokeFailed"
    http_status = 502


def _local(local: bool) -> dict[str, str]:
    return {"local": "true"} if local else {}


def _polls(timeout: float | None) -> Callable[[], bool]:
    """A sleeper for a wait: sleeps the next back-off step; False once `timeout` has passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_MIN_S

    def again() -> bool:
        nonlocal delay
        if deadline is not None and time.monotonic() >= deadline:
            return False
        pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
        time.sleep(pause)  # waiting on the server's reconciler, with back-off
        delay = min(delay * 1.5, POLL_MAX_S)
        return True

    return again


class DeletePoller:
    """What begin_delete returns: `.result(timeout)` waits until the resource is gone."""

    def __init__(self, get: Callable[[], Any], what: str) -> None:
        self._get, self._what = get, what

    def done(self) -> bool:
        try:
            self._get()
        except NotFoundError:
            return True
        return False

    def result(self, timeout: float | None = None) -> None:
        again = _polls(timeout)
        while not self.done():
            if not again():
                raise OperationTimeoutError(f"{self._what} is still being deleted after {timeout:g} s",
                                            details={"timeout_s": timeout})

    def wait(self, timeout: float | None = None) -> None:
        self.result(timeout)


class DeploymentPoller:
    """What a deployment's begin_create_or_update / begin_update returns: `.result()` waits until its
    provisioning_state is Succeeded (the deployment) or Failed / Canceled (DeploymentFailedError)."""

    def __init__(self, ops: OnlineDeploymentOperations, answer: Resource, local: bool) -> None:
        self._ops, self._local = ops, local
        self.initial = answer  # the deployment as the create or update answered it
        self._last = answer

    def status(self) -> str:
        return str(self._last.get("provisioning_state"))

    def done(self) -> bool:
        self._last = self._refresh()
        return self.status() in SETTLED

    def _refresh(self) -> Resource:
        try:
            return self._ops.get(self.initial["name"], self.initial["endpoint_name"], local=self._local)
        except NotFoundError:  # deleted while we waited
            return Resource({**self._last, "provisioning_state": "Deleting", "reason": "deleted meanwhile"})

    def wait(self, timeout: float | None = None, on_change: Callable[[Resource], None] | None = None) -> Resource:
        """Poll until the deployment settles (or is being deleted); `on_change` gets it each time
        its state, ready replicas or reason change. Returns it, whatever its state."""
        again, seen = _polls(timeout), None
        deployment = self._last
        while True:
            now = (deployment.get("provisioning_state"), ready_count(deployment), deployment.get("reason"))
            if on_change is not None and now != seen:
                on_change(deployment)
            seen = now
            if deployment.get("provisioning_state") in SETTLED | {"Deleting"}:
                return deployment
            if not again():
                raise OperationTimeoutError(
                    f"deployment '{deployment['name']}' of endpoint '{deployment['endpoint_name']}' is still "
                    f"{deployment.get('provisioning_state')} after {timeout:g} s", details={"timeout_s": timeout})
            deployment = self._last = self._refresh()

    def result(self, timeout: float | None = None) -> Resource:
        return raise_if_failed(self.wait(timeout))


def ready_count(deployment: dict[str, Any]) -> tuple[int, int]:
    """(ready replicas, replicas) of a deployment resource."""
    replicas = deployment.get("replicas") or []
    return sum(1 for r in replicas if r.get("ready")), len(replicas)


def raise_if_failed(deployment: Resource) -> Resource:
    state = deployment.get("provisioning_state")
    if state == "Succeeded":
        return deployment
    name, endpoint = deployment["name"], deployment["endpoint_name"]
    local = " --local" if deployment.get("local") else ""
    raise DeploymentFailedError(
        f"deployment '{name}' of endpoint '{endpoint}' is {state}: {deployment.get('reason') or 'no reason given'}. "
        f"Its scoring server's output: `cible online-deployment get-logs -n {name} -e {endpoint}{local}`",
        details={"name": name, "endpoint_name": endpoint, "provisioning_state": state,
                 "reason": deployment.get("reason")})


class OnlineEndpointOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def begin_create_or_update(self, endpoint: Any, local: bool = False, *, update: bool = True) -> Done:
        """Create the endpoint, or (`update`, Azure's way) replace the spec of the one of that name;
        `update=False` refuses one that exists (409, as `cible online-endpoint create`). `.result()`
        is the endpoint: it provisions nothing itself, so it is ready at once."""
        body = endpoint_spec(endpoint)
        params = {**_local(local), **({"update": "true"} if update else {})}
        return Done(Resource(self._client.json("PUT", f"/online-endpoints/{body['name']}", params=params,
                                               json={"spec": body})))

    def begin_update(self, name: str, *, endpoint: Any = None, traffic: dict[str, int] | None = None,
                     mirror_traffic: dict[str, int] | None = None, local: bool = False) -> Done:
        """cible's `online-endpoint update`: a new spec and/or a traffic split and/or a mirror
        (what is not given is kept). `.result()` is the updated endpoint."""
        body: dict[str, Any] = {}
        if endpoint is not None:
            body["spec"] = endpoint_spec(endpoint)
        if traffic is not None:
            body["traffic"] = dict(traffic)
        if mirror_traffic is not None:
            body["mirror_traffic"] = dict(mirror_traffic)
        return Done(Resource(self._client.json("PATCH", f"/online-endpoints/{name}", params=_local(local), json=body)))

    def get(self, name: str, local: bool = False) -> Resource:
        return Resource(self._client.json("GET", f"/online-endpoints/{name}", params=_local(local)))

    def list(self, local: bool = False) -> list[Resource]:
        return [Resource(e) for e in self._client.json("GET", "/online-endpoints", params=_local(local))["value"]]

    def begin_delete(self, name: str, local: bool = False) -> DeletePoller:
        """Delete the endpoint and its deployments: `.result(timeout)` waits until their replicas
        have stopped and it is gone."""
        self._client.request("DELETE", f"/online-endpoints/{name}", params=_local(local))
        where = "local endpoint" if local else "online endpoint"
        return DeletePoller(lambda: self.get(name, local=local), f"{where} '{name}'")

    def get_keys(self, name: str) -> Resource:
        """`{"primaryKey", "secondaryKey"}` (auth_mode key) or a fresh token: `{"accessToken",
        "expiryTimeUtc", "refreshAfterTimeUtc", "tokenType"}` (aml_token)."""
        return Resource(self._client.json("POST", f"/online-endpoints/{name}/credentials"))

    def begin_regenerate_keys(self, name: str, key_type: str = "primary") -> Done:
        self._client.request("POST", f"/online-endpoints/{name}/regenerate-keys", json={"key_type": key_type})
        return Done(None)

    def invoke(self, endpoint_name: str, request_file: str | Path | None = None, deployment_name: str | None = None,
               local: bool = False, *, timeout: float = INVOKE_TIMEOUT_S, **_: Any) -> str:
        """POST the request file's bytes to the endpoint's scoring URI (with a key or token unless
        local); the response body. A non-2xx answer raises InvokeError with its status and body."""
        if request_file is None:
            from cible.core.errors import InvalidRequestError

            raise InvalidRequestError("request_file: give the file whose content is the request body",
                                      details={"field": "request_file"})
        path = Path(request_file).expanduser()
        try:
            content = path.read_bytes()
        except OSError as exc:
            from cible.core.errors import InvalidRequestError

            raise InvalidRequestError(f"request_file: cannot read '{request_file}': {exc.strerror or exc}",
                                      details={"field": "request_file"}) from None
        response = self.invoke_raw(endpoint_name, content, deployment_name=deployment_name, local=local,
                                   timeout=timeout)
        if not 200 <= response.status_code < 300:
            reason = response.headers.get("ms-azureml-model-error-reason")
            raise InvokeError(
                f"endpoint '{endpoint_name}' answered {response.status_code} {response.reason_phrase}"
                f"{f' ({reason})' if reason else ''}: {response.text.strip() or '(empty body)'}",
                details={"status": response.status_code, "body": response.text,
                         "deployment": response.headers.get("azureml-model-deployment")})
        return response.text

    def invoke_raw(self, endpoint_name: str, content: bytes, *, deployment_name: str | None = None,
                   local: bool = False, timeout: float = INVOKE_TIMEOUT_S) -> Any:
        """The scoring URI's whole answer (an httpx.Response) to `content`, whatever its status."""
        import httpx  # loaded by cible.client.http already, with its start-up fix

        endpoint = self.get(endpoint_name, local=local)
        uri = endpoint.get("scoring_uri")
        if not uri:
            where = " --local" if local else ""
            raise CibleError(f"endpoint '{endpoint_name}' has no scoring URI yet (no replica serves it); "
                             f"`cible online-deployment list -e {endpoint_name}{where}` says how its deployments are",
                             details={"name": endpoint_name})
        headers = {"Content-Type": "application/json"}
        if not local:
            keys = self.get_keys(endpoint_name)
            headers["Authorization"] = f"Bearer {keys.get('primaryKey') or keys.get('accessToken')}"
        if deployment_name:
            headers["azureml-model-deployment"] = deployment_name
        try:
            return httpx.post(uri, content=content, headers=headers, timeout=timeout, verify=tls_verify(uri))
        except httpx.TransportError as exc:
            from cible.core.errors import ServerUnavailableError

            raise ServerUnavailableError(f"cannot reach endpoint '{endpoint_name}' at {uri}: {exc}") from None


class OnlineDeploymentOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def begin_create_or_update(self, deployment: Any, local: bool = False, all_traffic: bool = False, *,
                               update: bool = True, **_: Any) -> DeploymentPoller:
        """Create the deployment (or, `update`, replace the spec of the one of that name; `update=False`
        refuses one that exists). `all_traffic` gives it 100 % of its endpoint's traffic. `.result()`
        waits until its replicas are ready (Succeeded) or raises DeploymentFailedError."""
        spec = deployment_spec(self._client, deployment, local=local)
        params = {**_local(local), **({"update": "true"} if update else {})}
        answer = self._client.json("PUT", self._path(spec["endpoint_name"], spec["name"]), params=params,
                                   json={"spec": spec, "all_traffic": bool(all_traffic)})
        return DeploymentPoller(self, Resource(answer), local)

    def begin_update(self, name: str, endpoint_name: str, *, deployment: Any = None, set: list[str] | None = None,  # noqa: A002
                     local: bool = False) -> DeploymentPoller:
        """cible's `online-deployment update`: a whole new spec, or `set` assignments (`["instance_count=2"]`,
        `az ml online-deployment update --set`) applied by the server to the stored spec."""
        if deployment is not None:
            body: dict[str, Any] = {"spec": deployment_spec(self._client, deployment, local=local)}
        else:
            body = {"set": list(set or [])}
        answer = self._client.json("PATCH", self._path(endpoint_name, name), params=_local(local), json=body)
        return DeploymentPoller(self, Resource(answer), local)

    def get(self, name: str, endpoint_name: str, local: bool = False) -> Resource:
        return Resource(self._client.json("GET", self._path(endpoint_name, name), params=_local(local)))

    def list(self, endpoint_name: str, local: bool = False) -> list[Resource]:
        answer = self._client.json("GET", f"/online-endpoints/{endpoint_name}/deployments", params=_local(local))
        return [Resource(d) for d in answer["value"]]

    def begin_delete(self, name: str, endpoint_name: str, local: bool = False) -> DeletePoller:
        self._client.request("DELETE", self._path(endpoint_name, name), params=_local(local))
        return DeletePoller(lambda: self.get(name, endpoint_name, local=local),
                            f"deployment '{name}' of endpoint '{endpoint_name}'")

    def get_logs(self, name: str, endpoint_name: str, lines: int = 5000, local: bool = False,
                 container_type: str | None = None) -> str:  # noqa: ARG002 (Azure's: one container here)
        """The last `lines` lines of the scoring server's output (its newest ready replica's)."""
        response = self._client.request("GET", f"{self._path(endpoint_name, name)}/logs",
                                        params={**_local(local), "lines": lines})
        return response.text

    def recommend_size(self, name: str, endpoint_name: str, request_file: str | Path | None = None, *,
                       request: Any = None, duration_s: float = 10, concurrency: int = 4,
                       target_rps: float | None = None, local: bool = False) -> Resource:
        """cible's sizing advice: the server loads one ready replica with the request (a file's content, or
        `request`: a JSON object or string) at `concurrency` for `duration_s` seconds, measures its peak
        memory and requests/s, and answers the smallest catalog size with 150 % of that memory
        (`recommended_instance_type`, `memory_gb`) and, for `target_rps`, the replicas (`instance_count`),
        with the numbers and an `explanation`."""
        if request_file is not None:
            path = Path(request_file).expanduser()
            try:
                request = path.read_text(encoding="utf-8")  # sent as it is: the replica gets the file's bytes
            except (OSError, UnicodeDecodeError) as exc:
                from cible.core.errors import InvalidRequestError

                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise InvalidRequestError(f"request_file: cannot read '{request_file}' as text: {why}",
                                          details={"field": "request_file"}) from None
        if request is None:
            from cible.core.errors import InvalidRequestError

            raise InvalidRequestError("request_file: give the file whose content is the scoring request",
                                      details={"field": "request_file"})
        body: dict[str, Any] = {"request": request, "duration_s": duration_s, "concurrency": concurrency}
        if target_rps is not None:
            body["target_rps"] = target_rps
        # The server answers after the load: its duration, the requests' own timeouts, then some.
        timeout = float(duration_s) + RECOMMEND_SLACK_S
        return Resource(self._client.json("POST", f"{self._path(endpoint_name, name)}:recommend-size",
                                          params=_local(local), json=body, timeout=timeout))

    @staticmethod
    def _path(endpoint: str, name: str) -> str:
        return f"/online-endpoints/{endpoint}/deployments/{name}"


# ---- request bodies ---------------------------------------------------------------------------


def endpoint_spec(endpoint: Any) -> dict[str, Any]:
    """An endpoint (a loaded spec, or a dict such as `get` returns) as the API's `spec`. Traffic
    and mirror are sent only when the spec sets them: an update then keeps the endpoint's split."""
    if isinstance(endpoint, dict):
        data = {k: v for k, v in endpoint.items() if k not in ENDPOINT_READ_ONLY + SCHEMA_KEYS}
        from cible.core.specs.azureml.loader import load_spec_dict

        entity = load_spec_dict(copy.deepcopy(data), "online-endpoint", source="the endpoint given").entity
    else:
        entity = endpoint
    body = entity.model_dump(mode="json", exclude_none=True, by_alias=False)
    for key in ("traffic", "mirror_traffic"):
        if key not in entity.model_fields_set:
            body.pop(key, None)
    return _without(body, SCHEMA_KEYS)


def deployment_spec(client: WorkspaceClient, deployment: Any, *, local: bool = False) -> dict[str, Any]:
    """A deployment (a loaded spec, or a dict: its paths relative to the working folder) as the API's
    `spec`: local paths uploaded (a workspace deployment) or kept absolute (local), the conda file inlined."""
    if isinstance(deployment, dict):
        from cible.core.specs.azureml.loader import load_spec_dict

        data = {k: v for k, v in deployment.items() if k not in DEPLOYMENT_READ_ONLY + SCHEMA_KEYS}
        deployment = load_spec_dict(copy.deepcopy(data), "online-deployment", base_dir=Path.cwd(),
                                    source="the deployment given").entity
    body = _without(deployment.model_dump(mode="json", exclude_none=True, by_alias=False), SCHEMA_KEYS)
    if isinstance(body.get("environment"), dict):
        body["environment"] = _inline_environment(body["environment"])
    if not local:
        _upload_local_paths(client, body)
    return body


def _upload_local_paths(client: WorkspaceClient, body: dict[str, Any]) -> None:
    from cible.core.specs.azureml.refs import classify_path, strip_file_prefix
    from cible.sdk.uploads import upload_path  # pathspec: only when something is uploaded

    code = body.get("code_configuration") or {}
    if isinstance(code.get("code"), str) and classify_path(code["code"]) == "local":
        # A folder's snapshot holds its content at its root: scoring_script is relative to it.
        code["code"] = upload_path(client, strip_file_prefix(code["code"]), "code_configuration.code")
    model = body.get("model")
    if isinstance(model, dict) and isinstance(model.get("path"), str) and classify_path(model["path"]) == "local":
        # As Azure registers an inline model: its basename is kept under the model's folder.
        body["model"] = {**_without(model, SCHEMA_KEYS),
                         "path": upload_path(client, strip_file_prefix(model["path"]), "model.path", keep_name=True)}


def _inline_environment(env: dict[str, Any]) -> dict[str, Any]:
    from cible.core.errors import InvalidSpecError
    from cible.sdk.assets import inline_conda_file

    try:
        return inline_conda_file(_without(env, SCHEMA_KEYS))
    except InvalidSpecError as exc:  # named where it is in the deployment
        raise InvalidSpecError(f"environment.{exc.message}", details={"field": "environment.conda_file"}) from None


def _without(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}
