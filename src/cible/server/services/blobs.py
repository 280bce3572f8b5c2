"""Content-addressed uploads: file blobs and the snapshot manifests that name them."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cible.core.errors import InvalidRequestError
from cible.core.safepaths import components
from cible.runfiles import blob_path

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MANIFEST_VERSION = 1


def check_digest(digest: str, field: str = "sha256") -> str:
    if not SHA256.fullmatch(digest):
        raise InvalidRequestError(f"{field}: '{digest}' is not a lowercase hex sha256 digest", details={"field": field})
    return digest


def manifest_bytes(files: dict[str, dict[str, Any]]) -> bytes:
    """Canonical JSON, so the same tree always has the same snapshot id."""
    return json.dumps({"version": MANIFEST_VERSION, "files": files}, sort_keys=True, separators=(",", ":")).encode()


class BlobService:
    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, digest: str) -> bool:
        return blob_path(self.root, digest).is_file()

    def missing(self, digests: Iterable[str]) -> list[str]:
        return [d for d in dict.fromkeys(digests) if not self.has(check_digest(d))]

    def put(self, digest: str, chunks: Iterable[bytes]) -> bool:
        """Store a blob; False when it was already there. The digest is verified."""
        check_digest(digest)
        target = blob_path(self.root, digest)
        if target.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{digest}.{os.getpid()}.{id(chunks)}.part")
        hasher = hashlib.sha256()
        try:
            with open(tmp, "wb") as fh:
                for chunk in chunks:
                    hasher.update(chunk)
                    fh.write(chunk)
            if hasher.hexdigest() != digest:
                raise InvalidRequestError(
                    f"the uploaded content hashes to {hasher.hexdigest()}, not {digest}", details={"field": "sha256"}
                )
            os.replace(tmp, target)  # never a half-written blob under its name
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def put_snapshot(self, files: dict[str, dict[str, Any]]) -> str:
        for rel, entry in files.items():
            components(rel, field="files")  # each becomes a file under the job's folder: nothing else
            check_digest(str(entry.get("sha256", "")), f"files.{rel}.sha256")
        absent = [rel for rel, e in files.items() if not self.has(e["sha256"])]
        if absent:
            raise InvalidRequestError(
                f"files: {len(absent)} file(s) were not uploaded yet, e.g. '{absent[0]}'; upload their blobs first",
                details={"missing": absent[:20]},
            )
        data = manifest_bytes(files)
        digest = hashlib.sha256(data).hexdigest()
        self.put(digest, [data])
        return digest
