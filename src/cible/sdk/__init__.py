"""The Python SDK: `from cible import MLClient, load_job, command, Input, Output`.

Builders (which load pydantic and the YAML loader) are imported on first use, so
commands that only read jobs start fast.
"""

from __future__ import annotations

from typing import Any

from cible.sdk.client import MLClient

__all__ = ["MLClient", "load_job", "command", "Input", "Output"]


def __getattr__(name: str) -> Any:
    if name in ("load_job", "command", "Input", "Output"):
        from cible.sdk import builders

        return getattr(builders, name)
    raise AttributeError(f"module 'cible.sdk' has no attribute {name!r}")
