"""This machine's processes, read from /proc (Linux), with the standard library only.

The node side (agent, launcher, limits) runs on attached hosts that have nothing but Python 3, so it
cannot use psutil; this is the part of psutil's API it used, with psutil's names and semantics where
callers or records depend on them:

- `create_time()` is psutil's: the start in clock ticks since boot (/proc/<pid>/stat, field 22) over
  CLK_TCK, plus the boot time (/proc/stat `btime`), so `agent.json` and run handles written with
  either give the same float for the same process.
- A `Process` remembers when its process started: once the pid is reused by another process, its
  methods raise `NoSuchProcess` and `is_running()` is False; a signal never reaches the newcomer.
- `wait()` and `wait_procs()` reap a process that is the caller's child (as psutil does) and count a
  zombie of another parent as gone: it has ended, and only its parent can collect it.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
STATUS_ZOMBIE = "zombie"
# /proc/<pid>/stat's state letter → psutil's status names (only "zombie" is acted on)
_STATUSES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped", "t": "tracing-stop",
             "Z": STATUS_ZOMBIE, "X": "dead", "x": "dead", "K": "wake-kill", "W": "waking", "I": "idle",
             "P": "parked"}
# Indexes in the fields after the command name of /proc/<pid>/stat (field n of proc(5) is n - 3).
_STATE, _PPID, _UTIME, _STIME, _STARTTIME = 0, 1, 11, 12, 19
_POLL_MAX_S = 0.04  # the longest pause between two looks at a process being waited for

MemoryInfo = namedtuple("MemoryInfo", "rss vms")
CpuTimes = namedtuple("CpuTimes", "user system")


class Error(Exception):
    """Base of this module's errors (psutil.Error)."""


class NoSuchProcess(Error):
    def __init__(self, pid: int, msg: str | None = None) -> None:
        super().__init__(msg or f"process {pid} does not exist (any more)")
        self.pid = pid


class AccessDenied(Error):
    def __init__(self, pid: int, msg: str | None = None) -> None:
        super().__init__(msg or f"not allowed to act on process {pid}")
        self.pid = pid


class TimeoutExpired(Error):
    def __init__(self, seconds: float | None, pid: int | None = None) -> None:
        super().__init__(f"process {pid} still runs after {seconds} s")
        self.seconds = seconds
        self.pid = pid


def _read(pid: int, name: str) -> bytes:
    try:
        with open(f"{PROC}/{pid}/{name}", "rb") as fh:
            return fh.read()
    except PermissionError:
        raise AccessDenied(pid) from None
    except OSError as exc:  # ENOENT: no such pid; ESRCH: it exited while read
        if exc.errno in (errno.ENOENT, errno.ESRCH, errno.ENOTDIR):
            raise NoSuchProcess(pid) from None
        raise


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the command name, which may hold spaces and parentheses
    itself: the last ')' ends it."""
    data = _read(pid, "stat")
    fields = data[data.rfind(b")") + 2:].split()
    if len(fields) <= _STARTTIME:  # empty: it ended while read
        raise NoSuchProcess(pid)
    return fields


def boot_time() -> float:
    """When this machine booted, in seconds since the epoch (psutil.boot_time)."""
    with open(f"{PROC}/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise RuntimeError(f"no btime line in {PROC}/stat")


def cpu_count() -> int | None:
    """The machine's CPUs (psutil.cpu_count(); None when unknown)."""
    return os.cpu_count()


def total_memory() -> int:
    """The machine's memory in bytes (psutil.virtual_memory().total): MemTotal of /proc/meminfo."""
    with open(f"{PROC}/meminfo", "rb") as fh:
        for line in fh:
            if line.startswith(b"MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    raise RuntimeError(f"no MemTotal line in {PROC}/meminfo")


def pids() -> list[int]:
    return sorted(int(name) for name in os.listdir(PROC) if name.isdigit())


def pid_exists(pid: int) -> bool:
    """Whether a process (not a thread) has this pid; a zombie counts, as in psutil."""
    if pid <= 0:  # os.kill(0, …) would signal our own group: never a pid a record holds
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    try:  # kill() also takes a thread's id: only the leader of its thread group is a process
        for line in _read(pid, "status").splitlines():
            if line.startswith(b"Tgid:"):
                return int(line.split()[1]) == pid
    except Error:
        return False
    return True


class Process:
    """One process, tied to the pid it had when made (psutil.Process's subset the node side uses)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = int(_stat(pid)[_STARTTIME])  # NoSuchProcess when there is none
        self.returncode: int | None = None  # set when wait()/wait_procs() reaped it

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Process) and (self.pid, self._ticks) == (other.pid, other._ticks)

    def __hash__(self) -> int:
        return hash((self.pid, self._ticks))

    def __repr__(self) -> str:
        return f"Process(pid={self.pid})"

    def _fields(self) -> list[bytes]:
        """This process's stat fields; NoSuchProcess once its pid is gone or another process's."""
        fields = _stat(self.pid)
        if int(fields[_STARTTIME]) != self._ticks:
            raise NoSuchProcess(self.pid, f"process {self.pid} ended (its pid now names another process)")
        return fields

    def create_time(self) -> float:
        """When it started, in seconds since the epoch (psutil's float, boot time read each call as psutil does)."""
        return self._ticks / CLOCK_TICKS + boot_time()

    def is_running(self) -> bool:
        """True while its pid still names it (a zombie still runs, as in psutil: see `status`)."""
        try:
            self._fields()
        except Error:
            return False
        return True

    def status(self) -> str:
        return _STATUSES.get(chr(self._fields()[_STATE][0]), "unknown")

    def ppid(self) -> int:
        return int(self._fields()[_PPID])

    def memory_info(self) -> MemoryInfo:
        self._fields()
        size, resident = _read(self.pid, "statm").split()[:2]
        return MemoryInfo(rss=int(resident) * PAGE_SIZE, vms=int(size) * PAGE_SIZE)

    def cpu_times(self) -> CpuTimes:
        fields = self._fields()
        return CpuTimes(user=int(fields[_UTIME]) / CLOCK_TICKS, system=int(fields[_STIME]) / CLOCK_TICKS)

    def children(self, recursive: bool = False) -> list[Process]:
        """Its children (with `recursive`, all its descendants), each younger than it: a process older
        than its parent holds a pid reused after the real child ended."""
        self._fields()
        by_parent: dict[int, list[int]] = {}
        for pid, ppid in _parents().items():
            by_parent.setdefault(ppid, []).append(pid)
        found: list[Process] = []
        todo, seen = [self], {self.pid}
        while todo:
            parent = todo.pop()
            for pid in by_parent.get(parent.pid, ()):
                if pid in seen:
                    continue
                seen.add(pid)
                try:
                    child = Process(pid)
                except Error:
                    continue
                if child._ticks < parent._ticks:
                    continue
                found.append(child)
                if recursive:
                    todo.append(child)
        return found

    def send_signal(self, sig: int) -> None:
        self._fields()  # a pid now another process's is never signalled
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise NoSuchProcess(self.pid) from None
        except PermissionError:
            raise AccessDenied(self.pid) from None

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until it ends; its exit code when it was this process's child (reaped here), else None.
        Raises TimeoutExpired when it still runs after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0001
        while not self._ended():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutExpired(timeout, self.pid)
            time.sleep(pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _POLL_MAX_S)
        return self.returncode

    def _ended(self) -> bool:
        """Whether it has ended: reaped here if it was our child, else gone or a zombie."""
        if not self.is_running():
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not our child: a zombie has ended too, only its parent can collect it
            try:
                return self.status() == STATUS_ZOMBIE
            except Error:
                return True
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        return True


def _parents() -> dict[int, int]:
    """Each process's parent pid."""
    found = {}
    for pid in pids():
        try:
            found[pid] = int(_stat(pid)[_PPID])
        except (Error, IndexError, ValueError):
            continue  # ended while the list was read
    return found


def process_iter() -> Iterator[Process]:
    """Every process now running (those that end meanwhile are skipped)."""
    for pid in pids():
        try:
            yield Process(pid)
        except Error:
            continue


def wait_procs(procs: Iterable[Process], timeout: float | None = None) -> tuple[list[Process], list[Process]]:
    """Wait up to `timeout` seconds (None: for ever) for every one of `procs` to end: (gone, alive)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    alive, gone = list(procs), []
    pause = 0.0001
    while alive:
        still = []
        for proc in alive:
            (gone if proc._ended() else still).append(proc)
        alive = still
        if not alive or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(pause)
        pause = min(pause * 2, _POLL_MAX_S)
    return gone, alive


def alive(pid: int, create_time: float | None = None, tolerance_s: float = 1.0) -> bool:
    """Whether `pid` runs and is no zombie; with `create_time` (a record's), whether it is still that
    process: a start more than `tolerance_s` off means the pid was reused."""
    try:
        proc = Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > tolerance_s:
            return False
        return proc.status() != STATUS_ZOMBIE
    except Error:
        return False


def create_time(pid: int) -> float | None:
    """`pid`'s start (see `Process.create_time`), or None when no such process runs."""
    try:
        return Process(pid).create_time()
    except Error:
        return None
