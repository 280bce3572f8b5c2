"""Resources returned by the SDK: dicts that also read as attributes (job.name, job.status)."""

from __future__ import annotations

from enum import Enum
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


class ListViewType(str, Enum):
    """Which items a list shows, as azure-ai-ml's `ListViewType` (`list(list_view_type=...)`)."""

    ACTIVE_ONLY = "ActiveOnly"
    ARCHIVED_ONLY = "ArchivedOnly"
    ALL = "All"


def view_params(list_view_type: ListViewType | str) -> dict[str, bool]:
    """A list view type (azure-ai-ml's enum, or its value) as the API's query parameters."""
    value = getattr(list_view_type, "value", list_view_type)
    if value not in {v.value for v in ListViewType}:
        from cible.core.errors import InvalidRequestError

        raise InvalidRequestError(f"list_view_type: '{value}' is not a list view type; use one of "
                                  f"{', '.join(v.value for v in ListViewType)}", details={"field": "list_view_type"})
    return {"include_archived": value == ListViewType.ALL.value,
            "archived_only": value == ListViewType.ARCHIVED_ONLY.value}
