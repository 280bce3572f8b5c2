"""Which items a list shows, as Azure's `list_view_type`: active ones (the default), archived ones
only (`--archived-only`), or both (`--include-archived`)."""

from __future__ import annotations

from cible.core.errors import InvalidRequestError

ACTIVE = "ActiveOnly"
ARCHIVED = "ArchivedOnly"
ALL = "All"


def list_view(include_archived: bool = False, archived_only: bool = False) -> str:
    if include_archived and archived_only:
        raise InvalidRequestError(
            "archived_only: cannot be combined with include_archived (include_archived lists archived items "
            "with the active ones, archived_only lists the archived ones alone); pass one of them",
            details={"field": "archived_only"})
    return ALL if include_archived else ARCHIVED if archived_only else ACTIVE
