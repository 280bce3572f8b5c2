"""MLClient: the workspace, local (auto-started) or remote, as azure-ai-ml's MLClient."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.sdk.assets import AssetOperations, ModelOperations
from cible.sdk.batch_endpoints import BatchDeploymentOperations, BatchEndpointOperations
from cible.sdk.components import ComponentOperations
from cible.sdk.datastores import DatastoreOperations
from cible.sdk.endpoints import OnlineDeploymentOperations, OnlineEndpointOperations
from cible.sdk.jobs import JobOperations
from cible.sdk.resources import Done, Resource
from cible.sdk.users import TokenOperations, UserOperations
from cible.workspace import WorkspacePaths, default_home


class ComputeOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def get(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"/computes/{name}"))

    def list(self) -> list[Resource]:
        return [Resource(c) for c in self._client.items("/computes")]

    def begin_create_or_update(self, compute: Any) -> Done:
        """Register a compute (cluster or attached) from its Azure ML model or dict; `.result()` is it."""
        body = compute if isinstance(compute, dict) else compute.model_dump(mode="json", exclude_none=True)
        body = {k: v for k, v in body.items() if k not in ("schema_", "$schema")}
        return Done(Resource(self._client.json("PUT", f"/computes/{body['name']}", json=body)))

    def begin_update(self, name: str, **changes: Any) -> Done:
        """A cluster's min_instances, max_instances, idle_time_before_scale_down (applied live)."""
        return Done(Resource(self._client.json("PATCH", f"/computes/{name}", json=changes)))

    def begin_delete(self, name: str) -> Done:
        """Delete a compute; a cluster with nodes drains first (its result is the Deleting cluster)."""
        response = self._client.request("DELETE", f"/computes/{name}")
        return Done(Resource(response.json()) if response.status_code == 202 else None)

    def replace_host_key(self, name: str, expected_fingerprint: str | None = None) -> Resource:
        """Pin the host key an attached machine offers now in place of the pinned one (cible's own;
        after a reinstall): checked against `expected_fingerprint` when given, else trusted as offered."""
        body = {"expected_host_key_fingerprint": expected_fingerprint} if expected_fingerprint else {}
        return Resource(self._client.json("POST", f"/computes/{name}:replace-host-key", json=body))

    def set_credential(self, name: str, username: str, ssh_private_key_file: str | None = None, *,
                       use_ssh_agent: bool = False) -> Resource:
        """Your own login to Slurm compute `name`'s login host (cible's own): the jobs you submit there
        run as `username`. The key is a file on the workspace server's machine: its path is stored,
        never the key; or `use_ssh_agent` logs in with the server's ssh-agent. Checked by logging in."""
        body = {"username": username, "ssh_private_key_file": ssh_private_key_file, "use_ssh_agent": use_ssh_agent}
        return Resource(self._client.json("PUT", f"/computes/{name}/credentials/me", json=body))

    def remove_credential(self, name: str) -> None:
        """Forget your own login to Slurm compute `name` (your jobs there are then refused at submit)."""
        self._client.request("DELETE", f"/computes/{name}/credentials/me")

    def list_credentials(self, name: str) -> list[Resource]:
        """Who has a login to Slurm compute `name`, and as which user (never a key)."""
        return [Resource(c) for c in self._client.items(f"/computes/{name}/credentials")]

    def preempt_node(self, name: str, node_id: str) -> Resource:
        """Evict a node of a low-priority cluster now, as Azure takes back a low-priority VM (drills, tests)."""
        return Resource(self._client.json("POST", f"/computes/{name}/nodes/{node_id}:preempt"))

    def list_nodes(self, name: str) -> list[Resource]:
        return [Resource(n) for n in self._client.items(f"/computes/{name}/nodes")]

    def begin_start(self, name: str) -> Done:
        """Start a compute instance (its node comes up on the reconciler's next pass)."""
        return Done(Resource(self._client.json("POST", f"/computes/{name}:start")))

    def begin_stop(self, name: str) -> Done:
        return Done(Resource(self._client.json("POST", f"/computes/{name}:stop")))

    def begin_restart(self, name: str) -> Done:
        return Done(Resource(self._client.json("POST", f"/computes/{name}:restart")))

    def snooze(self, name: str, minutes: float) -> Resource:
        """Postpone a compute instance's idle shutdown by `minutes` (cible's own)."""
        return Resource(self._client.json("POST", f"/computes/{name}:snooze", json={"minutes": minutes}))

    def terminal(self, name: str) -> Resource:
        """Where a shell on a compute instance's node runs (its node, root and home)."""
        return Resource(self._client.json("POST", f"/computes/{name}:terminal"))

    def list_providers(self) -> list[Resource]:
        """The node providers the server knows (local, ray): usable or not, with why not and the fix."""
        return [Resource(p) for p in self._client.json("GET", "/computes:providers")["value"]]

    def list_usage(self) -> list[Resource]:
        """vCPU use against the workspace's quotas, as `az ml compute list-usage`."""
        return [Resource(u) for u in self._client.json("GET", "/computes:usage")["value"]]


    def list_sizes(self, *, type: str | None = None, gpu: bool | None = None,  # noqa: A002 (Azure's name)
                   include_retired: bool = False) -> list[Resource]:
        params = {k: v for k, v in {"type": type, "gpu": gpu, "include_retired": include_retired}.items() if v is not None}
        return [Resource(s) for s in self._client.json("GET", "/sizes", params=params)["value"]]

    def show_size(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"/sizes/{name}"))


class QuotaOperations:
    """The workspace's vCPU quotas (cible's own: Azure sets them per subscription)."""

    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def get(self) -> Resource:
        """The quotas and every increase request (the API pages those)."""
        return Resource(_whole(self._client.pages("/quotas"), "requests"))

    def set(self, scope: str, vcpus: int | None) -> Resource:
        self._client.json("PUT", f"/quotas/{scope}", json={"vcpus": vcpus})
        return self.get()  # the whole view, every request included, as `get` gives it

    def request(self, scope: str, vcpus: int, reason: str | None = None) -> Resource:
        return Resource(self._client.json("POST", f"/quotas/{scope}/requests", json={"vcpus": vcpus, "reason": reason}))

    def decide(self, request_id: int, approve: bool) -> Resource:
        return Resource(self._client.json("POST", f"/quota-requests/{request_id}:{'approve' if approve else 'deny'}"))

    def cost_report(self, by: str = "compute", since: str | None = None) -> Resource:
        params = {"by": by, **({"since": since} if since else {})}
        return Resource(_whole(self._client.pages("/costs", params, pin=("until",)), "lines"))


def _whole(pages: Iterator[dict[str, Any]], key: str) -> dict[str, Any]:
    """A paged answer made whole again: the first page's other fields, every page's items under `key`."""
    first: dict[str, Any] = {}
    items: list[Any] = []
    for page in pages:
        first = first or page
        items += page["value"]
    return {**{k: v for k, v in first.items() if k not in ("value", "count", "next_skip")}, key: items}


class MLClient:
    """`MLClient()` is the local workspace ($CIBLE_HOME); `MLClient(url=…, token=…)` a remote one.

    Azure's positional arguments (credential, subscription, resource group,
    workspace) are accepted and ignored, so Azure scripts construct it unchanged.
    """

    def __init__(self, *azure_args: Any, url: str | None = None, token: str | None = None,
                 home: str | Path | None = None, **azure_kwargs: Any) -> None:
        url = url or os.environ.get("CIBLE_URL")
        token = token or os.environ.get("CIBLE_TOKEN")
        if not token:  # `cible login`'s server and token: when no URL is named, or the one named is its
            from cible.client.login import saved_login

            login = saved_login(Path(home).expanduser().resolve() if home else default_home())
            if login is not None and (not url or url.rstrip("/") == login["url"].rstrip("/")):
                url, token = login["url"], login["token"]
        self.paths: WorkspacePaths | None = None  # the local workspace's, when it is the one used
        if url:
            if not token:
                from cible.core.errors import UnauthorizedError

                raise UnauthorizedError(f"a token is needed for {url}: pass token=… or set CIBLE_TOKEN")
        else:
            from cible.client.local import ensure_local_server

            self.paths = WorkspacePaths(Path(home).expanduser().resolve() if home else default_home())
            url, workspace_token = ensure_local_server(self.paths)
            token = token or workspace_token  # CIBLE_TOKEN: a user's own token on the local workspace too
        self._client = WorkspaceClient(url, token)
        self.jobs = JobOperations(self._client)
        self.compute = ComputeOperations(self._client)
        self.quotas = QuotaOperations(self._client)
        self.environments = AssetOperations(self._client, "environments", "environment")
        self.data = AssetOperations(self._client, "data", "data")
        self.models = ModelOperations(self._client)
        self.datastores = DatastoreOperations(self._client)
        self.components = ComponentOperations(self._client)
        self.online_endpoints = OnlineEndpointOperations(self._client)
        self.online_deployments = OnlineDeploymentOperations(self._client)
        self.batch_endpoints = BatchEndpointOperations(self._client)
        self.batch_deployments = BatchDeploymentOperations(self._client)
        self.users = UserOperations(self._client)
        self.tokens = TokenOperations(self._client)

    @property
    def url(self) -> str:
        return self._client.url

    def studio_link(self, page: str = "/jobs") -> str:
        """A sign-in link to the workspace's studio that opens `page`: it works once, within minutes
        (the server makes its code; the browser trades it for a session cookie)."""
        from urllib.parse import quote

        code = self._client.json("POST", "/studio:sign-in-code")["code"]
        page = page if page.startswith("/") else f"/{page}"
        return f"{self.url}/sign-in?code={quote(code, safe='')}&next={quote(page, safe='/')}"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MLClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
