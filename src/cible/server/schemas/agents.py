"""The node agents' side: what a heartbeat's reply tells a node, and the receipts of reports and files."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cible.server.schemas.common import Envelope, IsoTime, Number


class WantedRun(Envelope):
    """A run the node should have."""

    job: str = Field(description="the job")
    attempt: int = Field(description="the job's attempt on its nodes")
    node_rank: int = Field(description="this node's rank among the job's nodes")
    cancel: bool = Field(description="cancel it")
    plan: dict[str, Any] | None = Field(None, description="its launch plan; null when the node already has the run")


class HeartbeatReply(Envelope):
    """What the node should run: the difference between the workspace and what the agent said it has."""

    stop: bool = Field(description="the node is on its way out: stop everything and exit")
    runs: list[WantedRun] = Field(description="the runs it should have")
    state: str = Field(description="the node's state in the workspace")
    wait_s: Number | None = Field(None, description="the longest the server holds a long-poll")
    idle_shutdown_at: IsoTime | None = Field(None, description="an instance's idle shutdown time (ISO 8601)")


class ReportAccepted(Envelope):
    accepted: bool = Field(description="true: the report was recorded")


class FileChunk(Envelope):
    """A chunk of a run's file, written."""

    path: str = Field(description="the file, under the run's artifacts")
    offset: int = Field(description="where the chunk was written")
    size: int = Field(description="the chunk's bytes")
