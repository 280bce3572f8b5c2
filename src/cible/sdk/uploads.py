"""Uploading local code and inputs as content-addressed snapshots.

Honours `.amlignore` (or, where a folder has none, `.gitignore`) in every
folder, as Azure ML does when it snapshots a job's code.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pathspec

from cible.client.http import WorkspaceClient
from cible.core.errors import InvalidSpecError

IGNORE_FILES = (".amlignore", ".gitignore")
ALWAYS_SKIPPED = {".git"}


def _ignore_spec(folder: Path) -> pathspec.GitIgnoreSpec | None:
    for name in IGNORE_FILES:  # .amlignore wins over .gitignore, per folder
        path = folder / name
        if path.is_file():
            return pathspec.GitIgnoreSpec.from_lines(path.read_text().splitlines())
    return None


def walk_snapshot(root: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, for every file the ignore files keep."""
    if root.is_file():
        return {root.name: root}
    files: dict[str, Path] = {}
    specs: dict[Path, pathspec.GitIgnoreSpec | None] = {}
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        specs[here] = _ignore_spec(here)

        def ignored(path: Path, is_dir: bool) -> bool:
            for base in [here, *here.parents]:
                spec = specs.get(base)
                if spec is not None:
                    rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
                    if spec.match_file(rel):
                        return True
                if base == root:
                    break
            return False

        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_SKIPPED and not ignored(here / d, True))
        for name in sorted(names):
            path = here / name
            if path.is_file() and not ignored(path, False):
                files[path.relative_to(root).as_posix()] = path
    return files


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def upload_snapshot(client: WorkspaceClient, root: Path, keep_name: bool = False) -> str:
    """Upload what the workspace lacks of `root`; return the snapshot's cible:// URI.

    With `keep_name` a folder's files sit under its own name in the snapshot, as
    Azure keeps the basename of a registered model's or data asset's path.
    """
    files = walk_snapshot(root)
    if keep_name and root.is_dir():
        files = {f"{root.name}/{rel}": path for rel, path in files.items()}
    return upload_files(client, files)


def upload_files(client: WorkspaceClient, files: dict[str, Path]) -> str:
    """Upload a tree given as relative POSIX path -> local file (a code folder with a component's
    additional_includes beside it); return the snapshot's cible:// URI."""
    entries = {}
    for rel, path in files.items():
        st = path.stat()
        entries[rel] = {"sha256": file_digest(path), "size": st.st_size, "mode": stat.S_IMODE(st.st_mode)}
    digests = sorted({e["sha256"] for e in entries.values()})
    missing = set(client.json("POST", "/blobs:missing", json={"sha256": digests})["missing"]) if digests else set()
    by_digest = {e["sha256"]: files[rel] for rel, e in entries.items()}
    for digest in sorted(missing):
        with open(by_digest[digest], "rb") as fh:
            client.request("PUT", f"/blobs/{digest}", content=fh, headers={"Content-Type": "application/octet-stream"})
    return client.json("POST", "/snapshots", json={"files": entries})["uri"]


def upload_path(client: WorkspaceClient, local: str, field: str, keep_name: bool = False) -> str:
    """Upload a local file or folder named by spec field `field`; the cible:// URI that replaces it.

    A file's URI names the file; a folder's names its contents, or (keep_name) the folder itself.
    """
    if local.startswith("cible://"):
        return local
    path = Path(local)
    if not path.exists():
        raise InvalidSpecError(f"{field}: '{local}' does not exist", details={"field": field})
    uri = upload_snapshot(client, path, keep_name=keep_name)
    return f"{uri}/{path.name}" if path.is_file() or keep_name else uri
