"""The workspace's datastores (`cible datastore …`), and files put at a datastore path.

`upload` is cible's `az storage blob upload` / `upload-batch` for the workspace's own datastore:
the files go up as a snapshot (only the blobs the workspace lacks, as a job's code does), then the
server copies them to the path, where a job reads them as
`azureml://datastores/<datastore>/paths/<dest>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from cible.client.http import WorkspaceClient
from cible.core.errors import InvalidSpecError
from cible.sdk.uploads import upload_files, walk_snapshot


class DatastoreOperations:
    def __init__(self, client: WorkspaceClient) -> None:
        self._client = client

    def list(self) -> list[dict[str, Any]]:
        return self._client.items("/datastores")

    def get(self, name: str) -> dict[str, Any]:
        return self._client.json("GET", f"/datastores/{quote(name, safe='')}")

    def upload(self, name: str, src: str | Path, dest: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Put local file or folder `src` at path `dest` of datastore `name`.

        A file lands at `dest`, or at `dest/<its name>` when `dest` ends with `/`; a folder's files
        land under `dest`, keeping their tree (its own name is not kept, as `upload-batch
        --destination-path` does). `.amlignore` / `.gitignore` files are honoured, as for a job's
        code. Files there already are replaced only with `overwrite`. The answer says what was
        written: `count`, `bytes`, `files` and `uri`, the azureml:// path of `dest`.
        """
        path = Path(src)
        if not path.exists():
            raise InvalidSpecError(f"src: '{src}' does not exist", details={"field": "src"})
        files = walk_snapshot(path)
        if not files:
            raise InvalidSpecError(f"src: folder '{src}' has no files to upload (or its .amlignore / .gitignore "
                                   "leave none)", details={"field": "src"})
        snapshot = upload_files(self._client, files)
        if path.is_file():
            snapshot = f"{snapshot}/{path.name}"
        return self._client.json("POST", f"/datastores/{quote(name, safe='')}/paths:upload",
                                 json={"snapshot": snapshot, "dest": dest, "overwrite": overwrite})
