"""Control groups for `local` nodes: one group per node, under the caller's own group.

A node's group lives at ``<own cgroup>/cible/<node id>`` in each hierarchy used, so it
sits inside whatever the calling process is itself held to (a container, a systemd
slice) and never escapes it. Under cgroup v1 the node has a directory in the
``memory``, ``cpu`` and (when mounted apart from ``cpu``) ``cpuacct`` hierarchies;
under cgroup v2 one directory in the unified hierarchy, with ``+memory +cpu`` enabled
on the ``cible`` parent (and, where the caller's own group holds processes and so
cannot delegate controllers, ``cible`` goes next to it instead of inside it).

Everything here talks to the kernel through the cgroup file system; the pure parts
(`parse_mountinfo`, `parse_proc_cgroup`, `plan_v1`, `plan_v2`) are unit-tested alone.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT = "cible"
PERIOD_US = 100_000
_UNLIMITED_V1 = "-1"


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    mount: Path  # where it is mounted
    root: str  # the mount's root inside the hierarchy (mountinfo field 4), usually "/"
    controllers: frozenset[str]  # v1: the mount options naming controllers; v2: empty (read cgroup.controllers)


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """The cgroup hierarchies in a /proc/self/mountinfo text."""
    out: list[Hierarchy] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, superopts = rfields[0], rfields[2]
        mount = Path(fields[4].replace("\\040", " "))
        if fstype == "cgroup2":
            out.append(Hierarchy(2, mount, fields[3], frozenset()))
        elif fstype == "cgroup":
            names = frozenset(
                o
                for o in superopts.split(",")
                if o not in {"rw", "ro"}
                and "=" not in o
                and o
                not in {
                    "relatime",
                    "noatime",
                    "nosuid",
                    "nodev",
                    "noexec",
                    "clone_children",
                    "noprefix",
                    "xattr",
                    "cpuset_v2_mode",
                    "favordynmods",
                }
            )
            out.append(Hierarchy(1, mount, fields[3], names))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Controller -> path from a /proc/<pid>/cgroup text; the v2 entry is under the key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            out[""] = path
        for c in ctrls.split(","):
            if c:
                out[c] = path
    return out


def own_base(path: str) -> str:
    """The caller's group, less any ``/cible/<node>`` it already sits in (an agent inside its node)."""
    parts = path.strip("/").split("/") if path.strip("/") else []
    if PARENT in parts:
        parts = parts[: parts.index(PARENT)]
    return "/" + "/".join(parts)


def _under(h: Hierarchy, path: str) -> Path:
    root = h.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    elif root:  # the caller's group is outside what is mounted here: use the mount's top
        path = "/"
    return h.mount / path.lstrip("/")


def safe_name(node_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", node_id).strip(".") or "node"
    return name[:200]


def memory_bytes(memory_gb: float) -> int:
    """GiB to bytes, rounded down to whole 4 KiB pages (the unit the kernel keeps)."""
    return int(memory_gb * 2**30) // 4096 * 4096


def quota_us(vcpus: int, host_vcpus: int, period_us: int = PERIOD_US) -> int:
    """The CFS quota for `vcpus` CPUs per period, never more than the host has (more would limit nothing)."""
    return max(1, min(vcpus, max(host_vcpus, 1))) * period_us


def plan_v1(
    memory_limit: int, vcpus: int, host_vcpus: int, period_us: int = PERIOD_US
) -> dict[str, list[tuple[str, str]]]:
    """The files written, in order, per v1 controller. memsw is opened first so the memory limit can move either way."""
    return {
        "memory": [
            ("memory.memsw.limit_in_bytes?", _UNLIMITED_V1),
            ("memory.limit_in_bytes", str(memory_limit)),
            ("memory.memsw.limit_in_bytes?", str(memory_limit)),  # no escape into swap, where swap accounting is on
        ],
        "cpu": [
            ("cpu.cfs_period_us", str(period_us)),
            ("cpu.cfs_quota_us", str(quota_us(vcpus, host_vcpus, period_us))),
        ],
    }


def plan_v2(memory_limit: int, vcpus: int, host_vcpus: int, period_us: int = PERIOD_US) -> list[tuple[str, str]]:
    """The files written, in order, in the node's v2 group ("?" marks files that may be absent)."""
    return [
        ("memory.max", str(memory_limit)),
        ("memory.swap.max?", "0"),
        ("cpu.max", f"{quota_us(vcpus, host_vcpus, period_us)} {period_us}"),
    ]


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _apply(directory: Path, writes: list[tuple[str, str]]) -> None:
    for name, value in writes:
        optional = name.endswith("?")
        target = directory / name.rstrip("?")
        if optional and not target.exists():
            continue
        try:
            _write(target, value)
        except OSError:
            if not optional:
                raise


def _keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _pids(directory: Path) -> list[int]:
    try:
        return [int(p) for p in _read(directory / "cgroup.procs").split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _kill_and_remove(directories: list[Path], deadline_s: float = 10.0, kill_file: bool = False) -> None:
    """SIGKILL everything in the groups until they are empty, then remove them, children first."""
    deadline = time.monotonic() + deadline_s
    for d in directories:
        if not d.exists():
            continue
        if kill_file and (d / "cgroup.kill").exists():
            try:
                _write(d / "cgroup.kill", "1")
            except OSError:
                pass
        while True:
            pids = _pids(d)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)  # the killed tasks leave the group as the kernel reaps them; bounded by the deadline
        try:  # the shared parent goes once no node uses it, so nothing is left in the caller's group
            d.parent.rmdir()
        except OSError:
            pass


def _mkdir(path: Path) -> bool:
    """Create the group (and the `cible` parent); True if this call made it."""
    for _ in range(5):  # another node's destroy may remove the shared parent between the two mkdirs
        try:
            path.parent.mkdir(exist_ok=True)
            path.mkdir()
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:
            continue
    path.mkdir()
    return True


def _self_text(name: str) -> str:
    return Path(f"/proc/self/{name}").read_text()


# ---------------------------------------------------------------- cgroup v1


class V1Group:
    """A node's directories in the v1 memory, cpu and cpuacct hierarchies, and devices where mounted."""

    version = 1

    def __init__(
        self, node_id: str, hierarchies: list[Hierarchy] | None = None, own: dict[str, str] | None = None
    ) -> None:
        hierarchies = hierarchies if hierarchies is not None else parse_mountinfo(_self_text("mountinfo"))
        own = own if own is not None else parse_proc_cgroup(_self_text("cgroup"))
        name = safe_name(node_id)
        self.dirs: dict[str, Path] = {}
        for ctrl in ("memory", "cpu", "cpuacct", "devices"):
            h = next((h for h in hierarchies if h.version == 1 and ctrl in h.controllers), None)
            if h is None:
                if ctrl in ("cpuacct", "devices"):  # optional: accounting, and the GPUs' device files
                    continue
                raise OSError(errno.ENOENT, f"no cgroup v1 hierarchy with the {ctrl} controller is mounted")
            self.dirs[ctrl] = _under(h, own_base(own.get(ctrl, "/"))) / PARENT / name

    def paths(self) -> list[Path]:
        return self._unique()

    def _unique(self) -> list[Path]:
        seen: list[Path] = []
        for d in self.dirs.values():
            if d not in seen:
                seen.append(d)
        return seen

    def create(self, memory_limit: int, vcpus: int, host_vcpus: int) -> None:
        made: list[Path] = []
        try:
            for d in self._unique():
                try:
                    if _mkdir(d):
                        made.append(d)
                except OSError:
                    if d != self.dirs.get("devices"):
                        raise
                    del self.dirs["devices"]  # optional: the node goes on without device rules
            plan = plan_v1(memory_limit, vcpus, host_vcpus)
            _apply(self.dirs["memory"], plan["memory"])
            _apply(self.dirs["cpu"], plan["cpu"])
        except BaseException:
            _kill_and_remove(made)
            raise

    def deny_devices(self, devices: list[tuple[int, int]]) -> bool:
        """Forbid the group's processes the character devices (major, minor); False without a devices
        hierarchy it may write. The group's other rules are its parent's (by default, every device allowed)."""
        directory = self.dirs.get("devices")
        if directory is None:
            return False
        try:
            for major, minor in devices:
                _write(directory / "devices.deny", f"c {major}:{minor} rwm")
        except OSError:  # a hierarchy this process may not write: CUDA_VISIBLE_DEVICES alone hides them
            return False
        return True

    def add(self, pid: int) -> None:
        for d in self._unique():
            _write(d / "cgroup.procs", str(pid))

    def join_fds(self) -> list[int]:
        """Open cgroup.procs files (close-on-exec); writing "0" to one moves the writer."""
        return [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self._unique()]

    def pids(self) -> list[int]:
        return _pids(self.dirs["memory"])

    def oom_kills(self) -> int:
        try:
            ctl = _keyed(_read(self.dirs["memory"] / "memory.oom_control"))
        except FileNotFoundError:
            return 0
        if "oom_kill" in ctl:
            return ctl["oom_kill"]
        # kernels before 4.13 have no counter: a group that hit its limit and is or was under OOM
        return int(ctl.get("under_oom", 0) > 0)

    def usage(self) -> dict:
        mem = self.dirs["memory"]
        out: dict = {}
        try:
            out["memory_bytes"] = int(_read(mem / "memory.usage_in_bytes"))
            out["memory_peak_bytes"] = int(_read(mem / "memory.max_usage_in_bytes"))
            out["memory_limit_bytes"] = int(_read(mem / "memory.limit_in_bytes"))
        except FileNotFoundError:
            return {}
        acct = self.dirs.get("cpuacct")
        if acct is not None and (acct / "cpuacct.usage").exists():
            out["cpu_seconds"] = int(_read(acct / "cpuacct.usage")) / 1e9
        try:
            out["cpu_throttled_periods"] = _keyed(_read(self.dirs["cpu"] / "cpu.stat")).get("nr_throttled", 0)
            quota = int(_read(self.dirs["cpu"] / "cpu.cfs_quota_us"))
            period = int(_read(self.dirs["cpu"] / "cpu.cfs_period_us"))
            out["cpu_limit"] = quota / period if quota > 0 else None
        except FileNotFoundError:
            pass
        return out

    def exists(self) -> bool:
        return any(d.exists() for d in self._unique())

    def destroy(self) -> None:
        _kill_and_remove(self._unique())


# ---------------------------------------------------------------- cgroup v2


def _v2_hierarchy(hierarchies: list[Hierarchy]) -> Hierarchy:
    h = next((h for h in hierarchies if h.version == 2), None)
    if h is None:
        raise OSError(errno.ENOENT, "no cgroup v2 hierarchy is mounted")
    return h


class V2Group:
    """A node's directory in the unified hierarchy."""

    version = 2

    def __init__(
        self, node_id: str, hierarchies: list[Hierarchy] | None = None, own: dict[str, str] | None = None
    ) -> None:
        hierarchies = hierarchies if hierarchies is not None else parse_mountinfo(_self_text("mountinfo"))
        own = own if own is not None else parse_proc_cgroup(_self_text("cgroup"))
        h = _v2_hierarchy(hierarchies)
        self.mount = h.mount
        mine = _under(h, own_base(own.get("", "/")))
        # Candidates for the `cible` parent: inside the caller's group, else beside it.
        self.candidates = [mine / PARENT]
        if mine != h.mount:
            self.candidates.append(mine.parent / PARENT)
        self.name = safe_name(node_id)
        self.dir = next(
            (c / self.name for c in self.candidates if (c / self.name).exists()), self.candidates[0] / self.name
        )

    @staticmethod
    def _delegates(parent: Path) -> bool:
        try:
            enabled = set(_read(parent / "cgroup.subtree_control").split())
        except FileNotFoundError:
            return False
        return {"memory", "cpu"} <= enabled

    def _prepare_parent(self) -> Path:
        """A `cible` parent with memory and cpu delegated to its children."""
        errors: list[str] = []
        for parent in self.candidates:
            created = False
            try:
                if not parent.exists():
                    parent.mkdir()
                    created = True
                if not self._delegates(parent):
                    try:  # make the controllers available to `cible` (fails if the group above holds processes)
                        _write(parent.parent / "cgroup.subtree_control", "+memory +cpu")
                    except OSError:
                        pass
                    _write(parent / "cgroup.subtree_control", "+memory +cpu")
                if self._delegates(parent):
                    return parent
                errors.append(f"{parent}: memory and cpu are not available there")
            except OSError as e:
                errors.append(f"{parent}: {e.strerror or e}")
            if created:
                try:
                    parent.rmdir()
                except OSError:
                    pass
        raise OSError(errno.EACCES, "cannot delegate memory and cpu to a cgroup v2 group: " + "; ".join(errors))

    def create(self, memory_limit: int, vcpus: int, host_vcpus: int) -> None:
        if not self.dir.exists():
            self.dir = self._prepare_parent() / self.name
        made = _mkdir(self.dir)
        try:
            _apply(self.dir, plan_v2(memory_limit, vcpus, host_vcpus))
        except BaseException:
            if made:
                _kill_and_remove([self.dir])
            raise

    def add(self, pid: int) -> None:
        _write(self.dir / "cgroup.procs", str(pid))

    def join_fds(self) -> list[int]:
        return [os.open(self.dir / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)]

    def pids(self) -> list[int]:
        return _pids(self.dir)

    def oom_kills(self) -> int:
        try:
            return _keyed(_read(self.dir / "memory.events")).get("oom_kill", 0)
        except FileNotFoundError:
            return 0

    def usage(self) -> dict:
        out: dict = {}
        try:
            out["memory_bytes"] = int(_read(self.dir / "memory.current"))
        except FileNotFoundError:
            return {}
        if (self.dir / "memory.peak").exists():
            out["memory_peak_bytes"] = int(_read(self.dir / "memory.peak"))
        raw = _read(self.dir / "memory.max").strip()
        out["memory_limit_bytes"] = None if raw == "max" else int(raw)
        stat = _keyed(_read(self.dir / "cpu.stat"))
        out["cpu_seconds"] = stat.get("usage_usec", 0) / 1e6
        out["cpu_throttled_periods"] = stat.get("nr_throttled", 0)
        quota, _, period = _read(self.dir / "cpu.max").strip().partition(" ")
        out["cpu_limit"] = None if quota == "max" else int(quota) / int(period)
        return out

    def exists(self) -> bool:
        return self.dir.exists()

    def destroy(self) -> None:
        _kill_and_remove([self.dir], kill_file=True)


def probe(version: int) -> tuple[bool, str]:
    """Really create a group with limits and remove it. (works, why not)"""
    cls = V1Group if version == 1 else V2Group
    try:
        group = cls(f"probe-{os.getpid()}-{secrets.token_hex(3)}")
        group.create(memory_bytes(0.25), 1, 1)
    except OSError as e:
        return False, f"cgroup v{version}: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    try:
        group.destroy()
    except OSError as e:
        return False, f"cgroup v{version}: a test group could not be removed: {e}"
    return True, f"cgroup v{version} works"
