"""sha256 digests of workspace files, kept so that a big file is read once, not at every fetch.

The nodes that do not share the workspace folder fetch a job's datastore inputs and resume folder
file by file, each checked against the digest the server names (`X-Content-SHA256`). Hashing a
200 MB file takes a second or more; a job requeued, or many jobs reading one dataset, would pay it
at every fetch. The digests are kept in a small SQLite file, keyed by path, size and mtime_ns: a
file rewritten since has another size or mtime, so its old digest is never used.

A file changed within the last RACY_S seconds is hashed but not kept (as git does with its index):
a write in the same mtime tick as the hash would otherwise leave a stale digest under a key that
still matches. Should the cache be unusable (a read-only or full disk), files are hashed every time.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from cible.runfiles import sha256_of

log = logging.getLogger("cible.server")
RACY_S = 2.0



class FileHashes:
    def __init__(self, db: Path) -> None:
        self.db = db
        self._lock = threading.Lock()  # one writer at a time: SQLite's own lock would make callers wait anyway
        self._ready = False
        self._broken = False

    def sha256(self, path: Path) -> str:
        """The sha256 of the regular file at `path` (it must have been checked to be one)."""
        key = str(path)
        st = os.stat(path)
        cached = self._get(key, st.st_size, st.st_mtime_ns)
        if cached is not None:
            return cached
        digest = sha256_of(path)
        after = os.stat(path)
        unchanged = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        if unchanged and time.time() - st.st_mtime >= RACY_S:
            self._put(key, st.st_size, st.st_mtime_ns, digest)
        return digest

    def _connect(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        try:
            if not self._ready:
                self.db.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db, timeout=10)
            if not self._ready:
                conn.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                             "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)")
                conn.commit()
                self._ready = True
            return conn
        except (OSError, sqlite3.Error) as exc:
            log.warning("file digests are not kept (%s): every fetch hashes its file", exc)
            self._broken = True
            return None

    def _get(self, key: str, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            conn = self._connect()
            if conn is None:
                return None
            try:
                row = conn.execute("SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                                   (key, size, mtime_ns)).fetchone()
            except sqlite3.Error:
                return None
            finally:
                conn.close()
        return row[0] if row else None

    def _put(self, key: str, size: int, mtime_ns: int, digest: str) -> None:
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                with conn:
                    conn.execute("INSERT OR REPLACE INTO hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                                 (key, size, mtime_ns, digest))
            except sqlite3.Error as exc:
                log.debug("digest of %s not kept: %s", key, exc)
            finally:
                conn.close()
