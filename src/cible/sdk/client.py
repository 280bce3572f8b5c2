"""MLClient: the workspace, local (auto-started) or remote, as azure-ai-ml's MLClient."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.sdk.assets import AssetOperations
from cible.sdk.jobs import JobOperations
from cible.sdk.resources import Resource
from cible.workspace import WorkspacePaths, default_home


class ComputeOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def get(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"/computes/{name}"))

    def list(self) -> list[Resource]:
        return [Resource(c) for c in self._client.json("GET", "/computes")["value"]]

    def list_sizes(self, *, type: str | None = None, gpu: bool | None = None,  # noqa: A002 (Azure's name)
                   include_retired: bool = False) -> list[Resource]:
        params = {k: v for k, v in {"type": type, "gpu": gpu, "include_retired": include_retired}.items() if v is not None}
        return [Resource(s) for s in self._client.json("GET", "/sizes", params=params)["value"]]

    def show_size(self, name: str) -> Resource:
        return Resource(self._client.json("GET", f"/sizes/{name}"))


class MLClient:
    """`MLClient()` is the local workspace ($CIBLE_HOME); `MLClient(url=…, token=…)` a remote one.

    Azure's positional arguments (credential, subscription, resource group,
    workspace) are accepted and ignored, so Azure scripts construct it unchanged.
    """

    def __init__(self, *azure_args: Any, url: str | None = None, token: str | None = None,
                 home: str | Path | None = None, **azure_kwargs: Any) -> None:
        url = url or os.environ.get("CIBLE_URL")
        token = token or os.environ.get("CIBLE_TOKEN")
        if url:
            if not token:
                from cible.core.errors import UnauthorizedError

                raise UnauthorizedError(f"a token is needed for {url}: pass token=… or set CIBLE_TOKEN")
        else:
            from cible.client.local import ensure_local_server

            self.paths = WorkspacePaths(Path(home).expanduser().resolve() if home else default_home())
            url, token = ensure_local_server(self.paths)
        self._client = WorkspaceClient(url, token)
        self.jobs = JobOperations(self._client)
        self.compute = ComputeOperations(self._client)
        self.environments = AssetOperations(self._client, "environments", "environment")
        self.data = AssetOperations(self._client, "data", "data")
        self.models = AssetOperations(self._client, "models", "model")

    @property
    def url(self) -> str:
        return self._client.url

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MLClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
