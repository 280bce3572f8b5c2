"""The result files of a batch run: one part per finished mini-batch, joined at the end (stdlib only;
pyarrow and pandas used when the scoring environment has them, imported only when a result needs them).

Azure's `append_row` format (azureml-spec §6.3): every returned row on a line, values separated by one
space, no header, a DataFrame's column names not written, anything else written with `str()`.

    <output>/.cible-batch/part-000007.csv   mini-batch 7's rows, written before it is reported done
    <output>/<output_file_name>             the parts of the done mini-batches, in mini-batch order

Each file is written under a temporary name and renamed, so a reader (the join, a retry) sees a part
whole or not at all, and a retried mini-batch simply replaces its part.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable
from typing import Any

PARTS_DIR = ".cible-batch"
logger = logging.getLogger(__name__)


def part_path(output: str, idx: int) -> str:
    return os.path.join(output, PARTS_DIR, f"part-{idx:06d}.csv")


def write_part(output: str, idx: int, result: Any) -> int:
    """Write `run()`'s result as mini-batch `idx`'s part; the number of rows it had."""
    path = part_path(output, idx)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".part-{idx:06d}-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            rows = _write_rows(handle, result)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return rows


def count_rows(result: Any) -> int:
    """How many rows `run()` returned (summary_only writes nothing but still counts them)."""
    if result is None:
        return 0
    if hasattr(result, "shape") and getattr(result, "shape", None):
        return int(result.shape[0])
    try:
        return len(result)
    except TypeError:
        return 1


def _write_rows(handle: Any, result: Any) -> int:
    if result is None:
        return 0
    module = type(result).__module__
    if module.startswith("pandas") and hasattr(result, "columns"):  # a DataFrame: written in bulk
        return _write_frame(handle, result)
    if module.startswith("pandas") and hasattr(result, "to_frame"):  # a Series: one value per line
        return _write_frame(handle, result.to_frame())
    if module.startswith("numpy") and hasattr(result, "ndim"):
        return _write_array(handle, result)
    rows = result if isinstance(result, list) else list(result)
    if rows:
        handle.write("\n".join(map(str, rows)).encode("utf-8"))
        handle.write(b"\n")
    return len(rows)


def _write_frame(handle: Any, frame: Any) -> int:
    rows = len(frame)
    if not rows:
        return 0
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        table = pa.Table.from_pandas(frame, preserve_index=False)
        # Large batches: a quarter less time than the default 1024 rows (measured on 100k-row results).
        options = pa_csv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none", batch_size=65536)
        pa_csv.write_csv(table, handle, write_options=options)
        return rows
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - a value Arrow refuses (objects, quotes or spaces to escape): pandas below
        handle.seek(0)
        handle.truncate()
    frame.to_csv(handle, sep=" ", header=False, index=False)  # objects via str(), quoted where they hold a space
    return rows


def _write_array(handle: Any, array: Any) -> int:
    if array.ndim == 0:
        handle.write(f"{array.item()}\n".encode())
        return 1
    if array.ndim == 1 and array.dtype.kind in "biuf":
        import numpy as np

        np.savetxt(handle, array, fmt="%s" if array.dtype.kind == "f" else "%d")
        return int(array.shape[0])
    if array.ndim == 2 and array.dtype.kind in "biuf":
        import numpy as np

        np.savetxt(handle, array, fmt="%s", delimiter=" ")
        return int(array.shape[0])
    rows = [str(row) for row in array]
    if rows:
        handle.write(("\n".join(rows) + "\n").encode("utf-8"))
    return len(rows)


def join_parts(output: str, file_name: str, done: Iterable[int], *, remove_parts: bool = True) -> str:
    """`<output>/<file_name>`: the parts of the `done` mini-batches, in mini-batch order (a part that is
    missing is skipped: its rows were counted when it was reported). Written under a temporary name and
    renamed: joining twice gives the same file. Then the parts folder is removed (the output folder holds
    the one file, as on Azure, and `job download` fetches it once).

    The server runs this over a folder the job (user code) wrote, so nothing in it is trusted: the output
    folder and the parts folder are opened without following a link, each part without following a link
    and without blocking (a FIFO would block an open() forever), and only a regular file with one link is
    read: a link to a file of the server's, a FIFO, a device or a hard link is skipped and logged. The
    target is replaced by rename (which replaces a planted link rather than writing through it).
    Two joins of one folder (the server's and a node's) are serialised by a lock on the parts folder; the
    one that comes second finds the folder removed and leaves the joined file as it is."""
    problem = file_name_problem(file_name)
    if problem is not None:
        raise ValueError(problem)
    os.makedirs(output, exist_ok=True)
    out_fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        parts_fd = _open_parts_folder(out_fd, output)
        try:
            if parts_fd is None and _is_file(out_fd, file_name):
                return os.path.join(output, file_name)  # joined already (the parts folder went with it)
            if parts_fd is not None:
                fcntl.flock(parts_fd, fcntl.LOCK_EX)
                if not _still_linked(out_fd, parts_fd):  # another join finished while this one waited
                    return os.path.join(output, file_name)
            _write_joined(out_fd, parts_fd, file_name, done)
            if remove_parts and parts_fd is not None:
                shutil.rmtree(PARTS_DIR, dir_fd=out_fd, ignore_errors=True)
        finally:
            if parts_fd is not None:
                os.close(parts_fd)  # releases the lock
    finally:
        os.close(out_fd)
    return os.path.join(output, file_name)


def file_name_problem(file_name: str) -> str | None:
    """Why `file_name` cannot be the joined file's name in the output folder (None when it can)."""
    if (not isinstance(file_name, str) or not file_name.strip() or "/" in file_name or "\\" in file_name
            or "\0" in file_name or file_name in (".", "..")):
        return f"output_file_name {file_name!r} is not the name of one file in the output folder"
    if file_name.startswith(PARTS_DIR):
        return f"output_file_name {file_name!r} is the batch runner's own parts folder"
    if len(file_name.encode("utf-8", "surrogateescape")) > 255:
        return "output_file_name is longer than a file name may be (255 bytes)"
    return None


def _open_parts_folder(out_fd: int, output: str) -> int | None:
    try:
        return os.open(PARTS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=out_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link or a file in its place: the job put it there; nothing to join from it
        logger.warning("batch output %s: %s is not a folder (%s): no parts joined", output, PARTS_DIR, exc)
        return None


def _is_file(out_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=out_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _still_linked(out_fd: int, parts_fd: int) -> bool:
    """Whether the parts folder held open is still `<output>/.cible-batch` (not removed by another join)."""
    try:
        now = os.stat(PARTS_DIR, dir_fd=out_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(parts_fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _write_joined(out_fd: int, parts_fd: int | None, file_name: str, done: Iterable[int]) -> None:
    temporary = f".join-{os.getpid()}-{secrets.token_hex(6)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                 dir_fd=out_fd)
    try:
        with os.fdopen(fd, "wb") as out:
            for idx in sorted(set(done)) if parts_fd is not None else ():
                part = _open_part(parts_fd, idx)
                if part is not None:
                    with os.fdopen(part, "rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 20)
        os.replace(temporary, file_name, src_dir_fd=out_fd, dst_dir_fd=out_fd)
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=out_fd)
        except OSError:
            pass
        raise


def _open_part(parts_fd: int, idx: int) -> int | None:
    """Mini-batch `idx`'s part, opened for reading: a regular file with one link, else None (logged)."""
    name = f"part-{idx:06d}.csv"
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parts_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symbolic link
        logger.warning("batch output: part %s skipped: %s", name, exc.strerror or exc)
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        logger.warning("batch output: part %s skipped: not a regular file of its own (mode %o, %d links)",
                       name, info.st_mode, info.st_nlink)
        return None
    os.set_blocking(fd, True)
    return fd
