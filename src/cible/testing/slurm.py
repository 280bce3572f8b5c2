"""A real Slurm cluster on this machine for the Slurm tests: one slurmctld and three slurmd
"nodes" (node1..node3 at 127.0.0.2..4, each slurmd on a port of its own), with a munged of its
own, all under one private folder. Nothing of the machine's Slurm or munge setup is used or
touched: the munge key, socket, state, spool and logs are the cluster's, and every port is picked
free at start, so two clusters (two test modules, two CI jobs) run side by side.

Needs Debian's slurm-wlm and munge (scripts/test.sh installs them) and root: slurmd must start a
job as the user who submitted it (`SlurmdUser=root`). Jobs run as ordinary users, for example
`JOB_USER` (`ensure_job_user`); the conf folder and munge's socket are readable by every user.

Partitions: `debug` (default, no time limit) and `short` (MaxTime=1 minute, MaxNodes=1) for
refusals: `EnforcePartLimits=ALL` makes sbatch refuse a job over a partition's limits at submit
rather than leave it pending. Accounting is off (no slurmdbd): `sacct` says so, and `sacct -c`
reads the job completion file; cible.testing.slurm_accounting adds slurmdbd and a MariaDB of the
cluster's own (QOS limits, real `sacct`) through `_accounting_conf` and `_before_controller`.
Measured here (Slurm 22.05): every node idle about 1 s after start.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cible.testing.sshd import ensure_user

SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
MUNGED = "/usr/sbin/munged"
JOB_USER = "cible-slurm-user"  # submits over SSH in the Slurm tests, as a cible user would
NODES = ("node1", "node2", "node3")


def slurm_missing() -> str | None:
    """Why a test Slurm cluster cannot run here, or None."""
    for binary in (SLURMCTLD, SLURMD, MUNGED):
        if not os.path.exists(binary):
            return f"no {binary} (apt-get install slurm-wlm munge)"
    for command in ("sbatch", "squeue", "sinfo", "scontrol", "scancel"):
        if shutil.which(command) is None:
            return f"no {command} on PATH (apt-get install slurm-wlm)"
    if os.geteuid() != 0:
        return "slurmd starts jobs as their users only when it runs as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (apt-get install munge)"
    return None


def needs_slurm(*more: Callable[[], str | None]) -> None:
    """In a test: skip it when a test Slurm cluster (or what `more` check) cannot run here; under
    CI=true fail instead (scripts/test.sh installs Slurm there, so a missing one is a defect)."""
    import pytest

    for check in (slurm_missing, *more):
        if why := check():
            (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(why)


@contextmanager
def running_cluster() -> Iterator[SlurmTestCluster]:
    """A started test cluster (JOB_USER made first), stopped at the end: a module fixture's body."""
    ensure_job_user()
    cluster = SlurmTestCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


def ensure_job_user(name: str = JOB_USER) -> str:
    """A non-root Unix user who submits jobs (made once); its name."""
    ensure_user(name)
    return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmTestCluster:
    """`start()` munged, slurmctld and a slurmd per node, ready when `sinfo` shows every node idle;
    `stop()` cancels every job, ends what it started and removes `root`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cslurm-", dir="/tmp")))
    nodes: Sequence[str] = NODES
    cpus_per_node: int = 1
    memory_mb_per_node: int = 2000
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started_in_s: float | None = None  # how long start() took

    def __post_init__(self) -> None:
        # Unique per cluster, as its ports and folders are (slurmctld keeps the name in its state).
        self.cluster_name = f"ci{os.getpid()}{self.root.name.rsplit('-', 1)[-1].lower()}"[:30]
        self.controller_port = 0
        self.node_ports: dict[str, int] = {}

    # --- where things are -------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.conf_dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge-run" / "munge.socket"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def completions_file(self) -> Path:
        """The job completion log (`sacct -c` reads it: there is no accounting database)."""
        return self.log_dir / "jobcomp.txt"

    def node_address(self, node: str) -> str:
        return f"127.0.0.{2 + list(self.nodes).index(node)}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment Slurm commands (sbatch, squeue, …) need to reach this cluster: `base`
        (default: this process's environment) with SLURM_CONF. `env({})` is that variable alone,
        for an sshd's `SetEnv`, say."""
        return {**(os.environ if base is None else base), "SLURM_CONF": str(self.slurm_conf)}

    def workdir(self, user: str) -> Path:
        """A folder of `user`'s own under the cluster (0700), seen by every node (one machine): for
        scripts, `--chdir` and `--output`."""
        path = self.root / "users" / user
        path.mkdir(parents=True, exist_ok=True)
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)
        return path

    def run(self, argv: Sequence[str], *, user: str | None = None, timeout: float = 30,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A Slurm command against this cluster, as `user` (`runuser`; None: root), from the
        cluster's folder (sbatch's default working folder is the caller's). Not checked: the
        caller reads `returncode` and `stderr`."""
        prefix = ["runuser", "-u", user, "--"] if user else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout,
                              env=self.env(env), cwd=self.root, check=False)

    # --- start --------------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SlurmTestCluster:
        started = time.monotonic()
        for folder, mode in (("", 0o755), ("etc", 0o755), ("state", 0o700), ("spool", 0o755), ("log", 0o755),
                             ("run", 0o755), ("users", 0o755)):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
            (self.root / folder).chmod(mode)  # users' commands read etc/ and reach munge-run/
        try:
            self._start_munged()
            self._write_config()
            self._before_controller(started + timeout)
            self._spawn("slurmctld", [SLURMCTLD, "-D", "-i"])
            for node in self.nodes:
                self._spawn(node, [SLURMD, "-D", "-N", node])
            self._wait_until_idle(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - started
        return self

    def _start_munged(self) -> None:
        """munged as the munge user with a key made for this cluster; it runs in the foreground (-F),
        so the cluster holds its process."""
        munge_dir, run_dir = self.root / "munge", self.munge_socket.parent
        for folder, mode in ((munge_dir, 0o700), (run_dir, 0o755)):
            folder.mkdir(exist_ok=True)
            shutil.chown(folder, "munge", "munge")
            folder.chmod(mode)
        key = munge_dir / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(128))  # what `mungekey --create` writes: 1024 random bits
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        self._spawn("munged", [MUNGED, "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={run_dir / 'munged.pid'}", f"--seed-file={munge_dir / 'seed'}",
                               f"--log-file={munge_dir / 'munged.log'}"], as_user="munge")
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start: {self._tail(munge_dir / 'munged.log')}")
            time.sleep(0.02)

    def _accounting_conf(self) -> str:
        """slurm.conf's accounting lines: none here (no slurmdbd)."""
        return "AccountingStorageType=accounting_storage/none"

    def _before_controller(self, deadline: float) -> None:
        """What must run before slurmctld starts, config written: nothing here (slurmdbd where
        accounting is on: slurmctld exits at start when it cannot reach it)."""

    def _write_config(self) -> None:
        host = socket.gethostname().split(".", 1)[0]  # slurmctld starts only where its host name is this
        self.controller_port = _free_port()
        self.node_ports = {node: _free_port() for node in self.nodes}
        r = self.root
        nodes = "\n".join(
            f"NodeName={node} NodeHostname={host} NodeAddr={self.node_address(node)} Port={port} "
            f"CPUs={self.cpus_per_node} RealMemory={self.memory_mb_per_node}"
            f"{' Features=gpu_sim' if node == self.nodes[-1] else ''} State=UNKNOWN"
            for node, port in self.node_ports.items())
        node_list = ",".join(self.nodes)
        self.slurm_conf.write_text(f"""# A test cluster of cible (cible.testing.slurm): everything under {r}
ClusterName={self.cluster_name}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={self.controller_port}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
{self._accounting_conf()}
JobCompType=jobcomp/filetxt
JobCompLoc={self.completions_file}
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
DefMemPerCPU=256
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
MinJobAge=300
KillWait=5
{nodes}
PartitionName=debug Nodes={node_list} Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes={node_list} MaxTime=1 MaxNodes=1 State=UP
""")
        # 22.05 has no "disabled" cgroup plugin: slurmd dies without one it can load (backends.md §2).
        (self.conf_dir / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")
        for name in ("slurm.conf", "cgroup.conf"):
            (self.conf_dir / name).chmod(0o644)

    def _spawn(self, name: str, argv: list[str], as_user: str | None = None) -> None:
        """A daemon in the foreground, our child (so stop() holds it), in a session of its own, and
        ended by the kernel if the test process dies without stop() (killed by a CI timeout, say)."""
        who = {"user": as_user, "group": as_user, "extra_groups": []} if as_user else {}
        with open(self.log_dir / f"{name}.out", "ab") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=self.env(), start_new_session=True,
                                                preexec_fn=_die_with_parent,  # noqa: PLW1509 (prctl only: no lock)
                                                **who)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self._tail(self.log_dir / f'{name}.out')}"
                                   f"{self._tail(self.log_dir / f'{name}.log')}")

    def node_states(self) -> dict[str, str]:
        """Each node's state as sinfo shows it (`idle`, `alloc`, `down*`, …); empty while slurmctld
        does not answer."""
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=10,
                             env=self.env(), check=False)
        if out.returncode != 0:
            return {}
        return dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)

    def _wait_until_idle(self, deadline: float) -> None:
        states: dict[str, str] = {}
        while True:
            self._check_alive()
            states = self.node_states()
            if sorted(states) == sorted(self.nodes) and set(states.values()) == {"idle"}:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slurm nodes not idle: {states or 'slurmctld does not answer'}; "
                                   f"{self._tail(self.log_dir / 'slurmctld.log')}")
            time.sleep(0.05)  # sinfo is cheap; nodes register within about a second

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            return path.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    # --- stop ---------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job, end the daemons and what the jobs left (slurmstepd detaches from
        slurmd: found by this cluster's SLURM_CONF in its environment), and remove the folder.
        The daemons end in stages, each after those that talk to it: slurmds and slurmctld, then
        any other one by one, last started first (slurmdbd, then its database), munged last."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._cancel_all()
        first = [*self.nodes, "slurmctld"]
        others = [name for name in reversed(self.procs) if name not in (*first, "munged")]
        for stage in (first, *([name] for name in others), ["munged"]):
            procs = [self.procs[name] for name in stage if name in self.procs]
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid)
                    proc.wait(timeout=10)
        for pid in self._leftovers():
            _kill_group(pid)
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _cancel_all(self) -> None:
        try:
            listed = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10,
                                    env=self.env(), check=False)
            if listed.returncode != 0 or not listed.stdout.split():
                return
            subprocess.run(["scancel", *listed.stdout.split()], capture_output=True, timeout=10, env=self.env(),
                           check=False)
            deadline = time.monotonic() + 15  # KillWait=5: TERM, then KILL 5 s later
            while time.monotonic() < deadline:
                left = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10,
                                      env=self.env(), check=False)
                if left.returncode != 0 or not left.stdout.strip():
                    return
                time.sleep(0.1)
        except (OSError, subprocess.TimeoutExpired):
            pass  # the backstop in stop() ends what is left

    def _leftovers(self) -> list[int]:
        """Processes still holding this cluster's SLURM_CONF: slurmstepds and their jobs."""
        marker = f"SLURM_CONF={self.slurm_conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def __enter__(self) -> SlurmTestCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec (after its user switch, which would clear it): SIGTERM when the
    thread that started it ends (PR_SET_PDEATHSIG; Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
