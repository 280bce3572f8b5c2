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


class Done:
    """What azure-ai-ml's `begin_*` calls return, for operations cible completes at once: `.result()`."""

    def __init__(self, value: Any = None) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:  # noqa: ARG002 (Azure's signature)
        return self._value

    def done(self) -> bool:
        return True
