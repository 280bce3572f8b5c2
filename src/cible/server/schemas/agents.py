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


class PilotSwitch(Envelope):
    """A Slurm pilot's next job, in the allocation its ended run kept warm."""

    job: str = Field(description="the job whose run the pilot takes next")
    token: str = Field(description="that job's pilot token: the pilot's token from now on")


class HeartbeatReply(Envelope):
    """What the node should run: the difference between the workspace and what the agent said it has."""

    stop: bool = Field(description="the node is on its way out: stop everything and exit")
    runs: list[WantedRun] = Field(description="the runs it should have")
    state: str = Field(description="the node's state in the workspace")
    wait_s: Number | None = Field(None, description="the longest the server holds a long-poll")
    idle_shutdown_at: IsoTime | None = Field(None, description="an instance's idle shutdown time (ISO 8601)")
    switch: PilotSwitch | None = Field(None, description="a Slurm pilot: the job to serve next")


class ReportAccepted(Envelope):
    accepted: bool = Field(description="true: the report was recorded")


class FileChunk(Envelope):
    """A chunk of a run's file, written."""

    path: str = Field(description="the file, under the run's artifacts")
    offset: int = Field(description="where the chunk was written")
    size: int = Field(description="the chunk's bytes")


# -- the files of a node that does not share the workspace (services/node_files.py) -----------------


class ManifestFile(Envelope):
    path: str = Field(description="the file, relative to the folder (posix); a file input: its name")
    size: int = Field(description="its bytes")
    sha256: str = Field(description="its sha256 (what GET …/files/{path} sends as X-Content-SHA256)")


class FileManifest(Envelope):
    """The regular files of an input or the resume folder (links, FIFOs and devices are left out)."""

    kind: str = Field(description="folder, or file (an input that is one file)")
    files: list[ManifestFile] = Field(description="its files, sorted by path")


class StagedFile(Envelope):
    path: str = Field(description="the file, relative to the destination")
    size: int = Field(description="its bytes received so far")


class StagedFiles(Envelope):
    """The files this node's attempt sent and did not commit yet: where an interrupted send goes on."""

    files: list[StagedFile] = Field(description="sorted by path")


class StagedChunk(FileChunk):
    """A chunk of a file being sent, written to the staging folder."""

    path: str = Field(description="the file, relative to the destination")
    staged: int = Field(description="the file's bytes on the server after this chunk")


class Committed(Envelope):
    """A commit: its files are now the destination's."""

    files: int = Field(description="the files named")
    sent: int = Field(description="those moved from what was sent")
    unchanged: int = Field(description="those the destination already had with that sha256")
    removed: int = Field(description="files of the resume folder that were not named, now gone (outputs: 0)")
