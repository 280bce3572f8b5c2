"""Base model and small coercion helpers shared by every spec model.

Field names follow Azure's YAML exactly so a spec round-trips through
``model_dump(by_alias=True)`` unchanged.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def scalar_to_str(value: Any) -> Any:
    """Text form of a YAML scalar, the way it would appear in a shell command.

    PyYAML (YAML 1.1) turns ``yes``/``False`` into bools, ``2022-01-01`` into
    dates and ``1`` into ints; Azure's schemas coerce these back to strings
    where the field is a string. ``str(True)`` is ``"True"`` like the SDK.
    Non-scalars are returned unchanged so pydantic reports the type error.
    """
    if value is None:
        return ""
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, (bool, int, float, str)):
        return str(value)
    return value


def _optional_str(value: Any) -> Any:
    """Like :func:`scalar_to_str` but keeps ``None`` (field left unset)."""
    return None if value is None else scalar_to_str(value)


def _str_map(value: Any) -> Any:
    """Coerce a mapping's keys and scalar values to strings (tags, env vars).

    An empty YAML value (``tags:``) is ``None``; treat it as an empty map.
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): scalar_to_str(v) for k, v in value.items()}
    return value


def _lower(value: Any) -> Any:
    """Azure matches most enum-like values case-insensitively (``Standard``, ``AmlCompute``)."""
    return value.lower() if isinstance(value, str) else value


# A string field that also accepts the YAML 1.1 scalars Azure would stringify
# (``version: 1`` -> ``"1"``, ``start_time: 2021-03-10T21:21:07`` -> ISO text).
OptStr = Annotated[str | None, BeforeValidator(_optional_str)]
StrMap = Annotated[dict[str, str], BeforeValidator(_str_map)]
LowerStr = BeforeValidator(_lower)


class SpecModel(BaseModel):
    """Root of every spec model: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # An editor hint in Azure's YAML; accepted with any value and otherwise ignored.
    schema_: Annotated[str | None, BeforeValidator(_optional_str)] = Field(None, alias="$schema")
