"""Where agents' long-polls wait, and how the reconcilers wake them.

A node's heartbeat waits here (on the server's event loop) until something changes
for it or its wait runs out. Reconciler threads call `notify`, which is thread-safe.
"""

from __future__ import annotations

import asyncio
import threading


class AgentHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        self._pending: set[str] = set()  # notified while no poll waited: the next one returns at once
        self._closing = False

    async def wait(self, node_id: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            if self._closing:
                return
            if node_id in self._pending:
                self._pending.discard(node_id)
                return
            self._events[node_id] = (loop, event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                if self._events.get(node_id, (None, None))[1] is event:
                    del self._events[node_id]

    def notify(self, *node_ids: str) -> None:
        with self._lock:
            for node_id in node_ids:
                entry = self._events.pop(node_id, None)
                if entry is None:
                    self._pending.add(node_id)
                else:
                    loop, event = entry
                    loop.call_soon_threadsafe(event.set)

    def release_all(self) -> None:
        """The server is stopping: answer every waiting poll now (and any later one at once), so
        shutting down does not wait out the long-polls."""
        with self._lock:
            self._closing = True
            entries, self._events = list(self._events.values()), {}
        for loop, event in entries:
            loop.call_soon_threadsafe(event.set)

    def clear(self, node_id: str) -> None:
        """Forget a pending wake-up: the reply being built already carries the news."""
        with self._lock:
            self._pending.discard(node_id)
