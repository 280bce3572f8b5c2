"""client.environments / client.data / client.models: versioned assets, as azure-ai-ml's operations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.core.errors import InvalidSpecError
from cible.sdk.downloads import download_listed, segment
from cible.sdk.resources import ListViewType, Resource, view_params


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
        """One version; `label="latest"` (or neither) is the newest version not archived."""
        return Resource(self._client.json("GET", f"/{self._kind}/{name}/versions/{_ref(version, label)}"))

    def list(self, name: str | None = None, *,
             list_view_type: ListViewType | str = ListViewType.ACTIVE_ONLY) -> list[Resource]:
        """`name`'s versions, or the latest version of every asset; archived ones as `list_view_type` asks."""
        path = f"/{self._kind}/{name}/versions" if name else f"/{self._kind}"
        return [Resource(a) for a in self._client.items(path, view_params(list_view_type))]

    def archive(self, name: str, version: str | None = None, label: str | None = None) -> Resource:
        """Archive one version, or with neither version nor label the whole asset (every version, and
        those registered later), as azure-ai-ml: hidden from `list` and from `latest`, still got by version."""
        return self._archive_or_restore("archive", name, version, label)

    def restore(self, name: str, version: str | None = None, label: str | None = None) -> Resource:
        """Restore an archived version, or the whole asset. A version of an asset archived as a whole is
        restored with the whole asset only (Azure's rule). A label is refused by the server: 'latest' is
        the newest version not archived, so it never names an archived one; give the version."""
        return self._archive_or_restore("restore", name, version, label)

    def _archive_or_restore(self, verb: str, name: str, version: str | None, label: str | None) -> Resource:
        if version is None and label is None:
            return Resource(self._client.json("POST", f"/{self._kind}/{name}:{verb}"))
        return Resource(self._client.json("POST", f"/{self._kind}/{name}/versions/{_ref(version, label)}:{verb}"))


class ModelOperations(AssetOperations):
    """client.models: AssetOperations and `download`."""

    def __init__(self, client: WorkspaceClient) -> None:
        super().__init__(client, "models", "model")

    def download(self, name: str, version: str | None = None, download_path: str | Path = ".", *,
                 label: str | None = None) -> list[Path]:
        """Write the model's files under `download_path/<name>/` as `az ml model download` does: its
        path's basename kept (`<download_path>/<name>/<basename>/...`). Returns the files written."""
        version = self.get(name, version, label)["version"]  # one version for the listing and every file
        return download_listed(self._client, f"/models/{segment(name)}/versions/{segment(version)}/files",
                               download_path)


def _ref(version: str | None, label: str | None) -> str:
    if version is not None and label is not None:
        raise InvalidSpecError("version and label cannot both be given; pass one (label 'latest': the newest "
                               "version not archived)", details={"field": "label"})
    return str(version) if version is not None else label or "latest"
