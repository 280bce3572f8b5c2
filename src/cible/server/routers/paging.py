"""The query parameters of every list route: `skip` and `top` (at most MAX_TOP items a page)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from cible.server.services.paging import MAX_SKIP, MAX_TOP

Skip = Annotated[int, Query(ge=0, le=MAX_SKIP, description="items to pass over: the previous page's next_skip")]
Top = Annotated[int, Query(ge=1, le=MAX_TOP, description=f"the page's size, at most {MAX_TOP}")]
DEFAULT_TOP = 100
