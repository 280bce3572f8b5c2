"""The loop every reconciler runs in: a background thread that makes a pass, then sleeps until
woken or until the pass said the next one is due."""

from __future__ import annotations

import logging
import threading

RETRY_S = 1.0  # after a pass that raised


class ReconcilerLoop:
    name = "reconciler"

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = logging.getLogger(f"cible.{self.name}")

    def step(self) -> float:
        """One pass; returns how many seconds until the next is due (a wake comes sooner)."""
        raise NotImplementedError

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay = self.step()
            except Exception:  # a bad pass must not kill the loop; it is retried
                self._log.exception("%s pass failed", self.name)
                delay = RETRY_S
            self._wake.wait(delay)
