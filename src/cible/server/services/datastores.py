"""The workspace's datastores, and files put at a datastore path (`cible datastore upload`).

A datastore is a folder of the workspace (`WorkspacePaths.datastore`); a job reads
`azureml://datastores/<ds>/paths/<p>` from there (job_plans.PlanBuilder). An upload arrives as
a snapshot the client uploaded (blobs, then the manifest, as a job's code does); this service
copies the snapshot's files to the destination path.

Decisions:
- The datastores are those job_plans resolves: `workspaceblobstore` alone. Naming another one is a
  404 that lists them (a file put where no job can read it helps no one).
- `LocalUpload/` is cible's own (the blob store, the copies of registered assets): not a destination.
- Every check (the destination under the datastore, links, files already there) is made before a
  byte is written; nothing is overwritten unless asked. The files are copied into a staging folder
  first, then each renamed into place, so a file is whole or absent, never half-written, whatever
  kills the server.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

from cible.core.errors import ConflictError, InvalidRequestError, NotFoundError
from cible.core.safepaths import components, under
from cible.runfiles import blob_path, read_manifest
from cible.server.services.assets import datastore_uri
from cible.server.services.blobs import SHA256
from cible.server.services.job_plans import SNAPSHOT_SCHEME, parse_snapshot_uri
from cible.workspace import DEFAULT_DATASTORE, WorkspacePaths

DATASTORES = (DEFAULT_DATASTORE,)  # what job_plans resolves; a job reads nothing from another name
RESERVED = "LocalUpload"  # cible's uploads and assets' copies live there
STAGING = ".datastore-uploads"  # under RESERVED: a killed upload's leftovers are in no user's path
SHOWN_CONFLICTS = 5


class DatastoreService:
    def __init__(self, paths: WorkspacePaths) -> None:
        self.paths = paths

    # -- reads -----------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        return [self.get(name) for name in DATASTORES]

    def get(self, name: str) -> dict[str, Any]:
        root = self.root(name)
        return {"name": name, "type": "local", "is_default": name == DEFAULT_DATASTORE, "root": str(root),
                "uri": datastore_uri("", name)}

    def root(self, name: str) -> Path:
        if name not in DATASTORES:
            raise NotFoundError(f"datastore '{name}' does not exist in this workspace; its datastores: "
                                f"{', '.join(DATASTORES)}", details={"field": "name", "datastores": list(DATASTORES)})
        return self.paths.datastore(name)

    # -- the upload ------------------------------------------------------------------------------
    def upload(self, name: str, snapshot: str, dest: str, overwrite: bool = False) -> dict[str, Any]:
        """Copy the files of `snapshot` (a cible://snapshots/<id>[/<sub>] URI) to `dest` in datastore
        `name`. A URI naming one file puts it at `dest`, or at `dest/<its name>` when `dest` ends
        with `/`; a URI naming a folder (or a whole snapshot) puts its files under `dest`, keeping
        their tree."""
        root = self.root(name)
        files, single = self._files(snapshot)
        parts = components(dest, field="dest")  # empty, absolute, `..`, NUL, over-long: refused here
        if parts[0].lower() == RESERVED.lower():
            raise InvalidRequestError(f"dest: '{dest}' is in {RESERVED}/, where cible keeps its own uploads and "
                                      "registered assets' files; choose another path",
                                      details={"field": "dest"})
        base = "/".join(parts)
        if single is not None:
            shown = base if not dest.endswith("/") else f"{base}/{single}"
            targets = {shown: files[single]}
        else:
            targets = {f"{base}/{rel}": entry for rel, entry in files.items()}
            shown = f"{base}/"
        paths = self._check_targets(root, targets, overwrite)
        total = self._write(root, paths, targets)
        return {"datastore": name, "dest": shown, "uri": datastore_uri(shown, name), "count": len(targets),
                "bytes": total, "files": sorted(targets)}

    def _files(self, snapshot: str) -> tuple[dict[str, dict[str, Any]], str | None]:
        """The snapshot's files the URI names, by path under it, and the one file's name when it names
        a file."""
        if not isinstance(snapshot, str) or not snapshot.startswith(SNAPSHOT_SCHEME):
            raise InvalidRequestError(f"snapshot: '{snapshot}' is not a {SNAPSHOT_SCHEME}<sha256>[/<path>] URI; "
                                      "upload the files first (POST /snapshots)", details={"field": "snapshot"})
        snapshot_id, subpath = parse_snapshot_uri(snapshot, field="snapshot")
        manifest = self._manifest(snapshot_id)
        subpath = subpath.rstrip("/")
        if subpath in manifest:
            return {posixpath.basename(subpath): manifest[subpath]}, posixpath.basename(subpath)
        prefix = f"{subpath}/" if subpath else ""
        files = {rel[len(prefix):]: entry for rel, entry in manifest.items() if rel.startswith(prefix)}
        if not files:
            where = f"at '{subpath}'" if subpath else "at all"
            raise InvalidRequestError(f"snapshot: {snapshot_id} holds no files {where}; nothing to upload",
                                      details={"field": "snapshot"})
        return files, None

    def _manifest(self, snapshot_id: str) -> dict[str, dict[str, Any]]:
        """The snapshot's files, each checked again: a manifest is a blob like any other, and any
        uploaded JSON may claim to be one."""
        try:
            files = read_manifest(self.paths.blob_root, snapshot_id)["files"]
        except FileNotFoundError:
            raise NotFoundError(f"snapshot: {snapshot_id} was not uploaded to this workspace",
                                details={"field": "snapshot"}) from None
        except (ValueError, TypeError, KeyError):  # not JSON, not UTF-8, not a manifest
            files = None
        if not isinstance(files, dict):
            raise InvalidRequestError(f"snapshot: {snapshot_id} is not a snapshot manifest",
                                      details={"field": "snapshot"})
        for rel, entry in files.items():
            components(rel, field="snapshot")
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            if not isinstance(digest, str) or not SHA256.fullmatch(digest) or not blob_path(
                    self.paths.blob_root, digest).is_file():
                raise InvalidRequestError(f"snapshot: {snapshot_id} names a file '{rel}' whose content was not "
                                          "uploaded", details={"field": "snapshot"})
        return files

    def _check_targets(self, root: Path, targets: dict[str, dict[str, Any]], overwrite: bool) -> dict[str, Path]:
        """Each destination's path, checked: under the datastore (no link out of it), no folder where a
        file goes, no file where a folder goes, and no file replaced unless `overwrite`."""
        paths = {rel: under(root, rel, field="dest") for rel in targets}
        reserved = os.path.realpath(root / RESERVED).lower() + os.sep
        for rel, path in paths.items():  # a link inside the datastore may lead into cible's own folder
            if (os.path.realpath(path).lower() + os.sep).startswith(reserved):
                raise InvalidRequestError(f"dest: '{rel}' leads into {RESERVED}/ (through a symbolic link), where "
                                          "cible keeps its own uploads; choose another path", details={"field": "dest"})
        existing, blocked = [], []
        for rel, path in paths.items():
            for parent in path.relative_to(root).parents:
                folder = root / parent
                if os.path.lexists(folder) and not folder.is_dir():
                    blocked.append(f"'{parent.as_posix()}' is a file, not a folder")
            if path.is_dir():
                blocked.append(f"'{rel}' is a folder")
            elif os.path.lexists(path):
                existing.append(rel)
        if blocked:
            blocked = sorted(set(blocked))
            raise ConflictError(f"dest: {'; '.join(blocked[:SHOWN_CONFLICTS])}: the upload would need it to be "
                                "otherwise (end dest with '/' to upload a file into a folder)",
                                details={"field": "dest", "blocked": blocked[:20]})
        if existing and not overwrite:
            shown = ", ".join(f"'{rel}'" for rel in sorted(existing)[:SHOWN_CONFLICTS])
            raise ConflictError(f"dest: {len(existing)} file(s) exist already ({shown}); pass --overwrite "
                                "(overwrite=true) to replace them", details={"field": "dest",
                                                                         "existing": sorted(existing)[:20]})
        return paths

    def _write(self, root: Path, paths: dict[str, Path], targets: dict[str, dict[str, Any]]) -> int:
        """Stage every file, then rename each into place; the bytes written."""
        staging = root / RESERVED / STAGING / uuid.uuid4().hex
        staging.mkdir(parents=True)
        total = 0
        try:
            staged = {}
            for i, (rel, entry) in enumerate(targets.items()):
                tmp = staging / str(i)
                shutil.copyfile(blob_path(self.paths.blob_root, entry["sha256"]), tmp)
                mode = entry.get("mode")
                tmp.chmod(0o755 if isinstance(mode, int) and mode & stat.S_IXUSR else 0o644)
                total += tmp.stat().st_size
                staged[rel] = tmp
            for rel, tmp in staged.items():
                paths[rel].parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, paths[rel])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return total

