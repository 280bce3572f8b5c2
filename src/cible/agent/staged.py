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

from cible.agent.localize import AFTER, BEFORE, RESUME_SYNC_S, TRANSFER_HTTP, localize
from cible.agent.transfer import RunTransfer, Transfer, TransferError

log = logging.getLogger("cible.agent")


def needs_transfer(plan: dict[str, Any]) -> bool:
    return plan.get("transfer") == TRANSFER_HTTP


class StagedFiles:
    """One run's moves between this node and the server (see cible.agent.localize for which)."""

    def __init__(self, plan: dict[str, Any], *, node_root: Path, run_dir: Path, node_id: str,
                 url: Callable[[], str], token: str) -> None:
        self.job, self.attempt = plan["job_name"], int(plan.get("attempt", 1))
        self.plan, self.steps = localize(plan, node_root, run_dir, server_url=url())
        self._url, self._token, self._node_id = url, token, node_id
        self._last_sync = time.monotonic()
        self._syncing = threading.Lock()

    def _run(self, phase: str, only_periodic: bool = False) -> None:
        steps = [s for s in self.steps if s.phase == phase and (s.periodic or not only_periodic)]
        if not steps:
            return
        with Transfer(self._url, self._token) as transfer:  # one per call: each thread its own connections
            RunTransfer(transfer, self._node_id, self.job, self.attempt).do_all(steps, phase)

    def fetch(self) -> None:
        """Before the launcher starts: TransferError says what could not be fetched."""
        self._run(BEFORE)

    def publish(self) -> None:
        """After the launcher ended: outputs (and the resume folder) sent and committed."""
        self._run(AFTER)

    def sync_if_due(self) -> None:
        """While it runs: the resume folder sent every RESUME_SYNC_S, in the background; a failed send
        is logged and tried again at the next one (the job does not fail for it)."""
        if time.monotonic() - self._last_sync < RESUME_SYNC_S or not any(s.periodic for s in self.steps):
            return
        if not self._syncing.acquire(blocking=False):
            return
        self._last_sync = time.monotonic()

        def sync() -> None:
            try:
                self._run(AFTER, only_periodic=True)
            except TransferError as exc:
                log.warning("run %s: sending its resume folder failed: %s", self.job, exc)
            finally:
                self._syncing.release()

        threading.Thread(target=sync, name=f"resume-{self.job}", daemon=True).start()
