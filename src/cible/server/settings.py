"""Server settings, from flags and CIBLE_* environment variables."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cible.core.errors import InvalidRequestError
from cible.workspace import WorkspacePaths, default_home


def _default_concurrency() -> int:
    return int(os.environ.get("CIBLE_LOCAL_MAX_CONCURRENT") or max(2, os.cpu_count() or 2))


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def env_bytes(name: str, default: int) -> int:
    """A size from the environment: bytes, or a number with K, M, G or T (binary: 8M is 8 MiB)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    match = re.fullmatch(r"(\d+)\s*([kmgt]?)i?b?", raw.lower())
    if not match:
        raise InvalidRequestError(f"{name}={raw!r} is not a size: write bytes, or a number with K, M, G or T (e.g. 8M)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def env_count(name: str, default: int) -> int:
    """A count from the environment: a whole number, 0 or more."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise InvalidRequestError(f"{name}={raw!r} is not a count: write a whole number, 0 or more (e.g. 2)")
    return int(raw)


AUTOML_ENVIRONMENT = "azureml:AzureML-AutoML@latest"


def _automl_environment(raw: str) -> str | None:
    if raw.lower() == "host":
        return None
    return raw or AUTOML_ENVIRONMENT


@dataclass
class ServerSettings:
    home: Path = field(default_factory=default_home)
    database_url: str | None = None  # default: SQLite in the workspace
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port, written to server.json
    token: str | None = None  # default: the workspace's token file
    max_concurrent_local: int = field(default_factory=_default_concurrency)
    # Every job gets an MLflow run in the workspace's tracking server (a supervised child process).
    tracking: bool = field(default_factory=lambda: os.environ.get("CIBLE_TRACKING", "1") != "0")
    # Fail a job whose conda file asks for a Python this machine lacks, instead of using the nearest.
    strict_python: bool = field(default_factory=lambda: os.environ.get("CIBLE_STRICT_PYTHON") == "1")
    # A cluster node whose agent is silent this long is unusable; one not ready this long after
    # its start is too. Drills and tests shorten them.
    node_heartbeat_timeout_s: float = field(
        default_factory=lambda: float(os.environ.get("CIBLE_NODE_HEARTBEAT_TIMEOUT", 30)))
    node_prepare_timeout_s: float = field(
        default_factory=lambda: float(os.environ.get("CIBLE_NODE_PREPARE_TIMEOUT", 600)))

    # The environment an AutoML job's searches run in (Azure's jobs name none): the curated AutoML one, or
    # `host` for the launcher's own Python (an air-gapped machine whose Python has FLAML; the tests).
    automl_environment: str | None = field(default_factory=lambda: _automl_environment(
        os.environ.get("CIBLE_AUTOML_ENVIRONMENT", "").strip()))

    # What every Spark job runs in instead of its Spark runtime's curated environment (AzureML-Spark-<line>):
    # an environment reference, or `host` for the launcher's own Python (one that has pyspark; the tests).
    spark_environment: str | None = field(default_factory=lambda: os.environ.get("CIBLE_SPARK_ENVIRONMENT", "").strip()
                                          or None)

    # Where a job that names no compute runs: serverless (nodes made for it), or e.g. local.
    default_compute: str = field(default_factory=lambda: os.environ.get("CIBLE_DEFAULT_COMPUTE") or "serverless")

    # Agents the local provider keeps started ahead of need (0: none): a serverless job's node, or a
    # cluster's new one, takes one and skips the agent's start-up. Billed in the cost report.
    warm_nodes: int = field(default_factory=lambda: env_count("CIBLE_WARM_NODES", 0))

    # Node providers: where a cluster's nodes come from when its YAML does not say (`cible: {provider:}`),
    # and the Ray cluster the `ray` provider places them on (its token when Ray's token auth is on).
    default_provider: str = field(default_factory=lambda: os.environ.get("CIBLE_DEFAULT_PROVIDER") or "local")
    ray_address: str | None = field(default_factory=lambda: os.environ.get("CIBLE_RAY_ADDRESS") or None)
    ray_token: str | None = field(default_factory=lambda: os.environ.get("CIBLE_RAY_TOKEN") or None)
    # The Ray cluster adds machines on demand (its autoscaler): sizes no Ray node holds yet are not refused.
    ray_autoscaling: bool = field(default_factory=lambda: os.environ.get("CIBLE_RAY_AUTOSCALING") == "1")
    # The Ray machines see the workspace folder (a shared filesystem); 0: their nodes' files travel
    # over the agents' HTTP, as an attached machine's do.
    ray_shared_workspace: bool = field(
        default_factory=lambda: os.environ.get("CIBLE_RAY_SHARED_WORKSPACE", "1") not in ("0", "false", "no"))

    # Request bodies (pure ASGI guard, before anything is buffered): JSON and everything else;
    # uploads that stream to disk (blobs: code snapshots and local inputs; MLflow artifacts);
    # one chunk of a log or output file an agent ships (agents send 1 MiB chunks).
    max_request_bytes: int = field(default_factory=lambda: env_bytes("CIBLE_MAX_REQUEST_BYTES", 8 << 20))
    max_upload_bytes: int = field(default_factory=lambda: env_bytes("CIBLE_MAX_UPLOAD_BYTES", 8 << 30))
    max_agent_chunk_bytes: int = field(default_factory=lambda: env_bytes("CIBLE_MAX_AGENT_CHUNK_BYTES", 32 << 20))
    # /health says "degraded" when the workspace's disk has less free space than this.
    min_free_disk_bytes: int = field(default_factory=lambda: env_bytes("CIBLE_MIN_FREE_DISK", 100 << 20))

    # The studio: a sign-in link's code works once within this; a browser's session lasts this long.
    studio_code_ttl_s: float = field(default_factory=lambda: float(os.environ.get("CIBLE_STUDIO_CODE_TTL", 300)))
    studio_session_ttl_s: float = field(
        default_factory=lambda: float(os.environ.get("CIBLE_STUDIO_SESSION_TTL", 12 * 3600)))

    # The gateway: one port for every online endpoint (0: the last one this workspace had, else any).
    # Sign-in through an OpenID Connect provider (optional; studio/oidc.py): its issuer URL, cible's
    # client there (the secret from the environment only), the role of a user it signs in whom no
    # user's e-mail names (none: refused), and the name its button shows.
    oidc_issuer: str | None = field(default_factory=lambda: os.environ.get("CIBLE_OIDC_ISSUER") or None)
    oidc_client_id: str = field(default_factory=lambda: os.environ.get("CIBLE_OIDC_CLIENT_ID") or "cible")
    oidc_client_secret: str | None = field(default_factory=lambda: os.environ.get("CIBLE_OIDC_CLIENT_SECRET") or None)
    oidc_default_role: str | None = field(default_factory=lambda: os.environ.get("CIBLE_OIDC_DEFAULT_ROLE") or None)
    oidc_name: str = field(default_factory=lambda: os.environ.get("CIBLE_OIDC_NAME") or "single sign-on")
    # How long the personal token `cible login` gets lasts.
    login_token_days: float = field(default_factory=lambda: float(os.environ.get("CIBLE_LOGIN_TOKEN_DAYS") or 30))
    gateway_host: str = field(default_factory=lambda: os.environ.get("CIBLE_GATEWAY_HOST") or "127.0.0.1")
    gateway_port: int = field(default_factory=lambda: int(os.environ.get("CIBLE_GATEWAY_PORT") or 0))

    @property
    def paths(self) -> WorkspacePaths:
        return WorkspacePaths(self.home)

    @property
    def db_url(self) -> str:
        return self.database_url or os.environ.get("CIBLE_DATABASE_URL") or self.paths.database_url
