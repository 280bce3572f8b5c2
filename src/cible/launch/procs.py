"""Ending a whole process tree: the command's group and anything that left it."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cible.node.proc import Process

PR_SET_CHILD_SUBREAPER = 36


def kill_tree(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group led by `pid` and every descendant, SIGKILL what remains."""
    from cible.node.proc import Error as ProcessError  # only on this path: keeps the launcher's start fast
    from cible.node.proc import wait_procs

    procs = _tree(pid)
    _signal_group(pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.terminate()
        except ProcessError:
            pass
    _, alive = wait_procs(procs, timeout=grace_s)
    _signal_group(pid, signal.SIGKILL)
    for proc in alive:
        try:
            proc.kill()
        except ProcessError:
            pass
    wait_procs(alive, timeout=grace_s)


def signal_tree(pid: int, sig: int = signal.SIGKILL, *, session: bool = False, wait_s: float = 5.0) -> None:
    """Send `sig` at once to `pid` and every descendant (with `session`, also to whatever shares
    its session: children orphaned on the way), then wait up to `wait_s` for them to go."""
    from cible.node.proc import Error as ProcessError
    from cible.node.proc import process_iter, wait_procs

    procs = _tree(pid)
    if session:
        try:
            sid = os.getsid(pid)
        except OSError:
            sid = None
        for proc in process_iter():
            try:
                if sid is not None and os.getsid(proc.pid) == sid and proc not in procs:
                    procs.append(proc)
            except (OSError, ProcessError):
                pass
    for proc in procs:
        try:
            proc.send_signal(sig)
        except ProcessError:
            pass
    wait_procs(procs, timeout=wait_s)


def _tree(pid: int) -> list[Process]:
    """`pid` and its descendants (none when it is gone)."""
    from cible.node.proc import Error as ProcessError
    from cible.node.proc import Process

    try:
        root = Process(pid)
        return [root, *root.children(recursive=True)]
    except ProcessError:
        return []


def end_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM what is left in process group `pgid`, SIGKILL it after `grace_s`."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.02)  # waiting for stray processes to exit
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it has no members left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait_for_exit(proc, deadline: float | None, should_stop) -> str | None:  # noqa: ANN001
    """Wait for `proc`; return "timeout" or "cancel" when one of those comes first."""
    while True:
        try:
            proc.wait(timeout=0.05)
            return None
        except Exception:  # subprocess.TimeoutExpired; keep this module import-light
            pass
        if should_stop():
            return "cancel"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"


class Adopted:
    """A child this process adopted (as a subreaper), with the part of Popen's API the launcher uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        if self._lock.acquire(blocking=False):  # else a wait() holds it: still running, as Popen says
            try:
                self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self) -> int | None:
        with self._lock:
            self._reap(0)
        return self.returncode

    def _reap(self, flags: int) -> None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # not ours (any more): gone
                self.returncode = self.returncode if self.returncode is not None else -1
                return
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)


def subreaper(on: bool) -> None:
    """Be (or stop being) the child subreaper of this process's orphaned descendants (Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
