"""Holding a `local` node to its VM size: vCPUs, memory and GPUs on this machine.

A node of the `local` provider is a `cible agent` process on this machine; what its
jobs run is held to the node's size by one of three mechanisms, picked by
`detect_mechanism` (which really creates and removes a test group):

- ``cgroup-v1``: a group per node in the v1 ``memory``, ``cpu`` (and ``cpuacct``)
  hierarchies: ``memory.limit_in_bytes`` (and ``memsw``) = the size's memory, and a CFS
  quota of ``vcpus`` × the period.
- ``cgroup-v2``: the same through ``memory.max`` (``memory.swap.max`` = 0) and ``cpu.max``.
- ``watchdog``: where no cgroup can be written (not root, read-only, no controllers):
  the processes are pinned to ``vcpus`` CPUs with sched_setaffinity, and a thread samples
  the process tree's RSS every 0.2 s and SIGKILLs the whole tree once past the limit.

Either way a job that needs more memory than its size is killed with SIGKILL, as the
kernel's OOM killer would on that VM, and `NodeLimits.oom_killed` says so, so the job
can be reported as out of memory rather than as a bare exit 137.

Decisions:
- Memory is in GiB (Azure's sizes are), rounded down to whole pages.
- vCPUs beyond the host's are shared, never refused (Azure's default size, Standard_DS3_v2,
  has 4 vCPUs; its examples must run on a 2-core machine): the CPU quota is capped to the
  host's CPUs, since a quota above them limits nothing. Memory and GPUs must fit the host
  unless overcommitted: a job past its memory is killed, a missing GPU cannot be shared.
- With overcommit, the memory limit is still the size's memory, not capped to the host:
  a limit above the host's memory holds nothing back (the host runs out first) and
  keeps what the node reports equal to its size.
- Under cgroups the CPU limit is a quota, not a CPU set: a 1-vCPU node may run on any CPU
  but gets one CPU's worth of time per 100 ms; several nodes share the host fairly.
- `CIBLE_LIMITS_MECHANISM` (cgroup-v1 | cgroup-v2 | watchdog) forces the mechanism.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cible.node import cgroups, gpus
from cible.node.proc import STATUS_ZOMBIE, Process, cpu_count, total_memory
from cible.node.proc import Error as ProcessError

log = logging.getLogger(__name__)

MECHANISMS = ("cgroup-v1", "cgroup-v2", "watchdog")
ENV_MECHANISM = "CIBLE_LIMITS_MECHANISM"
WATCH_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Shape:
    vcpus: int
    memory_gb: float
    gpus: int = 0

    def describe(self, gpus: bool | None = None) -> str:
        """Like "2 vCPUs and 8 GB", or "2 vCPUs, 8 GB and 1 GPU" when it has GPUs (or `gpus` says to name them)."""
        cpus = f"{self.vcpus} vCPU{'s' if self.vcpus != 1 else ''}"
        if gpus or (gpus is None and self.gpus):
            return f"{cpus}, {_gb(self.memory_gb)} GB and {self.gpus} GPU{'s' if self.gpus != 1 else ''}"
        return f"{cpus} and {_gb(self.memory_gb)} GB"


class LimitError(Exception):
    """A size this host cannot hold, or limits that could not be set up; `.message` says what and how to fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _gb(value: float) -> str:
    return f"{round(value, 1):g}"


def host_capacity() -> Shape:
    """What this machine offers: the CPUs this process may run on, its memory (under the
    caller's own cgroup limit, if any), and the GPUs it lends to cible (cible.node.gpus)."""
    try:
        vcpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        vcpus = cpu_count() or 1
    memory = total_memory()
    own = _own_cgroup_limits()
    if own.get("memory"):
        memory = min(memory, own["memory"])
    if own.get("cpus"):
        vcpus = max(1, min(vcpus, int(own["cpus"])))
    return Shape(vcpus=vcpus, memory_gb=memory / 2**30, gpus=len(gpus.discover()))


def _own_cgroup_limits() -> dict[str, float]:
    """The memory limit and CPU quota the calling process is itself under (best effort)."""
    out: dict[str, float] = {}
    try:
        hierarchies = cgroups.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        own = cgroups.parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return out
    for h in hierarchies:
        try:
            if h.version == 1 and "memory" in h.controllers:
                d = cgroups._under(h, own.get("memory", "/"))
                value = int((d / "memory.limit_in_bytes").read_text())
                if value < 2**60:
                    out["memory"] = value
            elif h.version == 1 and "cpu" in h.controllers:
                d = cgroups._under(h, own.get("cpu", "/"))
                quota = int((d / "cpu.cfs_quota_us").read_text())
                if quota > 0:
                    out["cpus"] = quota / int((d / "cpu.cfs_period_us").read_text())
            elif h.version == 2 and "" in own:
                d = cgroups._under(h, own[""])
                raw = (d / "memory.max").read_text().strip() if (d / "memory.max").exists() else "max"
                if raw != "max":
                    out["memory"] = int(raw)
                if (d / "cpu.max").exists():
                    quota, _, period = (d / "cpu.max").read_text().strip().partition(" ")
                    if quota != "max":
                        out["cpus"] = int(quota) / int(period)
        except (OSError, ValueError):
            continue
    return out


def check_fits(shape: Shape, host: Shape, *, overcommit: bool, size: str = "this size") -> None:
    """Raise LimitError when `host` lacks `shape`'s memory or GPUs and overcommit was not asked
    for. vCPUs are not checked: beyond the host's they are shared (`shared_vcpus`).

    Pure. `host` is what is left to give: the machine's capacity (`host_capacity()`), or
    that less what other nodes hold (`remaining`) when the caller accounts for them.
    """
    if overcommit:
        return
    short = []
    if shape.memory_gb > host.memory_gb + 1e-9:
        short.append("memory")
    if shape.gpus > host.gpus:
        short.append("GPUs")
    if not short:
        return
    host_text = host.describe(gpus=bool(shape.gpus or host.gpus))
    fix = "pick a smaller size or pass --overcommit"
    if short == ["GPUs"]:
        fix = "pick a size without GPUs, use a machine with them, or pass --overcommit"
    raise LimitError(f"the host has {host_text}; {size} needs {shape.describe()}; {fix}")


def shared_vcpus(shape: Shape, host: Shape, *, size: str = "this size") -> str | None:
    """The warning for a size with more vCPUs than `host`, whose nodes then share the host's CPUs; else None. Pure."""
    if shape.vcpus <= host.vcpus:
        return None
    return (f"{size} has {shape.vcpus} vCPUs and this machine {host.vcpus}: each node shares the machine's "
            f"{host.vcpus} CPUs (its CPU limit is {host.vcpus}, not {shape.vcpus}); quotas still count "
            f"{shape.vcpus} vCPUs a node")


def missing_gpus(shape: Shape, host: Shape, *, size: str = "this size") -> str | None:
    """The warning for a size with more GPUs than `host` (stored only overcommitted): its nodes get what
    the host has, shared between them when none is free, and none on a host without GPUs. Pure."""
    if shape.gpus <= host.gpus:
        return None
    count = f"{shape.gpus} GPU{'s' if shape.gpus != 1 else ''}"
    if host.gpus == 0:
        return (f"{size} has {count} and this machine none: its nodes get no GPU here (overcommitted), so their "
                "jobs run on CPUs; run it where GPUs are (another node provider, or a machine with them)")
    return (f"{size} has {count} and this machine {host.gpus}: each node gets at most the machine's {host.gpus} "
            "(overcommitted: shared with other nodes when none is free)")


def remaining(host: Shape, held: Iterable[Shape]) -> Shape:
    """What `host` has left once the nodes in `held` are counted (never below zero)."""
    held = list(held)
    return Shape(
        vcpus=max(0, host.vcpus - sum(s.vcpus for s in held)),
        memory_gb=max(0.0, host.memory_gb - sum(s.memory_gb for s in held)),
        gpus=max(0, host.gpus - sum(s.gpus for s in held)),
    )


_last_probe: dict[str, str] = {}


def detect_mechanism() -> str:
    """One of cgroup-v1, cgroup-v2 or watchdog: the first that really works here (a test group
    is created with limits and removed), unless CIBLE_LIMITS_MECHANISM names one."""
    forced = os.environ.get(ENV_MECHANISM, "").strip()
    if forced:
        if forced not in MECHANISMS:
            raise LimitError(f"{ENV_MECHANISM}={forced!r} is not one of {', '.join(MECHANISMS)}")
        return forced
    reasons = []
    for version in (1, 2):  # a controller sits in one hierarchy only, so at most one of these can hold both
        ok, why = cgroups.probe(version)
        if ok:
            _last_probe["reason"] = why
            return f"cgroup-v{version}"
        reasons.append(why)
    _last_probe["reason"] = "; ".join(reasons)
    return "watchdog"


def why_watchdog() -> str:
    """Why the last `detect_mechanism` fell back to the watchdog (for logs and test skips)."""
    return _last_probe.get("reason", "")


def cpus_for(node_id: str, vcpus: int, available: list[int]) -> list[int]:
    """`vcpus` of the `available` CPUs for a watchdog node: a stable, node-dependent
    window, so several small nodes on one host spread over its CPUs. Pure."""
    available = sorted(available)
    n = max(1, min(vcpus, len(available)))
    start = zlib.crc32(node_id.encode()) % len(available)
    return sorted(available[(start + i) % len(available)] for i in range(n))


class _Watchdog:
    """Samples a process tree's RSS and SIGKILLs it past the limit; pins it to some CPUs."""

    def __init__(self, node_id: str, limit_bytes: int, cpus: list[int]) -> None:
        self.node_id = node_id
        self.limit = limit_bytes
        self.cpus = cpus
        self.kills = 0
        self.killed_pids: list[int] = []
        self.peak = 0
        self._known: dict[int, Process] = {}
        self._cpu_seen: dict[int, float] = {}
        self._cpu_gone = 0.0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pin(self, pid: int) -> None:
        for tid in _tasks(pid):
            try:
                os.sched_setaffinity(tid, self.cpus)
            except (ProcessLookupError, PermissionError, OSError):
                pass

    def add(self, pid: int) -> None:
        self.pin(pid)
        proc = Process(pid)
        with self._lock:
            self._known[pid] = proc
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"cible-watchdog-{self.node_id}", daemon=True)
            self._thread.start()
        self.sample()  # at once, so a tree already over its limit does not get a head start

    def _tree(self) -> list[Process]:
        """The live processes of the tree; those seen once stay watched even if re-parented."""
        with self._lock:
            for pid, proc in list(self._known.items()):
                if not _alive(proc):
                    self._cpu_gone += self._cpu_seen.pop(pid, 0.0)
                    del self._known[pid]
                    continue
                try:
                    for child in proc.children(recursive=True):
                        self._known.setdefault(child.pid, child)
                except ProcessError:
                    pass
            return [p for p in self._known.values() if _alive(p)]

    def sample(self) -> int:
        rss = 0
        procs = self._tree()
        for p in procs:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                self._cpu_seen[p.pid] = t.user + t.system
            except ProcessError:
                pass
        self.peak = max(self.peak, rss)
        if rss > self.limit and procs:
            self.kill(procs)
            with self._lock:
                self.kills += 1
                self.killed_pids.extend(p.pid for p in procs)
                for p in procs:  # dying, not to be counted (or killed) again while the kernel tears them down
                    self._cpu_gone += self._cpu_seen.pop(p.pid, 0.0)
                    self._known.pop(p.pid, None)
        return rss

    def kill(self, procs: list[Process] | None = None) -> None:
        for p in procs if procs is not None else self._tree():
            try:
                p.send_signal(signal.SIGKILL)
            except ProcessError:
                pass

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                self.sample()
            except Exception:  # the watchdog must outlive one bad sample
                log.exception("watchdog of node %s: a sample failed", self.node_id)

    def pids(self) -> list[int]:
        return [p.pid for p in self._tree()]

    def usage(self) -> dict:
        rss = self.sample()
        with self._lock:
            cpu = self._cpu_gone + sum(self._cpu_seen.get(pid, 0.0) for pid in self._known)
        return {
            "memory_bytes": rss,
            "memory_peak_bytes": self.peak,
            "memory_limit_bytes": self.limit,
            "cpu_seconds": cpu,
            "cpu_limit": float(len(self.cpus)),
            "cpus": list(self.cpus),
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None


def _alive(proc: Process) -> bool:
    try:
        return proc.is_running() and proc.status() != STATUS_ZOMBIE
    except ProcessError:
        return False


def _tasks(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


class NodeLimits:
    """The limits of one node: create the group(s), put processes in, read usage and OOM kills, destroy.

    `create` is idempotent (it re-applies the limits to an existing group), so another
    process can build a NodeLimits for the same node id and attach to its groups; the
    watchdog, though, lives in the process that called `add`.
    """

    def __init__(
        self,
        node_id: str,
        shape: Shape,
        *,
        mechanism: str | None = None,
        host: Shape | None = None,
        overcommit: bool = False,
        size: str | None = None,
        denied_gpus: list[int] | None = None,
    ) -> None:
        self.node_id = node_id
        self.shape = shape
        # The /dev/nvidia minors of the machine's GPUs that are not the node's (cible.node.gpus): where a v1
        # devices hierarchy is mounted, its processes cannot open them, whatever CUDA_VISIBLE_DEVICES says.
        self.denied_gpus = denied_gpus or []
        self.devices_held: bool | None = None  # whether the device rules were written (None: none to write)
        self.host = host or host_capacity()
        self.overcommit = overcommit
        self.size = size or "this size"
        self.mechanism = mechanism or detect_mechanism()
        if self.mechanism not in MECHANISMS:
            raise LimitError(f"unknown limits mechanism {self.mechanism!r}; use one of {', '.join(MECHANISMS)}")
        self.memory_limit = cgroups.memory_bytes(shape.memory_gb)
        self._group: cgroups.V1Group | cgroups.V2Group | None = None
        self._watchdog: _Watchdog | None = None
        self._destroyed = False
        if self.mechanism == "watchdog":
            try:
                available = sorted(os.sched_getaffinity(0))
            except AttributeError:
                available = list(range(cpu_count() or 1))
            self._watchdog = _Watchdog(node_id, self.memory_limit, cpus_for(node_id, shape.vcpus, available))
        else:
            try:
                self._group = (cgroups.V1Group if self.mechanism == "cgroup-v1" else cgroups.V2Group)(node_id)
            except OSError as e:
                raise LimitError(
                    f"cannot use {self.mechanism} for node {node_id}: {e.strerror or e}; "
                    f"set {ENV_MECHANISM}=watchdog to limit it without cgroups"
                ) from e

    def create(self) -> None:
        """Check the size fits (unless overcommitting) and make the group(s) with their limits."""
        check_fits(self.shape, self.host, overcommit=self.overcommit, size=self.size)
        self._destroyed = False
        if self._group is not None:
            try:
                self._group.create(self.memory_limit, self.shape.vcpus, self.host.vcpus)
                if self.denied_gpus and isinstance(self._group, cgroups.V1Group):
                    self.devices_held = self._group.deny_devices([(gpus.NVIDIA_MAJOR, m) for m in self.denied_gpus])
                elif self.denied_gpus:
                    self.devices_held = False  # cgroup v2 holds devices through an eBPF program, not a file
            except OSError as e:
                where = f" ({e.filename})" if e.filename else ""
                raise LimitError(
                    f"cannot set up {self.mechanism} limits for node {self.node_id}: "
                    f"{e.strerror or e}{where}; run as root with a writable cgroup file system, "
                    f"or set {ENV_MECHANISM}=watchdog"
                ) from e

    def add(self, pid: int) -> None:
        """Put a running process (and so its future children) under the node's limits."""
        if self._destroyed:
            raise LimitError(f"node {self.node_id} has been destroyed; create it again before adding processes")
        if self._group is not None:
            try:
                self._group.add(pid)
            except OSError as e:
                raise LimitError(
                    f"cannot move process {pid} into node {self.node_id}'s group: {e.strerror or e}"
                ) from e
        else:
            assert self._watchdog is not None
            self._watchdog.add(pid)

    def oom_count(self) -> int:
        """How many times the node's processes were killed for memory so far."""
        if self._group is not None:
            return self._group.oom_kills()
        assert self._watchdog is not None
        return self._watchdog.kills

    def oom_killed(self, since: int = 0) -> bool:
        """Whether the node was OOM-killed after `oom_count()` read `since` (take it before starting a job)."""
        return self.oom_count() > since

    def pids(self) -> list[int]:
        """The processes now held by the node."""
        if self._group is not None:
            return self._group.pids()
        assert self._watchdog is not None
        return self._watchdog.pids()

    def usage(self) -> dict:
        """memory_bytes, memory_peak_bytes, memory_limit_bytes, cpu_seconds, cpu_limit, oom_kills, mechanism."""
        raw = self._group.usage() if self._group is not None else self._watchdog.usage()  # type: ignore[union-attr]
        return {"mechanism": self.mechanism, "oom_kills": self.oom_count(), **raw}

    def paths(self) -> list[Path]:
        """The node's group directories (none for the watchdog)."""
        if isinstance(self._group, cgroups.V1Group):
            return self._group.paths()
        return [self._group.dir] if self._group is not None else []

    def exists(self) -> bool:
        return self._group.exists() if self._group is not None else not self._destroyed

    def destroy(self) -> None:
        """Kill what is left in the node and remove its groups. Idempotent."""
        self._destroyed = True
        if self._group is not None:
            try:
                self._group.destroy()
            except OSError as e:
                raise LimitError(f"cannot remove node {self.node_id}'s cgroups: {e.strerror or e}") from e
        else:
            assert self._watchdog is not None
            self._watchdog.stop()
            self._watchdog.kill()


class _Join:
    """A preexec_fn that puts the new process under the node's limits before it execs.

    The group's cgroup.procs files are opened here, in the parent, close-on-exec, so the
    child only writes "0" (itself) to them: no allocation or path lookup after fork.
    """

    def __init__(self, limits: NodeLimits) -> None:
        self.fds: list[int] = []
        self.cpus: list[int] | None = None
        if limits._group is not None:
            self.fds = limits._group.join_fds()
        elif limits._watchdog is not None:
            self.cpus = limits._watchdog.cpus

    def __call__(self) -> None:
        for fd in self.fds:
            os.write(fd, b"0")
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def __del__(self) -> None:
        self.close()


def preexec_for(limits: NodeLimits) -> Callable[[], None]:
    """For ``Popen(..., preexec_fn=preexec_for(limits))``: the child joins the node's group
    (or, for the watchdog, its CPUs) before exec, so not one page escapes the limit.
    Call ``limits.add(proc.pid)`` after Popen as well: the watchdog needs it to watch the
    tree, and for cgroups it is harmless. Call ``.close()`` on it when done (or drop it)."""
    return _Join(limits)
