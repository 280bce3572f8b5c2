"""What a node sends of a run's artifact files: the bytes each file gained since the last pass,
under a name of the node's own in the job's artifacts; at the end, when what is left is small,
inline with the final report instead of one request per file."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cible.agent.http import Response
from cible.runfiles import ARTIFACT_DIRS

CHUNK = 1 << 20
# The files a run's final report carries itself when what is left of them is this small (a short
# job's logs): one request instead of one per file.
INLINE_FILES = 16
INLINE_BYTES = 256 << 10

Pending = tuple[Path, str, int, int]  # a file, its shipped name, bytes sent, its size now


def pending_files(run_dir: Path, node_rank: int, shipped: dict[str, int], everything: bool) -> list[Pending]:
    """The artifact files with bytes not yet sent (logs while running; outputs too, `everything`, at
    the end). `shipped`: what was sent of each, by shipped name."""
    artifacts = run_dir / "artifacts"
    dirs = ARTIFACT_DIRS if everything else ("user_logs", "system_logs")
    pending = []
    for name in dirs:
        base = artifacts / name
        if not base.is_dir():
            continue
        # A link the job left is not followed: it may point at what the job could not read.
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = shipped_name(path.relative_to(artifacts).as_posix(), node_rank)
            size, sent = path.stat().st_size, shipped.get(rel, 0)
            if sent > size:
                sent = 0  # rewritten: send it whole again
            elif rel in shipped and sent == size:
                continue
            pending.append((path, rel, sent, size))
    return pending


def inline_all(pending: list[Pending]) -> list[dict[str, Any]] | None:
    """What is left, as a final report carries it (path, offset, base64 data); None when too much."""
    if len(pending) > INLINE_FILES or sum(size - sent for *_, sent, size in pending) > INLINE_BYTES:
        return None
    return [_inline(path, rel, sent, size) for path, rel, sent, size in pending]


def _inline(path: Path, rel: str, sent: int, size: int) -> dict[str, Any]:
    """A file's bytes from `sent` to `size`."""
    with open(path, "rb") as fh:
        fh.seek(sent)
        data = fh.read(size - sent)
    return {"path": rel, "offset": sent, "size": len(data), "data": base64.b64encode(data).decode("ascii")}


def ship_file(put: Callable[[str, int, bytes], Response], pending: Pending, shipped: dict[str, int]) -> None:
    """Send the file's bytes from `sent` to `size` in chunks, `put(rel, offset, data)` each (an empty
    file is sent once, so it exists); `shipped` follows what arrived. Stops when the server answers
    404 or 409 (it moved on from this attempt)."""
    path, rel, sent, size = pending
    with open(path, "rb") as fh:
        fh.seek(sent)
        while True:
            data = fh.read(min(CHUNK, size - sent))
            response = put(rel, sent, data)
            if response.status_code in (404, 409):
                return
            response.raise_for_status()
            sent += len(data)
            shipped[rel] = sent
            if sent >= size or not data:
                return


def shipped_name(rel: str, node_rank: int) -> str:
    """Where a node's artifact file goes in the job's artifacts, so the nodes of one job do not
    overwrite each other: node k > 0 keeps its system logs under system_logs/node_<k>/, and the
    log of a command run once per node (no distribution) is user_logs/std_log_node_<k>.txt.
    Ranks of a distributed job already write logs of their own, and outputs/ are merged."""
    if node_rank == 0:
        return rel
    if rel.startswith("system_logs/"):
        return f"system_logs/node_{node_rank}/{rel[len('system_logs/'):]}"
    if rel == "user_logs/std_log.txt":
        return f"user_logs/std_log_node_{node_rank}.txt"
    return rel
