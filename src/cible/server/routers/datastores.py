"""/api/v1/datastores: the workspace's datastores, and files put at a datastore path.

Who may call them is decided before a route runs (auth.py, cible.core.roles): reading needs
`assets/read`, an upload `assets/write` (as the blobs and snapshots it comes from); node and run
tokens reach none of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from cible.server.routers.paging import DEFAULT_TOP, Skip, Top
from cible.server.routers.responses import JSON, answers
from cible.server.schemas.datastores import Datastore, DatastorePage, DatastoreUpload
from cible.server.services.datastores import DatastoreService
from cible.server.services.paging import slice_page

router = APIRouter(prefix="/api/v1", tags=["datastores"], default_response_class=JSON)


class UploadRequest(BaseModel):
    snapshot: str = Field(..., description="cible://snapshots/<id>[/<path>] (POST /snapshots): a file or a folder")
    dest: str = Field(..., description="the path in the datastore: a file src lands at dest, or under dest when "
                                       "it ends with '/'; a folder's files land under dest, keeping their tree")
    overwrite: bool = Field(False, description="replace files that exist already (else 409 naming them)")


def _datastores(request: Request) -> DatastoreService:
    return DatastoreService(request.app.state.settings.paths)  # stateless: the workspace's folders


@router.get("/datastores", summary="The workspace's datastores", **answers(DatastorePage))
def list_datastores(request: Request, skip: Skip = 0, top: Top = DEFAULT_TOP) -> dict[str, Any]:
    return slice_page(_datastores(request).list(), skip, top)


@router.get("/datastores/{name}", summary="One datastore: its type and folder", **answers(Datastore))
def get_datastore(name: str, request: Request) -> dict[str, Any]:
    return _datastores(request).get(name)


@router.post("/datastores/{name}/paths:upload",
             summary="Copy an uploaded snapshot's files to a path of the datastore (`cible datastore upload`)",
             **answers(DatastoreUpload))
def upload(name: str, body: UploadRequest, request: Request) -> dict[str, Any]:
    return _datastores(request).upload(name, body.snapshot, body.dest, overwrite=body.overwrite)
