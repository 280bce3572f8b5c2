"""Where a workspace keeps its things on disk ($CIBLE_HOME, default ~/.cible)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATASTORE = "workspaceblobstore"


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
        return self.datastores / name

    @property
    def blob_root(self) -> Path:
        """Content-addressed uploads (code snapshots, local inputs)."""
        return self.datastore() / "LocalUpload" / "blobs"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def run_dir(self, job_name: str) -> Path:
        return self.runs / job_name

    @property
    def nodes(self) -> Path:
        """Working roots of the `local` provider's nodes, one folder per node."""
        return self.home / "nodes"

    def instance_home(self, name: str) -> Path:
        """A compute instance's home folder: it outlives the instance's nodes (kept across stop
        and start, as a VM's disk is) and goes when the instance is deleted."""
        return self.home / "instances" / name / "home"

    def ensure(self) -> None:
        for d in (self.home, self.blob_root, self.runs):
            d.mkdir(parents=True, exist_ok=True)
