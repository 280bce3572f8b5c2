"""The local provider's warm agents (`CIBLE_WARM_NODES`, default 0): agents started before any node
needs them, so a new node (a serverless job's, a cluster's scale-up) skips the agent's start-up:
the Python start, its imports and its launchers' fork server (cible.agent.warm).

`take` hands out a ready one, or None (the caller then starts an agent the plain way); a thread
keeps the pool full. A warm agent is a node kept running ahead of need, as a pre-started VM would
be: its time is billed (the ledger, `cible cost report`'s "(warm pool)" line) from its start until
it becomes a node or is stopped. Warm agents end with the server that started them: their stdin
reaches EOF.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from cible.node.token import hand_token

log = logging.getLogger("cible.provider.local.warm")
FOLDER = ".warm"  # under the nodes' root: the warm agents' working folder and their log until told
ALIVE_EVERY_S = 30.0  # how often the ledger hears the pool still runs (a crash bills up to that much more)
# A taken agent's replacement starts this long after: its start (~0.2 s of CPU) would compete with
# the first job of the node just made, on the same machine.
REFILL_AFTER_S = 1.0
RETRY_AFTER_S = 30.0  # after warm agents keep dying before they are needed: stop starting them that long
MAX_EARLY_EXITS = 3


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class WarmLedger(Protocol):
    """Where warm agents' lifetimes are kept for the cost report (the server's store)."""

    def opened(self, at: datetime) -> int: ...

    def closed(self, span: int, at: datetime) -> None: ...

    def alive(self, spans: list[int], at: datetime) -> None: ...


@dataclass
class Warm:
    proc: subprocess.Popen
    span: int | None


class WarmAgents:
    def __init__(self, python: str, nodes_root: Path, count: int, ledger: WarmLedger | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.python = python
        self.folder = nodes_root / FOLDER
        self.count = count
        self.ledger = ledger
        self.clock = clock
        self._ready: list[Warm] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._early_exits = 0
        self._taken_at = -REFILL_AFTER_S  # monotonic
        self._ended: list[tuple[Warm, datetime]] = []  # taken, their spans not closed yet

    def start(self) -> None:
        if self.count > 0 and self._thread is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._keep_full, name="warm-agents", daemon=True)
            self._thread.start()

    def pids(self) -> list[int]:
        """The warm agents ready to be handed out."""
        with self._lock:
            return [warm.proc.pid for warm in self._ready if warm.proc.poll() is None]

    def take(self, root: Path, argv: list[str], token: str) -> subprocess.Popen | None:
        """A warm agent made the node of `root` (`argv`: its agent's arguments, the root aside),
        or None when none is ready."""
        while True:
            with self._lock:
                if not self._ready:
                    return None
                warm = self._ready.pop(0)
                # billed until now: written by the pool's thread, off the new node's way
                self._ended.append((warm, self.clock()))
            self._taken_at = time.monotonic()
            self._wake.set()  # its replacement
            if warm.proc.poll() is not None:
                continue
            try:
                warm.proc.stdin.write(json.dumps({"root": str(root), "argv": argv}).encode() + b"\n")
                warm.proc.stdin.flush()
            except OSError:  # it died just now
                continue
            hand_token(warm.proc, token)
            self._early_exits = 0
            return warm.proc

    def stop(self) -> None:
        """End the pool: every warm agent reads EOF and exits (a node it became goes on)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)  # it starts no agent after this
        self._close_ended()
        with self._lock:
            left, self._ready = self._ready, []
        for warm in left:
            self._close_span(warm)
            try:
                warm.proc.stdin.close()
            except OSError:
                pass
        for warm in left:
            try:
                warm.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                warm.proc.kill()

    # -- the pool's thread ------------------------------------------------------------------
    def _keep_full(self) -> None:
        last_alive = time.monotonic()
        while not self._stopped.is_set():
            self._wake.clear()  # first: a take from here on wakes the wait below
            quiet = self._taken_at + REFILL_AFTER_S - time.monotonic()
            if quiet > 0 and self._stopped.wait(quiet):
                break
            try:
                self._close_ended()
                self._drop_dead()
                while not self._stopped.is_set() and len(self.pids()) < self.count \
                        and self._early_exits < MAX_EARLY_EXITS:
                    self._start_one()
                if time.monotonic() - last_alive >= ALIVE_EVERY_S:
                    last_alive = time.monotonic()
                    self._tell_alive()
            except Exception:  # the pool must outlive one failure (a full disk, the store busy)
                log.exception("the warm agents' pool")
            backing_off = self._early_exits >= MAX_EARLY_EXITS
            if not self._wake.wait(RETRY_AFTER_S if backing_off else ALIVE_EVERY_S) and backing_off:
                self._early_exits = 0  # then try again

    def _start_one(self) -> None:
        with open(self.folder / "agents.log", "ab") as out:
            proc = subprocess.Popen([self.python, "-m", "cible.agent", "--warm"], stdin=subprocess.PIPE, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd=self.folder)
        warm = Warm(proc, None)
        with self._lock:  # first: an agent started is always the pool's to hand out or stop
            self._ready.append(warm)
        if self.ledger is not None:
            try:
                warm.span = self.ledger.opened(self.clock())
            except Exception:  # billing must not stop the pool
                log.exception("the warm pool's ledger")

    def _drop_dead(self) -> None:
        with self._lock:
            dead = [warm for warm in self._ready if warm.proc.poll() is not None]
            self._ready = [warm for warm in self._ready if warm not in dead]
        for warm in dead:
            self._close_span(warm)
            self._early_exits += 1
            log.warning("a warm agent exited with code %s before it was needed (see %s)", warm.proc.returncode,
                        self.folder / "agents.log")

    def _close_ended(self) -> None:
        with self._lock:
            ended, self._ended = self._ended, []
        for warm, at in ended:
            self._close_span(warm, at)

    def _close_span(self, warm: Warm, at: datetime | None = None) -> None:
        if warm.span is not None and self.ledger is not None:
            span, warm.span = warm.span, None
            try:
                self.ledger.closed(span, at or self.clock())
            except Exception:  # billing must not stop the pool
                log.exception("the warm pool's ledger")

    def _tell_alive(self) -> None:
        with self._lock:
            spans = [warm.span for warm in self._ready if warm.span is not None]
        if spans and self.ledger is not None:
            self.ledger.alive(spans, self.clock())
