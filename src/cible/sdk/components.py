"""client.components: registered components (command, pipeline and spark), as azure-ai-ml's ComponentOperations.

A component version is immutable like any asset: registering the same version again with the same
content is harmless, with other content a conflict. Its code (with its additional_includes) is
uploaded as a snapshot first, so a job using it needs nothing from the registering machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.core.errors import InvalidSpecError
from cible.sdk.assets import AssetOperations
from cible.sdk.resources import Resource


def load_component(source: str | Path, *, set_overrides: tuple[str, ...] | list[str] = ()) -> Any:
    """A component YAML file loaded (azure-ai-ml's `load_component`): CommandComponent,
    PipelineComponent or SparkComponent, its local paths absolute and its local component files inlined."""
    from cible.core.specs.azureml.loader import load_spec

    return load_spec(source, "component", set_overrides=set_overrides).entity


class ComponentOperations(AssetOperations):
    """get / list / archive / restore as every asset; create_or_update uploads the code first."""

    def __init__(self, client: WorkspaceClient) -> None:
        super().__init__(client, "components", "component")

    def create_or_update(self, component: Any, version: str | int | None = None) -> Resource:  # type: ignore[override]
        """Register `component`: a loaded CommandComponent, PipelineComponent or SparkComponent, a YAML file's path,
        or a dict (its local paths relative to the working folder). `version` wins over the spec's;
        with neither the next version is given (1, 2, ...)."""
        from cible.sdk.job_bodies import component_body

        body = component_body(self._client, _loaded(component))
        if version is not None:
            body["version"] = str(version)
        name = body.get("name")
        if not name:
            raise InvalidSpecError("name: a component needs a name to be registered", details={"field": "name"})
        if body.get("version") is None:
            return Resource(self._client.json("POST", f"/components/{name}/versions", json=body))
        # Azure's YAML writes versions as numbers (`version: 1`); they are text (`01` is not `1`).
        body["version"] = str(body["version"])
        return Resource(self._client.json("PUT", f"/components/{name}/versions/{body['version']}", json=body))


def _loaded(component: Any) -> Any:
    """A path or a dict through the loader (checks, absolute paths, inlined files); a model as it is."""
    from cible.core.specs.azureml.loader import load_spec, load_spec_dict

    if isinstance(component, (str, Path)):
        return load_spec(component, "component").entity
    if isinstance(component, dict):
        import copy

        return load_spec_dict(copy.deepcopy(component), "component", base_dir=Path.cwd(),
                              source="the component given").entity
    return component
