"""Environment, model and data asset specs (Azure reference §4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from cible.core.naming import ASSET_VERSION, AssetName

from .common import LowerStr, OptStr, SpecModel, StrMap

# `version: 1` in YAML is the text "1", then held to Azure's version rule (cible.core.naming).
Version = Annotated[OptStr, ASSET_VERSION.validator()]


class BuildContext(SpecModel):
    """Docker build context of an environment (``build:``)."""

    path: str
    dockerfile_path: str = "Dockerfile"


class Environment(SpecModel):
    """An environment YAML, registered or inline in a job."""

    name: AssetName | None = None
    version: Version = None
    description: str | None = None
    tags: StrMap = Field(default_factory=dict)
    image: str | None = None
    # A path to a conda YAML (resolved by the loader) or the conda mapping itself.
    conda_file: str | dict[str, Any] | None = None
    build: BuildContext | None = None
    os_type: Annotated[Literal["linux", "windows"], LowerStr] = "linux"
    inference_config: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_a_definition(self) -> Environment:
        # Azure wants image or build (and conda_file only on top of an image);
        # cible can build a venv from a conda file alone, so it is more lenient.
        if self.image is None and self.build is None and self.conda_file is None:
            raise ValueError("an environment needs at least one of 'image', 'build' or 'conda_file'")
        return self


class Model(SpecModel):
    """A model asset (``az ml model create``)."""

    name: AssetName
    version: Version = None
    description: str | None = None
    tags: StrMap = Field(default_factory=dict)
    path: str
    type: Literal["custom_model", "mlflow_model", "triton_model"] = "custom_model"
    flavors: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    stage: str | None = None


class Data(SpecModel):
    """A data asset (``az ml data create``)."""

    name: AssetName
    version: Version = None
    description: str | None = None
    tags: StrMap = Field(default_factory=dict)
    type: Literal["uri_file", "uri_folder", "mltable"] = "uri_folder"
    path: str
    properties: dict[str, Any] | None = None
