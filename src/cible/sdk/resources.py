"""Resources returned by the SDK: dicts that also read as attributes (job.name, job.status)."""

from __future__ import annotations

from typing import Any


class Resource(dict):
    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return Resource(value) if isinstance(value, dict) else value
