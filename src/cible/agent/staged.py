"""The files of a run on a node that does not share the workspace folder with its server (an
attached machine; its plan says `"transfer": "http"`): its code, inputs and resume folder fetched
before the launcher starts, its outputs (and resume folder) sent and committed after it ends and
before the run's final report, so a job the server sees ended has its outputs where the next
step of a pipeline reads them. The resume folder is also sent every RESUME_SYNC_S while it runs:
what a lost node wrote after its last send is lost with it.

Standard library only, as the whole node side (it runs on hosts with nothing but Python 3).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cible.agent.localize import AFTER, BEFORE, DOWNLOAD, RESUME_SYNC_S, SNAPSHOT, TRANSFER_HTTP, UPLOAD, Step, localize
from cible.agent.transfer import RETRY_FOR_S, Progress, Transfer, TransferError, quote_path

log = logging.getLogger("cible.agent")


def needs_transfer(plan: dict[str, Any]) -> bool:
    return plan.get("transfer") == TRANSFER_HTTP


class StagedFiles:
    """One run's moves between this node and the server (see cible.agent.localize for which)."""

    def __init__(self, plan: dict[str, Any], *, node_root: Path, run_dir: Path, node_id: str,
                 url: Callable[[], str], token: str, retry_for_s: float = RETRY_FOR_S,
                 cache_root: Path | None = None) -> None:
        self.job, self.attempt = plan["job_name"], int(plan.get("attempt", 1))
        self.plan, self.steps = localize(plan, node_root, run_dir, server_url=url(), cache_root=cache_root)
        self._url, self._token, self._node_id = url, token, node_id
        self._retry_for_s = retry_for_s  # how long a server that does not answer is waited for
        self._last_sync = time.monotonic()
        # Held by a resume sync, and by the publish for good: the two share the server's staging
        # folder, where one's commit clears what the other sends. No sync starts once it is published.
        self._syncing = threading.Lock()
        self._ended = False

    def _run(self, phase: str, only_periodic: bool = False, on_progress: Progress | None = None) -> None:
        steps = [s for s in self.steps if s.phase == phase and (s.periodic or not only_periodic)]
        if not steps:
            return
        # One Transfer per call: each thread its own connections.
        with Transfer(self._url, self._token, retry_for_s=self._retry_for_s, on_progress=on_progress) as transfer:
            RunTransfer(transfer, self._node_id, self.job, self.attempt).do_all(steps, phase)

    def fetch(self, on_progress: Progress | None = None) -> None:
        """Before the launcher starts: TransferError says what could not be fetched. `on_progress` is
        called as bytes come and before each pause to try again; what it raises stops the fetch (a
        run canceled or dropped meanwhile)."""
        self._run(BEFORE, on_progress=on_progress)

    def publish(self) -> None:
        """After the launcher ended: outputs (and the resume folder) sent and committed, once a resume
        sync under way is done; none starts after."""
        with self._syncing:
            self._ended = True
            self._run(AFTER)

    def sync_if_due(self) -> None:
        """While it runs: the resume folder sent every RESUME_SYNC_S, in the background; a failed send
        is logged and tried again at the next one (the job does not fail for it)."""
        if self._ended or time.monotonic() - self._last_sync < RESUME_SYNC_S \
                or not any(s.periodic for s in self.steps):
            return
        if not self._syncing.acquire(blocking=False):
            return
        if self._ended:  # published since the check above
            self._syncing.release()
            return
        self._last_sync = time.monotonic()

        def sync() -> None:
            try:
                self._run(AFTER, only_periodic=True)
            except TransferError as exc:
                log.warning("run %s: sending its resume folder failed: %s", self.job, exc)
            except Exception:  # a file removed while it was listed, a full disk: tried again next time
                log.exception("run %s: sending its resume folder failed", self.job)
            finally:
                self._syncing.release()

        threading.Thread(target=sync, name=f"resume-{self.job}", daemon=True).start()


class RunTransfer:
    """A run's steps (cible.agent.localize) against its routes: /api/v1/agent/nodes/<node>/runs/<job>/…,
    each call for its attempt."""

    def __init__(self, transfer: Transfer, node_id: str, job: str, attempt: int) -> None:
        self.transfer = transfer
        self.base = f"/api/v1/agent/nodes/{quote(node_id, safe='')}/runs/{quote(job, safe='')}"
        self.attempt = attempt

    def route(self, rel: str) -> str:
        """The run's route `rel` (`inputs/<name>/manifest`…), quoted, for this attempt."""
        return f"{self.base}/{quote_path(rel)}?attempt={self.attempt}"

    def do(self, step: Step) -> None:
        """Carry out one step; TransferError says which and why when it fails."""
        try:
            if step.action == SNAPSHOT:
                self.transfer.download_snapshot(self.route("blobs"), step.snapshot, step.path, step.subpath)
            elif step.action == DOWNLOAD:
                self.transfer.download_tree(self.route(f"{step.route}/manifest"), self.route(f"{step.route}/files"),
                                            step.path)
            elif step.action == UPLOAD:
                step.path.mkdir(parents=True, exist_ok=True)  # a job that wrote nothing commits an empty output
                self.transfer.upload_tree(step.path, self.route(f"{step.route}/files"),
                                          self.route(f"{step.route}/commit"),
                                          staged_route=self.route(f"{step.route}/staged"),
                                          manifest_route=self.route("resume/manifest") if step.route == "resume"
                                          else None)
            else:
                raise TransferError(f"{step.label}: unknown transfer step {step.action!r}")
        except TransferError as exc:
            exc.message = f"{step.label}: {exc.message}"
            exc.args = (exc.message,)
            raise

    def do_all(self, steps: list[Step], phase: str) -> None:
        for step in steps:
            if step.phase == phase:
                self.do(step)
