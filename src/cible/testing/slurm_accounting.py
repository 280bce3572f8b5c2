"""The Slurm test cluster (cible.testing.slurm) with accounting: a slurmdbd and a MariaDB of the
cluster's own, so that QOS limits hold and `sacct` answers from the database, as on a real site.

Everything stays in the cluster's folder: MariaDB's data, its socket and its port (picked free, as
slurmdbd's is), so nothing of the machine's MariaDB is used and two clusters run side by side. The
recipe is backends.md §2's: slurmdbd reads slurmdbd.conf (mode 600) beside slurm.conf and starts
before slurmctld, which exits at start when it cannot reach it.

Slurm enforces associations, limits and QOS (`AccountingStorageEnforce=associations,limits,qos,safe`):
only users with an association may submit, so root and JOB_USER get one in ACCOUNT at start.
`add_qos` makes a QOS and allows it for them, e.g.
`cluster.add_qos("one-cpu", "MaxTRESPerJob=cpu=1", "Flags=DenyOnLimit")`.

Needs, besides slurm_missing's: Debian's mariadb-server and slurmdbd (with slurm-wlm-mysql-plugin).
Measured here: started in about 4.5 s (MariaDB 1 s, slurmdbd 0.5 s, then each sacctmgr change about
0.5 s, Slurm's own round trips to slurmdbd), stopped in about 1 s.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cible.testing.slurm import JOB_USER, SlurmTestCluster, _free_port, ensure_job_user

SLURMDBD = "/usr/sbin/slurmdbd"
MARIADBD = "/usr/sbin/mariadbd"
ACCOUNT = "ml"
DATABASE = "slurm_acct_db"


def accounting_missing() -> str | None:
    """Why a test cluster cannot have accounting here, or None (slurm_missing says the rest)."""
    for binary in (SLURMDBD, MARIADBD):
        if not os.path.exists(binary):
            return f"no {binary} (apt-get install mariadb-server slurmdbd)"
    for command in ("mariadb-install-db", "mariadb", "sacctmgr", "sacct"):
        if shutil.which(command) is None:
            return f"no {command} on PATH (apt-get install mariadb-server slurmdbd)"
    if not glob.glob("/usr/lib/*/slurm-wlm/accounting_storage_mysql.so"):
        return "no Slurm MySQL plugin for slurmdbd (apt-get install slurm-wlm-mysql-plugin)"
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        return "no mysql user (apt-get install mariadb-server)"
    return None


@contextmanager
def running_accounting_cluster() -> Iterator[AccountingSlurmTestCluster]:
    """A started test cluster with accounting (JOB_USER made first), stopped at the end."""
    ensure_job_user()
    cluster = AccountingSlurmTestCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class AccountingSlurmTestCluster(SlurmTestCluster):
    """A SlurmTestCluster whose slurmctld keeps accounts in a slurmdbd, backed by a MariaDB of its
    own; `stop()` ends those two as well (after slurmctld)."""

    users: Sequence[str] = ("root", JOB_USER)  # each gets an association in ACCOUNT
    db_password: str = field(default_factory=lambda: secrets.token_hex(12), repr=False)  # slurmdbd's, in MariaDB

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dbd_port = 0
        self.mysql_port = 0

    @property
    def mysql_dir(self) -> Path:
        return self.root / "mysql"

    @property
    def mysql_socket(self) -> Path:
        return self.mysql_dir / "mysqld.sock"

    # --- the hooks of SlurmTestCluster.start -------------------------------------------------------

    def _accounting_conf(self) -> str:
        """slurmdbd's address, and the cluster's munged for the connections to it: with munge,
        AccountingStoragePass names the socket (AuthInfo is not read for them)."""
        self.dbd_port = _free_port()
        return f"""AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
AccountingStorageEnforce=associations,limits,qos,safe"""

    def _before_controller(self, deadline: float) -> None:
        """MariaDB, then slurmdbd, then the cluster, ACCOUNT and the users' associations in it: all
        there before slurmctld starts and loads them."""
        self._start_mariadb(deadline)
        self._write_dbd_config()
        self._spawn("slurmdbd", [SLURMDBD, "-D"])
        self._wait_for(lambda: self.run(["sacctmgr", "-n", "-P", "show", "cluster"], timeout=10),
                       deadline, "slurmdbd to answer", "slurmdbd")
        self.sacctmgr("add", "cluster", self.cluster_name)
        self.sacctmgr("add", "account", ACCOUNT, f"Cluster={self.cluster_name}")
        self.sacctmgr("add", "user", ",".join(self.users), f"Account={ACCOUNT}", f"DefaultAccount={ACCOUNT}")

    def _start_mariadb(self, deadline: float) -> None:
        data = self.mysql_dir / "data"
        data.mkdir(parents=True)
        shutil.chown(self.mysql_dir, "mysql", "mysql")
        shutil.chown(data, "mysql", "mysql")
        self.mysql_dir.chmod(0o700)
        # --no-defaults everywhere: nothing of the machine's /etc/mysql (its socket, port, datadir).
        done = subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
                               "--skip-test-db", "--auth-root-authentication-method=socket"],
                              capture_output=True, text=True, timeout=max(deadline - time.monotonic(), 1),
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}): {done.stdout[-800:]}{done.stderr[-800:]}")
        self.mysql_port = _free_port()
        self._spawn("mariadbd", [MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={self.mysql_socket}",
                                 f"--port={self.mysql_port}", "--bind-address=127.0.0.1",
                                 f"--pid-file={self.mysql_dir / 'mysqld.pid'}", f"--tmpdir={self.mysql_dir}",
                                 f"--log-error={self.log_dir / 'mariadbd.log'}", "--skip-log-bin",
                                 "--innodb-buffer-pool-size=64M"],
                    as_user="mysql")
        self._wait_for(lambda: self.sql("SELECT 1", check=False), deadline, "MariaDB to answer", "mariadbd")
        # slurmdbd logs in over TCP (its plugin takes a host and port), as a user of its own.
        self.sql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}'; "
                 f"GRANT ALL ON {DATABASE}.* TO 'slurm'@'127.0.0.1';")

    def _write_dbd_config(self) -> None:
        path = self.conf_dir / "slurmdbd.conf"
        path.touch(mode=0o600)  # slurmdbd refuses a config others can read (it holds the password)
        path.chmod(0o600)
        path.write_text(f"""# slurmdbd of a test cluster of cible (cible.testing.slurm_accounting)
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
LogFile={self.log_dir}/slurmdbd.log
PidFile={self.root}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.mysql_port}
StorageUser=slurm
StoragePass={self.db_password}
StorageLoc={DATABASE}
""")

    def _wait_for(self, answers: Callable[[], subprocess.CompletedProcess[str]], deadline: float, what: str,
                  log: str) -> None:
        """Poll `answers()` (a CompletedProcess) until it exits 0; fail at the deadline with the log."""
        while True:
            self._check_alive()
            done = answers()
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}: {done.stderr.strip()[-500:]}\n"
                                   f"{self._tail(self.log_dir / f'{log}.log')}")
            time.sleep(0.05)  # both answer within about a second of their start (backends.md §2)

    # --- what tests use ----------------------------------------------------------------------------

    def sql(self, statements: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run SQL as MariaDB's root (unix-socket login: this process is root)."""
        done = subprocess.run(["mariadb", "--no-defaults", f"--socket={self.mysql_socket}", "-u", "root",
                               "-e", statements], capture_output=True, text=True, timeout=30, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"SQL failed: {done.stderr.strip()}")
        return done

    def sacctmgr(self, *args: str) -> str:
        """`sacctmgr -i ARGS` (no questions asked); its output. Raises when it fails."""
        done = self.run(["sacctmgr", "-i", *args])
        if done.returncode != 0:
            raise RuntimeError(f"sacctmgr {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def add_qos(self, name: str, *settings: str, users: Sequence[str] | None = None, timeout: float = 15) -> None:
        """A QOS with `settings` (sacctmgr's words: "MaxTRESPerJob=cpu=1", "Flags=DenyOnLimit"),
        allowed for `users` (default: every user of the cluster). Returns once slurmctld takes it
        from each of them: slurmdbd pushes the change to slurmctld a moment after sacctmgr returns,
        and until then sbatch says "Invalid qos specification"."""
        self.sacctmgr("add", "qos", name, *(["set", *settings] if settings else []))
        users = list(users or self.users)
        self.sacctmgr("modify", "user", "where", f"name={','.join(users)}", "set", f"qos+={name}")
        deadline = time.monotonic() + timeout
        for user in users:
            while True:  # --test-only: sbatch checks a one-CPU job against the QOS, and submits nothing
                done = self.run(["sbatch", "--test-only", f"--qos={name}", "--wrap", "true"],
                                user=None if user == "root" else user)
                if done.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"slurmctld does not take QOS {name} from {user}: {done.stderr.strip()}")
                time.sleep(0.05)
