"""Names and user-given relative paths into file paths that stay under their parent folder.

Every place where a name (a job's, a compute's, a node's) or a path from a request (a
datastore path, a file of a job) becomes a file path goes through `under` (or `inside`, for
paths that may be normalised first), so a `..`, an absolute path, a NUL byte, an over-long
part or a symbolic link can never lead out of the folder meant for it.

Stdlib only (and cible.core.errors): the launcher imports it.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from cible.core.errors import InvalidRequestError

MAX_COMPONENT_BYTES = 255  # NAME_MAX of Linux filesystems: a longer part is "File name too long"


def _shown(value: str) -> str:
    """The value as a message shows it: escaped, and cut when long (a 10 kB name helps no one)."""
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}… ({len(value)} characters)"


def _refuse(field: str, value: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"{field}: {_shown(value)} {problem}", details={"field": field})


def components(value: str, *, field: str = "path") -> list[str]:
    """The parts of a relative path, `.` and empty parts dropped; refuses what could leave its folder."""
    if not isinstance(value, str) or value == "":
        raise _refuse(field, str(value), "is empty; give a name or a relative path")
    if "\0" in value:
        raise _refuse(field, value, "contains a NUL character; remove it")
    if value.startswith("/"):
        raise _refuse(field, value, "is an absolute path; give a path relative to its folder (no leading '/')")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(field, value, "has a '..' part, which would lead out of its folder; use a path inside it")
    for part in parts:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > MAX_COMPONENT_BYTES:
            raise _refuse(field, value, f"has a part of {size} bytes; a file name holds at most "
                                        f"{MAX_COMPONENT_BYTES} bytes: shorten it")
    if not parts:
        raise _refuse(field, value, "names no file or folder; give a name or a relative path")
    return parts


def under(parent: Path, *parts: str, field: str = "path") -> Path:
    """`parent/parts…`, guaranteed to stay under `parent`: each part is a name or a relative path
    (see `components`), and where the path exists, no symbolic link along it leads elsewhere."""
    path = Path(parent).joinpath(*[c for part in parts for c in components(part, field=field)])
    _check_links(Path(parent), path, field, "/".join(parts))
    return path


def stays_under(parent: Path, rel: str) -> bool:
    """Whether `under(parent, rel)` holds: False for a file reached through a link out of `parent`
    (a listing leaves such files out rather than failing)."""
    try:
        under(parent, rel)
    except InvalidRequestError:
        return False
    return True


def normalise(rel: str, *, field: str = "path", within: str = "its datastore") -> str:
    """A user's relative path, normalised (`a/./b/../c/` -> `a/c/`; `.` -> the empty string for
    the root itself), that must stay inside its root. A leading `/` is read as the root (a datastore's
    `paths//x` is `x`), so it never means the machine's root."""
    if "\0" in rel:
        raise _refuse(field, rel, "contains a NUL character; remove it")
    depth = 0  # how deep below the root each part leads; below zero is outside it
    for part in rel.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise _refuse(field, rel, f"leads out of {within} with '..'; use a path inside it")
    cleaned = posixpath.normpath("/" + rel).lstrip("/")
    if cleaned:
        components(cleaned, field=field)  # over-long parts
        if rel.endswith("/"):
            cleaned += "/"  # a folder stays written as one
    return cleaned


def inside(root: Path, rel: str, *, field: str = "path", within: str = "its datastore") -> Path:
    """`root/rel` for a user's relative path (normalised first); `root` itself for an empty one."""
    cleaned = normalise(rel, field=field, within=within)
    return under(root, cleaned, field=field) if cleaned else root


def _check_links(parent: Path, path: Path, field: str, given: str) -> None:
    # realpath resolves the symbolic links of the part of the path that exists; a path that
    # does not exist yet resolves to itself, so it is judged by its text alone.
    root = os.path.realpath(parent)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise _refuse(field, given, "leads out of its folder through a symbolic link; use a path inside it")
