"""Datastores and what an upload to one wrote."""

from __future__ import annotations

from pydantic import Field

from cible.server.schemas.common import Envelope, Page


class Datastore(Envelope):
    name: str = Field(description="its name: azureml://datastores/<name>/paths/<path> in a job")
    type: str = Field(description="local: a folder of the workspace server's machine")
    is_default: bool = Field(description="the workspace's default datastore (job outputs go there)")
    root: str = Field(description="its folder on the server's machine")
    uri: str = Field(description="azureml://datastores/<name>/paths/: prefix a path with it")


DatastorePage = Page[Datastore]


class DatastoreUpload(Envelope):
    datastore: str = Field(description="the datastore written to")
    dest: str = Field(description="the path written: a file's, or a folder's (ending with /)")
    uri: str = Field(description="azureml://datastores/<datastore>/paths/<dest>: a job's input path")
    count: int = Field(description="how many files were written")
    bytes: int = Field(description="how many bytes were written")
    files: list[str] = Field(description="the files written, as paths in the datastore")
