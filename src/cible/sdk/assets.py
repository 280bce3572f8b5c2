"""client.environments / client.data / client.models: versioned assets, as azure-ai-ml's operations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.core.errors import InvalidSpecError
from cible.sdk.resources import Resource


def inline_conda_file(env: dict[str, Any]) -> dict[str, Any]:
    """The server builds environments from their content: send a conda file's text, not its path."""
    conda = env.get("conda_file")
    if not isinstance(conda, str):
        return env
    import yaml

    try:
        content = yaml.safe_load(Path(conda).read_text())
    except FileNotFoundError:
        raise InvalidSpecError(f"conda_file: '{conda}' does not exist", details={"field": "conda_file"}) from None
    except yaml.YAMLError as exc:
        raise InvalidSpecError(f"conda_file: '{conda}' is not valid YAML: {exc}", details={"field": "conda_file"}) from None
    if not isinstance(content, dict):
        raise InvalidSpecError(f"conda_file: '{conda}' must hold a mapping (name, channels, dependencies)",
                               details={"field": "conda_file"})
    return {**env, "conda_file": content}


class AssetOperations:
    """One of environments, data, models (`kind` is the API's URL segment)."""

    def __init__(self, client: WorkspaceClient, kind: str, spec_kind: str) -> None:
        self._client = client
        self._kind = kind
        self._spec_kind = spec_kind

    def create_or_update(self, asset: Any) -> Resource:
        from cible.core.specs.azureml import refs

        body = asset if isinstance(asset, dict) else asset.model_dump(mode="json", exclude_none=True)
        body = {k: v for k, v in body.items() if k not in ("schema_", "$schema")}
        name, version = body.get("name"), body.get("version")
        if not name:
            raise InvalidSpecError(f"name: a {self._spec_kind} needs a name to be registered", details={"field": "name"})
        if self._spec_kind == "environment":
            body = inline_conda_file(body)
        elif body.get("path") and refs.classify_path(body["path"]) == "local":
            from cible.sdk.uploads import upload_path

            body["path"] = upload_path(self._client, body["path"], "path", keep_name=True)
        if version is None:
            return Resource(self._client.json("POST", f"/{self._kind}/{name}/versions", json=body))
        return Resource(self._client.json("PUT", f"/{self._kind}/{name}/versions/{version}", json=body))

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Resource:
        return Resource(self._client.json("GET", f"/{self._kind}/{name}/versions/{version or label or 'latest'}"))

    def list(self, name: str | None = None) -> list[Resource]:
        path = f"/{self._kind}/{name}/versions" if name else f"/{self._kind}"
        return [Resource(a) for a in self._client.items(path)]
