"""Moving a run's files between the server and a node that does not share its workspace folder.

Standard library only (http.client): it runs on hosts that have nothing but Python 3.

`Transfer`'s moves (cible.agent.staged.RunTransfer carries a run's steps out with them):

- `download`: GET a file into `dest`, through `dest.part`; a `.part` left by a fetch cut short (a
  lost connection, a killed agent) is continued with a Range request. The bytes are checked against
  the sha256 the caller knows (a blob's name) or the one the server sends (`X-Content-SHA256`), then
  renamed into place: a file under its name is always whole.
- `download_tree`: a manifest (kind, files with size and sha256), then each file; files already
  there with the right size and sha256 are kept.
- `upload_tree`: each regular file under a folder, PUT in 8 MiB chunks with their offset (a chunk
  sent again lands where it did; after an interruption, the send goes on from what the server says
  it has), then a commit naming every file's sha256, which the server checks before it moves anything.

A server that does not answer (down, restarting, a tunnel that blipped: refused, reset, timed out)
or answers a 5xx is tried again, with pauses growing to MAX_PAUSE_S, for `retry_for_s` from the
first failure in a row (by default the agent's orphan time: a server gone longer ends the node
anyway); what still fails then, and every refusal (a 4xx, at once), raises `TransferError` naming
the route, the status and the server's message. `TransferError.gone` says the server no longer
wants this run (not this node's attempt): the agent drops it. Routes are URL paths, already quoted
(`RunTransfer.route` makes them), with their query.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from cible.core.safepaths import under
from cible.runfiles import blob_path, regular_files, sha256_of

CHUNK_BYTES = 8 << 20  # per PUT (the server's cap, CIBLE_MAX_AGENT_CHUNK_BYTES, is 32 MiB by default)
READ_BYTES = 1 << 20
RETRY_FOR_S = 600.0  # how long a server that does not answer is tried again (the agent's orphan_after_s)
MAX_PAUSE_S = 5.0  # the longest pause between two tries
SEND_TRIES = 3  # sends of a file that keeps shrinking (or whose staging the server keeps clearing) before giving up
CHECKSUM_HEADER = "X-Content-SHA256"
USER_AGENT = "cible-agent-transfer"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TRANSPORT = (OSError, http.client.HTTPException)  # refused, reset, timed out, TLS, a broken reply

Server = str | Callable[[], str]  # the server's base URL, or a function that says where it is now
# (route, bytes moved so far for it, or -1 before a pause to try again): may raise to stop the move
Progress = Callable[[str, int], None]


class TransferError(Exception):
    def __init__(self, message: str, *, route: str = "", status: int | None = None, code: str = "",
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.route = route
        self.status = status
        self.code = code
        self.details = details

    @property
    def gone(self) -> bool:
        """The server does not want this run (any more): requeued, ended, or not this node's. The agent
        drops the run then; any other refusal (an input that does not exist) fails it."""
        return self.status in (404, 409) and isinstance(self.details, dict) and self.details.get("placed") is False


class _Retry(Exception):
    """A failure worth trying again (no answer, a cut-off answer, a 5xx)."""


class _Shrunk(Exception):
    """The file being sent got shorter than it was when the send began (rewritten meanwhile)."""


class _Patience:
    """How long one call is tried again: `retry_for_s` from its first failure in a row (`reset` when
    it made progress), pausing 0.2 s, 0.4 s, … up to MAX_PAUSE_S between tries."""

    def __init__(self, retry_for_s: float) -> None:
        self.retry_for_s = retry_for_s
        self.since: float | None = None
        self.tries = 0

    def reset(self) -> None:
        self.since, self.tries = None, 0

    def next_pause(self) -> float | None:
        """The pause before the next try; None when the time to try again is spent."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        self.tries += 1
        left = self.since + self.retry_for_s - now
        if left <= 0:
            return None
        return min(0.2 * 2 ** min(self.tries - 1, 16), MAX_PAUSE_S, left)

    def spent(self) -> str:
        elapsed = time.monotonic() - (self.since or time.monotonic())
        return f"gave up after {self.tries} {'try' if self.tries == 1 else 'tries'} in {elapsed:.1f} s"


class Transfer:
    """File moves for one caller (not shared between threads): one kept-alive connection, retries."""

    def __init__(self, server: Server, token: str, *, timeout: float = 60.0, manifest_timeout: float = 600.0,
                 retry_for_s: float = RETRY_FOR_S, chunk_bytes: int = CHUNK_BYTES,
                 on_progress: Progress | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.server = server
        self.token = token
        self.timeout = timeout  # the connect and each read
        # A big input's first manifest, and a commit, wait while the server hashes the files.
        self.manifest_timeout = manifest_timeout
        self.retry_for_s = retry_for_s
        self.chunk_bytes = chunk_bytes
        self.on_progress = on_progress
        self._ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None
        self._conn_key: tuple[str, str, int] | None = None
        self._digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of files sent

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- downloads --------------------------------------------------------------------------------
    def download(self, route: str, dest: Path, expected_sha256: str | None = None, size: int | None = None) -> Path:
        """GET `route` into `dest` (resumable); returns `dest`. A `dest` that already has `size` bytes
        hashing to `expected_sha256` is kept as it is."""
        dest = Path(dest)
        if expected_sha256 and dest.is_file() and (size is None or dest.stat().st_size == size) \
                and sha256_of(dest) == expected_sha256:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        restarted = False
        patience = _Patience(self.retry_for_s)
        while True:
            had = part.stat().st_size if part.is_file() else 0
            try:
                digest = self._fetch(route, part, expected_sha256, size)
            except _Retry as exc:
                if part.is_file() and part.stat().st_size > had:
                    patience.reset()  # bytes came: a slow, cut-off connection is not a server gone
                self._pause(patience, "GET", route, str(exc))
                continue
            actual = sha256_of(part)
            if digest and actual != digest:
                part.unlink(missing_ok=True)
                if not restarted:  # a .part from another version of the file: once more, from the start
                    restarted = True
                    continue
                raise TransferError(f"GET {route}: the bytes received hash to {actual}, not {digest} "
                                    "(the file changed on the server while it was fetched?)", route=route)
            os.replace(part, dest)
            return dest

    def download_tree(self, manifest_route: str, files_route: str, dest: Path) -> list[Path]:
        """The files a manifest lists, into the folder `dest` (for a manifest of kind `file`, `dest` is
        that file). Returns the paths written or kept."""
        dest = Path(dest)
        manifest = self.get_json(manifest_route, timeout=self.manifest_timeout)
        entries = manifest.get("files") or []
        if manifest.get("kind") == "file":
            if len(entries) != 1:
                raise TransferError(f"GET {manifest_route}: a file manifest lists {len(entries)} files",
                                    route=manifest_route)
            entry = entries[0]
            return [self.download(_join(files_route, entry["path"]), dest, entry["sha256"], entry["size"])]
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        for entry in entries:
            target = under(dest, entry["path"], field="files")  # a manifest path never leads out of `dest`
            written.append(self.download(_join(files_route, entry["path"]), target, entry["sha256"], entry["size"]))
        return written

    def download_snapshot(self, blobs_route: str, snapshot: str, blob_root: Path, subpath: str = "") -> int:
        """A snapshot's manifest and its file blobs (those under `subpath`) into the blob cache
        `blob_root`, as staging.materialise_snapshot reads them. Blobs already there are kept (each
        was checked against its name when it came). Returns how many blobs were fetched."""
        fetched = 0
        manifest_path = blob_path(Path(blob_root), snapshot)
        if not manifest_path.is_file():
            self.download(_join(blobs_route, snapshot), manifest_path, snapshot)
            fetched += 1
        with open(manifest_path, encoding="utf-8") as fh:
            files = json.load(fh).get("files") or {}
        prefix = subpath.strip("/")
        for rel, entry in files.items():
            if prefix and rel != prefix and not rel.startswith(prefix + "/"):
                continue
            digest = entry["sha256"]
            target = blob_path(Path(blob_root), digest)
            if not target.is_file():
                self.download(_join(blobs_route, digest), target, digest, entry.get("size"))
                fetched += 1
        return fetched

    # -- uploads ------------------------------------------------------------------------------------
    def upload_tree(self, src_dir: Path, files_route: str, commit_route: str, *, staged_route: str | None = None,
                    manifest_route: str | None = None) -> dict[str, Any]:
        """Send every regular file under `src_dir` and commit them; returns the commit's answer.
        `staged_route`: what the server already holds of an interrupted send (continued from there);
        `manifest_route`: what the destination already has (files with the same sha256 are not sent)."""
        src_dir = Path(src_dir)
        files = {rel: path for rel, path in regular_files(src_dir)} if src_dir.is_dir() else {}
        digests = {rel: self._digest(path) for rel, path in files.items()}
        have = {}
        if manifest_route:
            have = {e["path"]: e["sha256"] for e in self.get_json(manifest_route, timeout=self.manifest_timeout)
                    .get("files") or []}
        staged = {}
        if staged_route:
            staged = {e["path"]: e["size"] for e in self.get_json(staged_route).get("files") or []}
        for rel, path in files.items():
            if have.get(rel) != digests[rel]:
                digests[rel] = self._send_file(path, _join(files_route, rel), staged.get(rel, 0), digests[rel])
        try:
            return self.post_json(commit_route, {"files": digests}, timeout=self.manifest_timeout)
        except TransferError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            again = list(details.get("mismatched") or []) + list(details.get("missing") or [])
            if exc.status != 400 or not again or not set(again) <= set(files):
                raise
        for rel in again:  # changed while it was sent, or dropped by the server: once more, whole
            self._digests.pop(_key(files[rel]), None)
            digests[rel] = self._send_file(files[rel], _join(files_route, rel), 0, self._digest(files[rel]))
        return self.post_json(commit_route, {"files": digests}, timeout=self.manifest_timeout)

    def _send_file(self, path: Path, route: str, staged: int, digest: str) -> str:
        """Send `path` (going on from the `staged` bytes the server holds); returns the sha256 to commit
        it with. A file that shrank while it was sent (a checkpoint rewritten shorter during a resume
        sync) is hashed again and sent again from its start."""
        for _ in range(SEND_TRIES):
            try:
                self._send(path, route, staged)
                return digest
            except _Shrunk:
                digest, staged = self._digest(path), 0  # its size and mtime changed: hashed anew
        raise TransferError(f"PUT {route}: {path} kept getting shorter while it was sent "
                            f"({SEND_TRIES} tries)", route=route)

    def _send(self, path: Path, route: str, staged: int) -> None:
        size = path.stat().st_size
        offset = staged if 0 < staged <= size else 0  # what an interrupted send left there
        if offset == size and size > 0:
            return
        setbacks = 0
        with open(path, "rb") as fh:
            while True:
                fh.seek(offset)
                want = min(self.chunk_bytes, size - offset)
                data = fh.read(want)
                if len(data) < want:  # the end came early: the file shrank since it was measured
                    raise _Shrunk(route)
                try:
                    answer = self._json_call("PUT", route, body=data, query={"offset": offset})
                except TransferError as exc:
                    held = exc.details.get("staged") if isinstance(exc.details, dict) else None
                    if exc.status == 409 and isinstance(held, int) and 0 <= held < offset and setbacks < SEND_TRIES:
                        setbacks += 1
                        offset = held  # the server has less than was sent (its staging was cleared): from there
                        continue
                    raise
                held = answer.get("staged", offset + len(data))
                if self.on_progress:
                    self.on_progress(route, held)
                if held >= size:
                    return
                if held <= offset:  # never a loop that sends and gets nowhere
                    raise TransferError(f"PUT {route}: the server holds {held} bytes after a chunk of {len(data)} "
                                        f"sent at offset {offset}: the send makes no progress", route=route)
                offset = held

    def _digest(self, path: Path) -> str:
        key = _key(path)
        if key not in self._digests:
            self._digests[key] = sha256_of(path)
        return self._digests[key]

    # -- steps ----------------------------------------------------------------------------------------
    def get_json(self, route: str, *, timeout: float | None = None) -> Any:
        return self._json_call("GET", route, timeout=timeout)

    def post_json(self, route: str, body: Any, *, timeout: float | None = None) -> Any:
        return self._json_call("POST", route, body=json.dumps(body).encode(), content_type="application/json",
                               timeout=timeout)

    # -- HTTP -----------------------------------------------------------------------------------------
    def _json_call(self, method: str, route: str, *, body: bytes | None = None, query: dict[str, Any] | None = None,
                   content_type: str = "application/octet-stream", timeout: float | None = None) -> Any:
        patience = _Patience(self.retry_for_s)
        while True:
            try:
                answer = self._open(method, route, body=body, query=query, timeout=timeout,
                                    headers={"Content-Type": content_type} if body is not None else {})
                data = answer.read()
                if answer.will_close:
                    self.close()
            except _TRANSPORT as exc:
                self.close()
                self._pause(patience, method, route, describe_error(exc))
                continue
            if answer.status >= 500:  # the server (or a proxy before it) is restarting or busy
                failure = _refusal(method, route, answer.status, data)
                self._pause(patience, method, route, failure.message.removeprefix(f"{method} {route}: "),
                            status=answer.status, code=failure.code)
                continue
            if answer.status >= 400:
                raise _refusal(method, route, answer.status, data)
            return json.loads(data) if data else None

    def _fetch(self, route: str, part: Path, expected: str | None, size: int | None) -> str | None:
        """One GET of what `part` lacks; returns the digest the whole file must have. Raises _Retry for a
        failure worth another try (the .part keeps what came), TransferError for a refusal."""
        have = part.stat().st_size if part.is_file() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is not None and have == size and expected and part.is_file():
            return expected  # whole already: only the check is left (an empty file is fetched: it makes the .part)
        try:
            answer = self._open("GET", route, headers={"Range": f"bytes={have}-"} if have else {})
        except _TRANSPORT as exc:
            self.close()
            raise _Retry(describe_error(exc)) from None
        try:
            if answer.status == 416:  # the .part is not shorter than the file: start over
                answer.read()
                part.unlink(missing_ok=True)
                raise _Retry("the partial file was as long as the file on the server")
            if answer.status >= 500:
                answer.read()
                raise _Retry(f"{answer.status} from the server")
            if answer.status >= 400:
                raise _refusal("GET", route, answer.status, answer.read())
            start = _range_start(answer.getheader("Content-Range")) if answer.status == 206 else 0
            if start not in (0, have):
                answer.read()
                part.unlink(missing_ok=True)
                raise _Retry(f"the server sent bytes from {start}, not {have}")
            expected = expected or answer.getheader(CHECKSUM_HEADER)
            done = start
            with open(part, "r+b" if start else "wb") as out:
                out.seek(start)
                out.truncate()
                while True:
                    block = answer.read(READ_BYTES)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if self.on_progress:
                        self.on_progress(route, done)
            if answer.length:  # bytes still due: http.client returns b"" when the connection closes early
                raise _Retry(f"the answer was cut off after {done} bytes")  # the .part stays: a Range goes on
        except _TRANSPORT as exc:
            self.close()
            raise _Retry(describe_error(exc)) from None
        except BaseException:
            self.close()  # a half-read answer: the connection cannot carry another request
            raise
        if answer.will_close:
            self.close()
        return expected

    def _open(self, method: str, route: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
              query: dict[str, Any] | None = None, timeout: float | None = None) -> http.client.HTTPResponse:
        base = self.server() if callable(self.server) else self.server
        parts = urlsplit(base)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise TransferError(f"not an http(s) URL of the server: {base!r}", route=route)
        key = (parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme])
        route_path, _, route_query = route.partition("?")
        target = parts.path.rstrip("/") + route_path  # routes are URL paths, quoted already (_join, RunTransfer)
        query_text = "&".join(q for q in (route_query, urlencode(query or {})) if q)
        if query_text:
            target += "?" + query_text
        sent = {"User-Agent": USER_AGENT, "Authorization": f"Bearer {self.token}", **(headers or {})}
        wait = self.timeout if timeout is None else timeout
        for fresh in (False, True):
            conn = self._connection(key, wait, fresh)
            reused = conn.sock is not None
            try:
                conn.request(method, target, body=body, headers=sent)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused or fresh:
                    raise
                # A kept connection the server had closed: it never saw the request. Once more, on a new one.
        raise AssertionError("unreachable")

    def _connection(self, key: tuple[str, str, int], timeout: float, fresh: bool) -> http.client.HTTPConnection:
        if fresh or self._conn_key != key:
            self.close()
        if self._conn is None:
            scheme, host, port = key
            if scheme == "https":
                self._ssl_context = self._ssl_context or ssl.create_default_context()
                self._conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context)
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
            self._conn_key = key
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def _pause(self, patience: _Patience, method: str, route: str, reason: str, *, status: int | None = None,
               code: str = "") -> None:
        """Wait before trying `route` again, or raise TransferError when the time to try is spent. A
        caller's on_progress hears of each wait: a run canceled meanwhile stops here, not after it."""
        pause = patience.next_pause()
        if pause is None:
            raise TransferError(f"{method} {route}: {patience.spent()}: {reason}", route=route, status=status,
                                code=code)
        if self.on_progress:
            self.on_progress(route, -1)
        time.sleep(pause)


def quote_path(rel: str) -> str:
    """A file path (or a route's path) quoted for a URL: a name may hold `?`, `#`, `%` or spaces."""
    return quote(rel, safe=_PATH_SAFE)


def _join(route: str, rel: str) -> str:
    """`route` (which may carry a query) with the file path `rel` added to its path, quoted."""
    path, sep, query = route.partition("?")
    return f"{path}/{quote_path(rel)}{sep}{query}"


def _refusal(method: str, route: str, status: int, data: bytes) -> TransferError:
    code, message, details = "", data.decode("utf-8", "replace")[:300], None
    try:
        error = json.loads(data)["error"]
        code, message, details = error.get("code", ""), error.get("message", message), error.get("details")
    except (ValueError, KeyError, TypeError):
        pass
    return TransferError(f"{method} {route}: {status} {code}: {message}".replace(" : ", ": "), route=route,
                         status=status, code=code, details=details)


def _range_start(content_range: str | None) -> int:
    """The first byte of `bytes <start>-<end>/<size>`; -1 when it cannot be read."""
    try:
        return int((content_range or "").split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return -1



def _key(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns)



def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
