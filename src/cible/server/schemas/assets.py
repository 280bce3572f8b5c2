"""Versioned assets (environments, data, models): a version, and a whole asset's archive state."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, Page
from cible.server.schemas.jobs import CreationContext


class Asset(Envelope):
    """One version of an asset: its YAML fields (passed through: an environment's image or
    conda_file, a model's or data asset's type and path, ...), then the server's."""

    name: str = Field(description="the asset's name")
    version: str = Field(description="this version")
    description: str | None = Field(None, description="its description")
    tags: dict[str, Any] | None = Field(None, description="its tags")
    type: str | None = Field(None, description="a model's or data asset's type (custom_model, uri_folder, ...)")
    path: str | None = Field(None, description="where a model's or data asset's content is (azureml:// URI)")
    image: str | None = Field(None, description="an environment's Docker image")
    is_archived: bool = Field(description="archived, itself or with its whole asset")
    creation_context: CreationContext = Field(description="when it was registered")


AssetPage = Page[Asset]


class AssetArchiveState(Envelope):
    """A whole asset archived or restored."""

    name: str = Field(description="the asset's name")
    is_archived: bool = Field(description="archived as a whole")
    version_count: int = Field(description="its versions")
