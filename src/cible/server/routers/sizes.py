"""/api/v1/sizes: the VM size catalog (`cible compute list-sizes`, `cible compute show-size`)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Query, Request

from cible.core import catalog
from cible.core.clock import SYSTEM_CLOCK
from cible.core.errors import InvalidSpecError, NotFoundError
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.misc import SizeList, VmSize

router = APIRouter(prefix="/api/v1", tags=["catalog"], default_response_class=JSON)


def _today(request: Request) -> date:
    return getattr(request.app.state, "clock", SYSTEM_CLOCK).now().date()


@router.get("/sizes", **answers(SizeList),
            summary="VM sizes, like `az ml compute list-sizes`, with cible's shape, GPU and retirement fields")
def list_sizes(
    request: Request,
    compute_type: str | None = Query(None, alias="type", description="amlcompute or computeinstance"),
    gpu: bool | None = Query(None, description="true: GPU sizes only; false: CPU sizes only"),
    include_retired: bool = Query(False, description="also list sizes whose series has retired"),
) -> dict[str, Any]:
    sizes = catalog.list_sizes(compute_type, gpu, include_retired, today=_today(request))
    return {"value": [catalog.to_dict(s) for s in sizes], "count": len(sizes)}


@router.get("/sizes/{name}", summary="One VM size", **answers(VmSize))
def get_size(name: str) -> dict[str, Any]:
    try:
        return catalog.to_dict(catalog.get_size(name))
    except InvalidSpecError as exc:
        raise NotFoundError(exc.message, details=exc.details) from exc
