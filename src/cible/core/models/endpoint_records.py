"""What the server keeps about an online endpoint and its deployments beyond their specs: typed,
frozen records stored as JSON in their rows (see records.py for the conventions).

Secrets are not here: an endpoint's keys are derived from the workspace token and each key's
salt (server/tokens.py), so the store holds only the salts, which say which generation of a key
is current; regenerating a key draws a new salt.
"""

from __future__ import annotations

from datetime import datetime

from cible.core.models.records import Record

ENDPOINT_RECORD_VERSION = 1


class EndpointKeys(Record):
    """The salts of an endpoint's primary and secondary keys and of its aml_token signing."""

    primary: str
    secondary: str
    token: str


class ReplicaRecord(Record):
    """One replica of a deployment: a job of type `replica` running the scoring server."""

    job: str  # the replica job's name
    generation: int  # the deployment's spec generation it serves (a rolling update replaces older ones)
    port: int  # where its scoring server listens, on its node's address
    url: str | None = None  # http://<node address>:<port>, once the job runs on a node
    state: str = "Starting"  # core.lifecycle.endpoints.ReplicaState
    started_at: datetime
    ready_since: datetime | None = None
    liveness_failures: int = 0  # consecutive failed liveness probes
    readiness_failures: int = 0
    readiness_successes: int = 0
    last_probe_at: datetime | None = None
    reason: str | None = None  # why it is unready, failed or stopping
    # Stopping after it served: out of the gateway's routes at once, its process stopped only from then on,
    # once the requests the gateway had sent it have answered or timed out (a drain).
    drain_until: datetime | None = None


class ScaleRecord(Record):
    """The autoscaler's memory between passes (core.planning.replicas.ScaleState)."""

    count: int
    changed_at: datetime | None = None
    low_since: datetime | None = None
    low_peak: int = 0
    reason: str = ""


class CrashRecord(Record):
    """Replicas of one generation that failed in a row, and when the next may start (CrashLoop)."""

    version: int
    count: int
    retry_at: datetime
    last_replica: str
    last_reason: str


class DeploymentStatus(Record):
    """A deployment's observed state: its replicas, the count it scales to, and why it is how it is."""

    schema_version: int = ENDPOINT_RECORD_VERSION
    replicas: tuple[ReplicaRecord, ...] = ()
    scale: ScaleRecord | None = None  # the count the autoscaler decided (None: not yet)
    crash: CrashRecord | None = None  # replicas failing in a row: the back-off
    last_request_at: datetime | None = None  # the latest request the gateway saw (scale to zero)
    reason: str | None = None  # why the deployment is as it is (failing replicas, waiting for a back-off)
