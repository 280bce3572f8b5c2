"""Where a workspace keeps its things on disk ($CIBLE_HOME, default ~/.cible)."""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from cible.core.errors import CibleError
from cible.core.safepaths import under

DEFAULT_DATASTORE = "workspaceblobstore"


def current_user() -> str:
    """This machine's user as cible names them: CIBLE_USER, else the login (a uid where it has none)."""
    try:
        return os.environ.get("CIBLE_USER") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid-{os.getuid()}"


def default_home() -> Path:
    return Path(os.environ.get("CIBLE_HOME") or Path.home() / ".cible").expanduser().resolve()


def env_cache_root() -> Path:
    """Built environments, content-addressed and shared by every workspace and job on this machine."""
    explicit = os.environ.get("CIBLE_ENV_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(cache) / "cible" / "envs").expanduser().resolve()


@dataclass(frozen=True)
class WorkspacePaths:
    home: Path

    @property
    def token_file(self) -> Path:
        return self.home / "token"

    @property
    def server_file(self) -> Path:
        """pid, url and workspace of the running local server."""
        return self.home / "server.json"

    @property
    def server_log(self) -> Path:
        return self.home / "server.log"

    @property
    def start_lock(self) -> Path:
        return self.home / "server.start.lock"

    @property
    def run_lock(self) -> Path:
        return self.home / "server.lock"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.home / 'cible.db'}"

    @property
    def datastores(self) -> Path:
        return self.home / "datastores"

    def datastore(self, name: str = DEFAULT_DATASTORE) -> Path:
        return under(self.datastores, name, field="datastore")

    @property
    def blob_root(self) -> Path:
        """Content-addressed uploads (code snapshots, local inputs)."""
        return self.datastore() / "LocalUpload" / "blobs"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def run_dir(self, job_name: str) -> Path:
        return under(self.runs, job_name, field="name")

    @property
    def nodes(self) -> Path:
        """Working roots of the `local` provider's nodes, one folder per node."""
        return self.home / "nodes"

    def instance_home(self, name: str) -> Path:
        """A compute instance's home folder: it outlives the instance's nodes (kept across stop
        and start, as a VM's disk is) and goes when the instance is deleted."""
        return under(self.home / "instances", name, field="name") / "home"

    def remove_instance_home(self, name: str) -> None:
        """Remove a deleted instance's folder. A name that cannot be a folder (a row stored before
        names were checked) has none to remove: never one outside `instances/`."""
        try:
            folder = self.instance_home(name).parent
        except CibleError:
            return
        shutil.rmtree(folder, ignore_errors=True)

    def ensure(self) -> None:
        # The workspace holds its token, database and logs (commands, environments, errors): its
        # owner's only, on a new workspace and on one made before this rule.
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        restrict_mode(self.home, 0o700)
        for private in (self.token_file, self.server_log):
            restrict_mode(private, 0o600)
        for d in (self.blob_root, self.runs):
            d.mkdir(parents=True, exist_ok=True)


def restrict_mode(path: Path, mode: int) -> None:
    """chmod when the path exists and is ours: a folder someone else owns (a shared home) is left as it is."""
    try:
        os.chmod(path, mode)
    except (FileNotFoundError, PermissionError):
        pass


def ensure_token(paths: WorkspacePaths) -> str:
    """The workspace's token, created 0600 on first use (in a workspace folder that is 0700)."""
    paths.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(paths.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return paths.token_file.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32))
    return paths.token_file.read_text().strip()
