"""A real OpenSSH server on loopback addresses for the attached-compute tests: several "hosts"
(127.0.0.x) on one sshd, keys made by the test, nothing of the machine's own SSH setup used.

Needs /usr/sbin/sshd (Debian's openssh-server) and root, as CI has (sshd switches to the user
it logs in; scripts/test.sh installs it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sshd_missing() -> str | None:
    """Why a loopback sshd cannot run here, or None."""
    if not os.path.exists(SSHD):
        return "no /usr/sbin/sshd (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "sshd logs users in only when started as root"
    return None


def keygen(path: Path, comment: str = "cible-test") -> Path:
    """An ed25519 key pair without passphrase at `path` (private, mode 600) and `path`.pub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in (path, path.with_suffix(path.suffix + ".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


def fingerprint_of(public_key_file: Path) -> str:
    """`SHA256:…` of a public key file, as `ssh-keygen -lf` prints it."""
    out = subprocess.run(["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def ensure_user(name: str) -> Path:
    """A Unix user for an attached machine's logins (made once; its home returned): not root, so a
    test sees what such a user cannot read (the workspace). Unlocked without a password (`*`), as
    OpenSSH without PAM refuses key logins to a locked (`!`) account."""
    import fcntl
    import pwd

    # One useradd at a time on the machine: tests run in parallel (pytest-xdist) would otherwise race
    # for /etc/passwd's lock (useradd fails at once when another holds it) or make the same user twice.
    with open("/tmp/cible-test-useradd.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return Path(pwd.getpwnam(name).pw_dir)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
            subprocess.run(["usermod", "-p", "*", name], check=True)
            return Path(pwd.getpwnam(name).pw_dir)


# What lets this machine reach the package indexes (a proxy's CA, a mirror): a loopback "machine"
# is given the same, as an administrator would configure a real one.
PACKAGE_ACCESS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "UV_INDEX_URL",
                  "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_NATIVE_TLS", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                  "http_proxy", "https_proxy", "no_proxy")


def package_access() -> str:
    """An sshd_config `SetEnv` line giving logins this machine's package-index settings (or "")."""
    pairs = [f"{name}={os.environ[name]}" for name in PACKAGE_ACCESS
             if os.environ.get(name) and not any(c.isspace() or c == '"' for c in os.environ[name])]
    return f"SetEnv {' '.join(pairs)}" if pairs else ""


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    from cible.node import proc

    try:
        return [pid, *(p.pid for p in proc.Process(pid).children(recursive=True))]
    except proc.Error:
        return []


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackSshd:
    """sshd listening on `addresses` at one port; `authorize(user, pub)` lets a key log in as user.
    `extra` is appended to sshd_config (Match blocks for one address, say)."""

    def __init__(self, root: Path, addresses: tuple[str, ...] = ("127.0.0.2",), extra: str = "") -> None:
        self.root = root
        self.addresses = addresses
        self.extra = extra
        self.port = _free_port()
        self.host_key = root / "host_key"
        self.config = root / "sshd_config"
        self.proc: subprocess.Popen | None = None
        (root / "authorized").mkdir(parents=True, exist_ok=True)

    def authorize(self, user: str, public_key_file: Path) -> None:
        keys = self.root / "authorized" / user
        with keys.open("a") as f:
            f.write(public_key_file.read_text())
        keys.chmod(0o644)  # sshd reads it as the user

    def start(self, timeout: float = 10.0) -> LoopbackSshd:
        if not self.host_key.exists():
            keygen(self.host_key, "host")
        listen = "\n".join(f"ListenAddress {a}" for a in self.addresses)
        self.config.write_text(f"""Port {self.port}
{listen}
HostKey {self.host_key}
PidFile {self.root}/sshd.pid
AuthorizedKeysFile {self.root}/authorized/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
LogLevel VERBOSE
Subsystem sftp internal-sftp
{self.extra}
""")
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation folder
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True)
        log = (self.root / "sshd.log").open("ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        for address in self.addresses:
            while not self._answers(address):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-2000:]}")
                time.sleep(0.02)
        return self

    def _answers(self, address: str) -> bool:
        try:
            with socket.create_connection((address, self.port), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def new_host_key(self) -> None:
        """The host is "reinstalled": a new host key, sshd restarted on the same port."""
        self.stop()
        keygen(self.host_key, "host-reinstalled")
        self.start()

    def freeze(self, *also: int) -> None:
        """The machine hangs: sshd (the listener, and the sessions it serves: connections already open
        go silent too) and the processes `also` (with their descendants) are stopped with SIGSTOP.
        New connections are accepted by the kernel; no banner comes."""
        assert self.proc is not None
        self._frozen = [*_tree(self.proc.pid), *(p for pid in also for p in _tree(pid))]
        for pid in self._frozen:
            _signal(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in getattr(self, "_frozen", []):
            _signal(pid, signal.SIGCONT)
        self._frozen = []

    def stop(self) -> None:
        self.thaw()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def host_fingerprint(self) -> str:
        return fingerprint_of(self.host_key.with_suffix(".pub"))

    def __enter__(self) -> LoopbackSshd:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
