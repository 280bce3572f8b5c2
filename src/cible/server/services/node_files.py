"""The files of a job's run that a node which does not share the workspace folder fetches and sends.

A node of a provider without SHARES_WORKSPACE (an SSH host) gets its plan marked `"transfer": "http"`
(clusters/runs.py:node_plan). Its agent rewrites the plan's server paths to folders of its own
(cible.agent.localize) and moves the files through the agent routes (routers/agents.py), served here:

- blobs of the job's code and snapshot inputs (only those the job's manifests name);
- a datastore input (or another job's output): a manifest of its files with their sha256, and
  each file;
- the job's resume folder (runs/<job>/checkpoint): fetched before the job starts, sent back while
  it runs and at its end; a commit makes exactly the files it names the folder's content;
- an output: its files sent in chunks into a staging folder of the node's attempt, then committed,
  which checks every file's sha256 and moves them to the output's path (only the files named are
  replaced there: the nodes of a job each commit their own). A staged file's sha256 is carried along
  as its chunks arrive in order, so a commit of a big output need not read it all again.

Every call is for the job's current attempt placed on the calling node (`placed_plan`, the same check
as the agent's reports and files; sends and commits also for a job that has not ended); every path from a request goes through cible.core.safepaths.under,
and every path from a stored plan must lie in the workspace's datastores or a job's artifacts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cible.core.errors import CibleError, ConflictError, InvalidRequestError, NotFoundError
from cible.core.safepaths import components, under
from cible.runfiles import blob_path, read_manifest, regular_files, sha256_of
from cible.server.services.blobs import SHA256, check_digest
from cible.server.services.file_hashes import FileHashes
from cible.workspace import WorkspacePaths

RESUME_FOLDER = "checkpoint"  # runs/<job>/checkpoint: what a requeued job resumes from
INCOMING = ".incoming"  # runs/<job>/.incoming/<node>.<attempt>/: files sent, not committed yet
RUNNING_HASHES = 4096  # staged files whose sha256 is carried along as they arrive (the oldest dropped past it)
LOCK_STRIPES = 64
ARTIFACTS = "artifacts"


def resume_dir(paths: WorkspacePaths, job_name: str) -> Path:
    return paths.run_dir(job_name) / RESUME_FOLDER


class ChunkError(ValueError):
    """A chunk that cannot be stored where it says (a gap before it, a folder in the way)."""


def write_chunk(path: Path, offset: int, data: bytes) -> None:
    """Write `data` at `offset` (a resent chunk lands where it did before); offset 0 starts the file over.
    A chunk may not start past the end of what the file has, so a file never has holes."""
    size = path.stat().st_size if path.is_file() else 0
    if offset > size:
        raise ChunkError(f"offset {offset} is past the end of the file ({size} bytes); send the bytes before it first")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ChunkError("a file of that run is in the way of the folder") from None
    if path.is_dir():
        raise ChunkError("that path is a folder of the run, not a file")
    mode = "r+b" if path.exists() and offset > 0 else "wb"
    with open(path, mode) as fh:
        fh.seek(offset)
        fh.write(data)


@dataclass(frozen=True)
class Upload:
    """Where a node's files for one destination are staged, and where a commit puts them."""

    label: str  # for messages: "the resume folder", "output 'model'"
    stage: Path
    dest: Path
    replace_all: bool  # the resume folder: a commit's files are its whole content


class NodeFileService:
    def __init__(self, paths: WorkspacePaths, placed_plan: Callable[..., dict[str, Any]]) -> None:
        self.paths = paths
        # placed_plan(node, job, attempt, writing=…): the job's stored plan, or NotFound/Conflict when the
        # job's current attempt is not on that node, or (writing) the job ended (AgentService.placed_plan).
        self.placed_plan = placed_plan
        self.hashes = FileHashes(paths.home / "cache" / "file-sha256.sqlite")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        # A staged file's path -> (size, mtime_ns, sha256 of its bytes): kept while its chunks come in
        # order; a chunk and the digest's update happen under one of the stripes' locks (by path).
        self._running: dict[str, tuple[int, int, Any]] = {}
        self._running_lock = threading.Lock()  # the dict's own (a stripe holds a file's chunk and digest)
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]

    # -- fetching ----------------------------------------------------------------------------------
    def blob(self, node_id: str, job_name: str, attempt: int, digest: str) -> Path:
        """A blob of the job's code or snapshot inputs (a manifest, or a file one names)."""
        check_digest(digest)
        plan = self._placed(node_id, job_name, attempt)
        if digest not in self._job_blobs(plan):
            raise NotFoundError(f"blob {digest} is not part of job '{job_name}''s code or snapshot inputs",
                                details={"sha256": digest})
        path = blob_path(self.paths.blob_root, digest)
        if not path.is_file():
            raise NotFoundError(f"blob {digest} of job '{job_name}' is missing from the workspace's blob store "
                                "(deleted since the job was submitted?)", details={"sha256": digest})
        return path

    def input_manifest(self, node_id: str, job_name: str, attempt: int, name: str) -> dict[str, Any]:
        return self._manifest(self._input_root(node_id, job_name, attempt, name), f"input '{name}'")

    def input_file(self, node_id: str, job_name: str, attempt: int, name: str, rel: str) -> tuple[Path, str]:
        """One file of a datastore input, and its sha256."""
        return self._file(self._input_root(node_id, job_name, attempt, name), rel, f"input '{name}'")

    def resume_manifest(self, node_id: str, job_name: str, attempt: int) -> dict[str, Any]:
        self._placed(node_id, job_name, attempt)
        folder = resume_dir(self.paths, job_name)
        if not folder.exists():  # nothing saved yet: an empty folder
            return {"kind": "folder", "files": []}
        return self._manifest(folder, "the resume folder")

    def resume_file(self, node_id: str, job_name: str, attempt: int, rel: str) -> tuple[Path, str]:
        self._placed(node_id, job_name, attempt)
        return self._file(resume_dir(self.paths, job_name), rel, "the resume folder")

    # -- sending ------------------------------------------------------------------------------------
    def upload(self, node_id: str, job_name: str, attempt: int, output: str | None) -> Upload:
        """Where the node's files for an output (`output`) or the resume folder (None) go; raises when
        the job's attempt is not on that node or the output is not the job's."""
        plan = self._placed(node_id, job_name, attempt, writing=True)
        incoming = under(self.paths.run_dir(job_name), INCOMING, f"{node_id}.{attempt}", field="node_id")
        if output is None:
            return Upload("the resume folder", incoming / "resume", resume_dir(self.paths, job_name), True)
        spec = (plan.get("outputs") or {}).get(output)
        if spec is None or not spec.get("local_path"):
            known = ", ".join(plan.get("outputs") or {}) or "none"
            raise NotFoundError(f"job '{job_name}' has no output '{output}' (its outputs: {known})",
                                details={"output": output})
        label = f"output '{output}'"
        dest = self._workspace_data(Path(spec["local_path"]), label)
        return Upload(label, under(incoming, "outputs", output, field="output"), dest, False)

    def put_chunk(self, upload: Upload, rel: str, offset: int, data: bytes) -> dict[str, Any]:
        """Write a chunk of a file being sent; `staged` is the file's size on the server after it."""
        rel = _plain(rel)
        target = under(upload.stage, rel, field="path")
        key = str(target)
        with self._stripe(key):
            known = self._forget(key)
            before = _stat(target)
            try:
                write_chunk(target, offset, data)
            except ChunkError as exc:
                staged = target.stat().st_size if target.is_file() else 0
                raise ConflictError(f"{rel}: {exc}", details={"field": "offset", "staged": staged}) from None
            after = target.stat()
            # The next bytes of a file whose digest is known, or a file started over: its digest goes on.
            # A chunk sent again over bytes already there leaves the file to be hashed at the commit.
            if offset == 0:
                digest = hashlib.sha256()
            elif known is not None and before is not None and known[:2] == before and offset == before[0]:
                digest = known[2]
            else:
                digest = None
            if digest is not None:
                digest.update(data)
                with self._running_lock:
                    self._running[key] = (after.st_size, after.st_mtime_ns, digest)
                    while len(self._running) > RUNNING_HASHES:
                        self._running.pop(next(iter(self._running)))  # an upload left unfinished long ago
        return {"path": rel, "offset": offset, "size": len(data), "staged": after.st_size}

    def staged(self, upload: Upload) -> dict[str, Any]:
        """The files sent and not committed yet, with their sizes: where an interrupted send goes on."""
        files = []
        if upload.stage.is_dir():
            for rel, path in regular_files(upload.stage):
                files.append({"path": rel, "size": path.stat().st_size})
        return {"files": files}

    def commit(self, upload: Upload, files: dict[str, str]) -> dict[str, Any]:
        """Check each file's sha256 and make the files named the destination's (the resume folder:
        its whole content; an output: those files replaced). Nothing moves when one is wrong."""
        named = {_plain(rel): check_digest(str(digest), f"files.{rel}") for rel, digest in files.items()}
        with self._lock(upload.dest):
            if upload.dest.exists() and not upload.dest.is_dir():
                raise ConflictError(f"{upload.label}: {upload.dest.name} is a file on the server, not a folder")
            moves, kept = self._check_commit(upload, named)
            if upload.replace_all:
                removed = self._swap(upload, moves, kept, set(named))
            else:
                removed = 0
                self._merge(upload, moves)
            shutil.rmtree(upload.stage, ignore_errors=True)
        for rel in named:
            self._forget(str(under(upload.stage, rel, field="files")))
        return {"files": len(named), "sent": len(moves), "unchanged": len(kept), "removed": removed}

    # -- helpers ------------------------------------------------------------------------------------
    def _placed(self, node_id: str, job_name: str, attempt: int, writing: bool = False) -> dict[str, Any]:
        """The job's plan, or the placement's refusal marked `"placed": false` in its details: the agent
        drops the run then, where a 404 of a file (an input that does not exist) fails the job.
        `writing`: files are sent, which a job that ended takes no more."""
        try:
            return self.placed_plan(node_id, job_name, attempt, writing=writing)
        except (NotFoundError, ConflictError) as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            raise type(exc)(exc.message, details={**details, "placed": False}) from None

    def _job_blobs(self, plan: dict[str, Any]) -> frozenset[str]:
        snapshots = [(plan.get("code") or {}).get("snapshot")]
        snapshots += [(spec.get("source") or {}).get("snapshot") for spec in (plan.get("inputs") or {}).values()
                      if isinstance(spec, dict)]
        found: set[str] = set()
        for snapshot in snapshots:
            if isinstance(snapshot, str) and SHA256.fullmatch(snapshot):
                try:
                    found |= _snapshot_blobs(self.paths.blob_root, snapshot)
                except (OSError, ValueError, AttributeError):
                    pass  # its manifest is not there: none of its blobs can be served
        return frozenset(found)

    def _input_root(self, node_id: str, job_name: str, attempt: int, name: str) -> Path:
        plan = self._placed(node_id, job_name, attempt)
        spec = (plan.get("inputs") or {}).get(name)
        if spec is None:
            known = ", ".join(plan.get("inputs") or {}) or "none"
            raise NotFoundError(f"job '{job_name}' has no input '{name}' (its inputs: {known})",
                                details={"input": name})
        local = (spec.get("source") or {}).get("local_path") if isinstance(spec, dict) else None
        if not local:
            raise NotFoundError(f"input '{name}' of job '{job_name}' is no workspace path (a literal, a snapshot "
                                "or a URL): fetch it as its plan says", details={"input": name})
        root = self._workspace_data(Path(local), f"input '{name}'")
        if not root.exists():
            raise NotFoundError(f"input '{name}': {spec.get('uri', local)} does not exist", details={"input": name})
        return root

    def _workspace_data(self, path: Path, label: str) -> Path:
        """A path of a stored plan, resolved, when it lies in the datastores or in a job's artifacts folder
        (where inputs and outputs are); a plan stored before paths were checked may name anything."""
        real = Path(os.path.realpath(path))
        datastores = Path(os.path.realpath(self.paths.datastores))
        runs = Path(os.path.realpath(self.paths.runs))
        if real != datastores and real.is_relative_to(datastores):
            return real
        if real.is_relative_to(runs) and real.relative_to(runs).parts[1:2] == (ARTIFACTS,):
            return real
        raise NotFoundError(f"{label}: its path is not in the workspace's datastores or a job's artifacts "
                            "(a plan from an older version?); submit the job again")

    def _manifest(self, root: Path, label: str) -> dict[str, Any]:
        if root.is_file():
            return {"kind": "file", "files": [self._entry(root.name, root)]}
        if not root.is_dir():
            raise NotFoundError(f"{label} is neither a file nor a folder on the server")
        return {"kind": "folder", "files": [self._entry(rel, path) for rel, path in regular_files(root)]}

    def _entry(self, rel: str, path: Path) -> dict[str, Any]:
        return {"path": rel, "size": path.stat().st_size, "sha256": self.hashes.sha256(path)}

    def _file(self, root: Path, rel: str, label: str) -> tuple[Path, str]:
        rel = _plain(rel)
        if root.is_file():
            path = root if rel == root.name else None
        else:  # `..`, a NUL or a link out of the folder is a 400, never a file
            path = under(root, rel, field="path")
        if path is None or not _is_regular(path):
            raise NotFoundError(f"{label} has no file '{rel}'", details={"path": rel})
        return path, self.hashes.sha256(path)

    def _check_commit(self, upload: Upload, named: dict[str, str]) -> tuple[list[tuple[str, Path]], list[str]]:
        """(files sent and checked, files the destination already has): raises, naming every file that
        is wrong, when one is."""
        moves: list[tuple[str, Path]] = []
        kept: list[str] = []
        mismatched: list[str] = []
        shown: list[str] = []  # the first mismatches, with their digests
        missing: list[str] = []
        in_the_way: list[str] = []
        for rel, digest in sorted(named.items()):
            staged = under(upload.stage, rel, field="files")
            existing = _existing_file(upload.dest, rel)
            if _is_regular(staged):
                got = self._staged_sha256(staged)
                if got != digest:
                    mismatched.append(rel)
                    shown.append(f"{rel} (the bytes sent hash to {got}, not {digest})")
                elif not upload.replace_all and _blocked(upload.dest, rel):
                    in_the_way.append(rel)  # a folder where the file goes, or a link out of the output
                else:
                    moves.append((rel, staged))
            elif existing is not None and self.hashes.sha256(existing) == digest:
                kept.append(rel)  # unchanged since it was last sent
            else:
                missing.append(rel)
        if mismatched or missing or in_the_way:
            problems = ([f"sha256 mismatch: {', '.join(shown[:5])}"] if mismatched else []) + \
                       ([f"never sent: {', '.join(missing[:5])}"] if missing else []) + \
                       ([f"a folder or file is in the way on the server: {', '.join(in_the_way[:5])}"]
                        if in_the_way else [])
            raise InvalidRequestError(f"{upload.label}: nothing was committed; " + "; ".join(problems),
                                      details={"mismatched": mismatched[:100], "missing": missing[:100],
                                               "in_the_way": in_the_way[:100]})
        return moves, kept

    def _merge(self, upload: Upload, moves: list[tuple[str, Path]]) -> None:
        """Move the files sent into the output: through a folder beside it (the same filesystem), then
        each in one rename; a destination that did not exist appears whole, in one rename."""
        if not moves:
            upload.dest.mkdir(parents=True, exist_ok=True)
            return
        tmp = _beside(upload.dest, "incoming")
        try:
            for rel, staged in moves:
                _move(staged, tmp / rel)
            if not upload.dest.exists():
                os.rename(tmp, upload.dest)
                return
            for rel, _ in moves:
                target = under(upload.dest, rel, field="files")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / rel, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _swap(self, upload: Upload, moves: list[tuple[str, Path]], kept: list[str], named: set[str]) -> int:
        """Make the folder hold exactly the files named: built beside it, then swapped in by two
        renames. Returns how many files it had that were not named (now gone)."""
        tmp = _beside(upload.dest, "incoming")
        old = None
        try:
            for rel, staged in moves:
                _move(staged, tmp / rel)
            for rel in kept:
                source, target = under(upload.dest, rel, field="files"), tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(source, target)  # same filesystem: no copy of a big checkpoint
                except OSError:
                    shutil.copy2(source, target)
            removed = 0
            if upload.dest.exists():
                removed = sum(1 for rel, _ in regular_files(upload.dest) if rel not in named)
                old = _beside(upload.dest, "old", make=False)
                os.rename(upload.dest, old)
            os.rename(tmp, upload.dest)
            return removed
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def _staged_sha256(self, path: Path) -> str:
        """A staged file's sha256: the one carried along as its chunks came when the file is as they
        left it, else read (never from FileHashes: a staged file changes with every chunk)."""
        key = str(path)
        with self._stripe(key), self._running_lock:
            known = self._running.get(key)
            if known is not None and known[:2] == _stat(path):
                return known[2].hexdigest()
        return sha256_of(path)

    def _forget(self, key: str) -> tuple[int, int, Any] | None:
        with self._running_lock:
            return self._running.pop(key, None)

    def _stripe(self, key: str) -> threading.Lock:
        return self._stripes[hash(key) % LOCK_STRIPES]

    def _lock(self, dest: Path) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(str(dest), threading.Lock())


@lru_cache(maxsize=256)
def _snapshot_blobs(blob_root: Path, snapshot: str) -> frozenset[str]:
    """A snapshot's manifest and the file blobs it names (blobs never change: kept by id; a manifest
    that cannot be read raises, and is read again next time)."""
    files = read_manifest(blob_root, snapshot).get("files") or {}
    digests = {e.get("sha256") for e in files.values() if isinstance(e, dict)}
    return frozenset({snapshot, *(d for d in digests if isinstance(d, str) and SHA256.fullmatch(d))})


def _plain(rel: str) -> str:
    """A relative file path written as its parts (no `.`, empty or `..` part): the key a file is
    staged, listed and committed under, so the same file always has the same name."""
    parts = components(rel, field="path")
    if "/".join(parts) != rel or "\\" in rel:
        raise InvalidRequestError(f"path: {rel!r} is not a plain relative path (write it as 'a/b.txt': no '.', "
                                  "empty or '..' part, no backslash)", details={"field": "path"})
    return rel


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file; None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_size, st.st_mtime_ns)


def _is_regular(path: Path) -> bool:
    """A regular file (a link to one inside its folder counts; never a FIFO, a device or a folder)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False



def _existing_file(dest: Path, rel: str) -> Path | None:
    try:
        path = under(dest, rel, field="files")
    except CibleError:
        return None
    return path if _is_regular(path) and not path.is_symlink() else None


def _blocked(dest: Path, rel: str) -> bool:
    """Whether a folder stands where the file goes, a file where one of its folders goes, or a link
    along the way leads out of the destination."""
    try:
        path = under(dest, rel, field="files")
    except CibleError:
        return True
    if path.is_dir() and not path.is_symlink():
        return True
    return any(parent.exists() and not parent.is_dir() for parent in path.parents if parent.is_relative_to(dest))


def _beside(dest: Path, what: str, make: bool = True) -> Path:
    path = dest.parent / f".{dest.name}.{what}-{secrets.token_hex(6)}"
    if make:
        path.mkdir(parents=True)
    return path


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))  # a rename on one filesystem, a copy across two
