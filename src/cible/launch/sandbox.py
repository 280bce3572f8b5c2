"""A job's command cannot see the workspace it runs for: no token, no database, no other run.

Jobs run as the server's own user, so file modes alone cannot keep them out of ``$CIBLE_HOME``.
Before the command starts (a ``preexec_fn``), the launcher puts it in a user namespace that maps
only that user (root stays root for the files it owns) with a mount namespace of its own, where
the workspace folder is an empty read-only tmpfs with only what the job needs bound back into it:
its run folder and outputs (read-write) and the datastores (read-only). A Landlock domain then
keeps the command from reaching into any process outside it (ptrace, /proc/<pid>/mem|root,
signals), and the user namespace from other processes' /proc/<pid>/environ: the server's memory
holds the token and its /proc/<pid>/root is the unhidden tree. A root command also loses
CAP_SYS_ADMIN, so it cannot unmount the cover. What a root command cannot do in a user namespace
(chown to users it does not map, e.g. apt-get's) needs CIBLE_JOB_SANDBOX=off.

Stdlib only (ctypes), like the rest of the launcher.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_CAPBSET_DROP = 24
CAP_SYS_ADMIN = 21
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_RESTRICT_SELF = 444, 446  # the same on x86_64 and arm64
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_ACCESS_FS_MAKE_BLOCK = 1 << 11  # handled and never granted: no block device nodes
LANDLOCK_SCOPE_SIGNAL = 1 << 1  # ABI 6: no signals to processes outside the domain
# The mount flags a bind's read-only remount must keep (the kernel refuses to drop locked ones).
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC))
MODES = ("auto", "required", "off")  # CIBLE_JOB_SANDBOX: auto runs a job unhidden where it cannot be made

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SandboxError(OSError):
    """The sandbox could not be made on this machine."""


@dataclass(frozen=True)
class Sandbox:
    hide: Path  # the folder the command cannot see (the workspace)
    writable: tuple[Path, ...] = field(default_factory=tuple)  # bound back read-write (its wd, outputs)
    readable: tuple[Path, ...] = field(default_factory=tuple)  # bound back read-only (inputs, datastores)
    protect: tuple[Path, ...] = field(default_factory=tuple)  # elsewhere, made read-only (cible's install)

    @classmethod
    def from_plan(cls, plan: dict, writable: list[Path], readable: list[Path] = (),  # type: ignore[assignment]
                  protect: list[Path] = ()) -> Sandbox | None:  # type: ignore[assignment]
        """The plan's sandbox (the server says what to hide), or None for a plan that has none.

        A path bound back must lie strictly inside the hidden folder and reach it through no link:
        a link planted where a later job's output goes would otherwise bind the whole workspace."""
        spec = plan.get("sandbox")
        if not spec or not Path(spec["hide"]).is_dir():  # a node on another machine: nothing of it here
            return None
        hide = Path(spec["hide"])
        if plan.get("env_cache"):  # only where it lies in the workspace; a command may pip install into it
            writable = [*writable, Path(plan["env_cache"])]
        readable = [*readable, *map(Path, spec.get("readable", []))]
        return cls(hide, tuple(p for p in writable if _inside(p, hide)), tuple(p for p in readable if _inside(p, hide)),
                   tuple(p for p in map(Path, protect) if p.is_dir() and not _inside(hide, p) and p != hide))

    def probe(self, cwd: Path) -> str | None:
        """Why the sandbox cannot be made here (tried in a throwaway child), or None when it can."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: try, say why not, and go
            os.close(read)
            try:
                self.enter(cwd)
                code = 0
            except BaseException as exc:  # noqa: BLE001  (anything at all is a reason to say)
                os.write(write, str(exc).encode()[:2000])
                code = 1
            os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as fh:
            why = fh.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        return None if os.waitstatus_to_exitcode(status) == 0 else (why or "the sandbox's probe failed")

    def preexec(self, cwd: Path) -> Callable[[], None]:
        """For Popen(preexec_fn=...): enter the sandbox in the child, then go (back) to `cwd`."""
        return lambda: self.enter(cwd)

    def enter(self, cwd: Path) -> None:
        """Hide the workspace from this process and what it starts (call in a fresh child)."""
        uid, gid = os.geteuid(), os.getegid()
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing of this reaches the host's mounts
        for path in self.protect:  # the server runs this code again: no job may change it
            _mount(str(path), str(path), None, MS_BIND | MS_REC)
            _remount_read_only(path)
        _cover_user_sockets(uid)
        kept = [(p, True) for p in self.writable if p.exists()] + [(p, False) for p in self.readable if p.exists()]
        # Opened before the cover goes on: the binds come from these, not from the covered paths.
        handles = sorted(((p, writable, p.is_dir(), os.open(p, os.O_PATH | os.O_CLOEXEC)) for p, writable in kept),
                         key=lambda h: len(h[0].parts))
        _mount("tmpfs", str(self.hide), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        for path, writable, is_dir, fd in handles:  # parents first: a folder may lie in one bound before
            if is_dir:
                path.mkdir(parents=True, exist_ok=True)
            elif not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            _mount(f"/proc/self/fd/{fd}", str(path), None, MS_BIND | MS_REC)
            if not writable:
                _remount_read_only(path)
            os.close(fd)
        _mount(None, str(self.hide), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        _landlock()
        if uid == 0:  # after exec, a root command gets no CAP_SYS_ADMIN: it cannot unmount the cover
            _check(_libc.prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0), "prctl(PR_CAPBSET_DROP)")
        os.chdir(cwd)  # the old cwd is a path of the unhidden tree


def installation() -> list[Path]:
    """What a job may not change because cible runs it again: this Python and cible's own code."""
    import cible

    return [Path(sys.prefix), Path(sys.base_prefix), Path(cible.__file__).parent]


def mode() -> str:
    value = os.environ.get("CIBLE_JOB_SANDBOX", "auto").lower()
    return value if value in MODES else "auto"


def _landlock() -> None:
    """A Landlock domain for the command: processes outside it are out of its reach."""
    abi = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        raise SandboxError(ctypes.get_errno(), "Landlock is not available in this kernel")

    class Attr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    attr = Attr(LANDLOCK_ACCESS_FS_MAKE_BLOCK, 0, LANDLOCK_SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(Attr) if abi >= 6 else 16 if abi >= 4 else 8
    fd = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    _check(fd, "landlock_create_ruleset")
    try:
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0), "landlock_restrict_self")
    finally:
        os.close(fd)


def _remount_read_only(path: Path) -> None:
    """Make a bind mount read-only, keeping the flags the kernel will not let it drop."""
    flags = os.statvfs(path).f_flag
    locked = sum(ms for st, ms in _KEPT_FLAGS if flags & st)
    _mount(None, str(path), None, MS_REMOUNT | MS_BIND | MS_RDONLY | locked)


def _cover_user_sockets(uid: int) -> None:
    """Out of reach: the user's session bus (systemd-run --user would run a command outside the
    sandbox) and a Docker socket (a container with the host's / mounted)."""
    for name in (f"/run/user/{uid}", "/run/docker.sock", "/var/run/docker.sock"):
        if os.path.isdir(name) and not os.path.islink(name):
            _mount("tmpfs", name, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=4k")
        elif os.path.exists(name):
            _mount("/dev/null", name, None, MS_BIND)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
           f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _check(result: int, what: str) -> None:
    if result < 0:
        errno = ctypes.get_errno()
        raise SandboxError(errno, f"{what}: {os.strerror(errno)}")


def _inside(path: Path, parent: Path) -> bool:
    """`path` lies strictly inside `parent`, and no link below `parent` leads it elsewhere."""
    for base in {os.path.abspath(parent), os.path.realpath(parent)}:
        rel = os.path.relpath(os.path.abspath(path), base)
        if rel != "." and rel != ".." and not rel.startswith("../"):
            return os.path.realpath(path) == os.path.join(os.path.realpath(parent), rel)
    return False
