"""`--reload` (local deployments): re-import the scoring script and run its `init()` again when it changes.

Watched: the entry script and the other `.py` files and `swagger*.json` files beside it and in the app
root (not recursive: a few stat calls per tick, on the event loop). A change is acted on once the files
have stayed the same for one tick, so an editor's half-written save is not loaded. The reload runs on
the loop, between requests: requests wait for it, none sees half a script. A script that no longer
loads, or whose init() raises, leaves the server unready with the reason, as at startup; the next
save tries again.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
from collections.abc import Callable

logger = logging.getLogger("cible.serving")


def watched_files(app_root: str, script_path: str | None) -> list[str]:
    folders = {os.path.abspath(app_root)}
    if script_path:
        folders.add(os.path.dirname(script_path))
    files = {script_path} if script_path else set()
    for folder in folders:
        for pattern in ("*.py", "swagger*.json"):
            files.update(glob.glob(os.path.join(folder, pattern)))
    return sorted(f for f in files if f)


def snapshot(app_root: str, script_path: str | None) -> dict[str, tuple[int, int]]:
    """Each watched file's (mtime_ns, size); a missing file is absent."""
    state = {}
    for path in watched_files(app_root, script_path):
        try:
            info = os.stat(path)
        except OSError:
            continue
        state[path] = (info.st_mtime_ns, info.st_size)
    return state


class ScriptWatcher:
    """Polls the watched files; calls `reload()` after a change has settled."""

    def __init__(self, app_root: str, script_path: str | None, reload: Callable[[], None],
                 interval_s: float = 0.25) -> None:
        self.app_root, self.script_path, self.reload, self.interval_s = app_root, script_path, reload, interval_s
        self._loaded = snapshot(app_root, script_path)

    def tick(self, previous: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """One poll: reload when the files differ from what is loaded and equal `previous` (settled)."""
        current = snapshot(self.app_root, self.script_path)
        if current != self._loaded and current == previous:
            changed = sorted(p for p in set(current) | set(self._loaded) if current.get(p) != self._loaded.get(p))
            logger.info("Reloading the scoring script: %s changed", ", ".join(changed))
            self._loaded = current
            self.reload()
        return current

    async def run(self) -> None:
        previous = self._loaded
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                previous = self.tick(previous)
            except Exception:  # noqa: BLE001 - the watcher must outlive a failed reload
                logger.error("Reloading the scoring script failed", exc_info=True)
