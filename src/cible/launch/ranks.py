"""Running the processes of a distributed job on one node: start them all, wait for all.

Each rank is the job's command in a shell of its own session (so its whole tree
can be ended), with its own log: global rank 0 writes user_logs/std_log.txt (the
file `--stream` follows; Azure names it std_log_process_0.txt and its SDK streams
it), rank k >= 1 writes user_logs/std_log_process_<k>.txt. The first rank to exit
non-zero fails the job and every other rank's tree is ended. Stdlib only.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cible.launch.procs import Adopted, end_group, kill_tree, subreaper


def log_name(rank: int) -> str:
    return "std_log.txt" if rank == 0 else f"std_log_process_{rank}.txt"


class Rank:
    def __init__(self, rank: int, proc: subprocess.Popen | Adopted, log: Path) -> None:
        self.rank, self.proc, self.log = rank, proc, log


class Ranks:
    """The processes of one node of a distributed job.

    With a sandbox (`enter`, see launch/sandbox.py), every rank is started in the same one: a child
    enters it, starts the ranks and leaves them to this process (a child subreaper while it does),
    so the ranks share one user and mount namespace and one Landlock domain and can still reach
    each other as the processes of one job do (MPI's cross-memory attach, pidfd_getfd).
    """

    def __init__(self, shell: str, command: str, cwd: Path, env: dict[str, str],
                 processes: list[tuple[int, dict[str, str]]], log_dir: Path,
                 enter: Callable[[], None] | None = None) -> None:
        self.ranks: list[Rank] = []
        self.exits: queue.Queue[Rank] = queue.Queue()
        starts = [(rank, {**env, **extra}, log_dir / log_name(rank)) for rank, extra in processes]
        try:
            if enter is None:
                for rank, rank_env, path in starts:
                    self.ranks.append(Rank(rank, _start(shell, command, cwd, rank_env, path), path))
            else:
                pids = _start_in_one_sandbox(enter, lambda: [_start(shell, command, cwd, rank_env, path)
                                                             for _, rank_env, path in starts])
                self.ranks = [Rank(rank, Adopted(pid), path) for (rank, _, path), pid in zip(starts, pids)]
        except BaseException:
            self.end()  # no rank outlives a start that failed half-way
            raise
        for r in self.ranks:
            threading.Thread(target=self._reap, args=(r,), daemon=True).start()

    @property
    def pids(self) -> list[int]:
        return [r.proc.pid for r in self.ranks]

    def _reap(self, rank: Rank) -> None:
        rank.proc.wait()
        self.exits.put(rank)

    def wait(self, deadline: float | None, should_stop: Callable[[], bool]) -> tuple[str | None, Rank | None]:
        """Wait for every rank. Returns ("timeout" | "cancel" | None, the first rank that failed or None)."""
        left = len(self.ranks)
        while left:
            try:
                rank = self.exits.get(timeout=0.05)
            except queue.Empty:
                if should_stop():
                    return "cancel", None
                if deadline is not None and time.monotonic() >= deadline:
                    return "timeout", None
                continue
            left -= 1
            if rank.proc.returncode != 0:
                return None, rank
        return None, None

    def end(self) -> None:
        """End every rank's process tree (at once: each one's grace period runs alongside the others')."""
        self._each(kill_tree, [r for r in self.ranks if r.proc.poll() is None])
        for r in self.ranks:
            r.proc.wait()

    def end_groups(self) -> None:
        """What a rank left running in its session is ended, as when Azure tears down a node."""
        self._each(end_group, self.ranks)

    @staticmethod
    def _each(fn: Callable[[int], None], ranks: list[Rank]) -> None:
        threads = [threading.Thread(target=fn, args=(r.proc.pid,), daemon=True) for r in ranks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _start(shell: str, command: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab", buffering=0) as fh:
        return subprocess.Popen([shell, "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _start_in_one_sandbox(enter: Callable[[], None], start_all: Callable[[], list[subprocess.Popen]]) -> list[int]:
    """Run `start_all` in a child that first enters the sandbox; its processes become ours (their
    pids are returned). Raises SubprocessError (as a failed preexec_fn does) when the sandbox cannot
    be entered."""
    read, write = os.pipe()
    subreaper(True)
    try:
        pid = os.fork()
        if pid == 0:  # the child: enter, start every rank, say their pids, and go
            os.close(read)
            try:
                enter()
                # The Popen objects are kept until the child's _exit: one collected earlier reaps its
                # process if it already ended (Popen.__del__ polls), and ours would never see its exit.
                started = start_all()
                answer = {"pids": [proc.pid for proc in started]}
            except BaseException as exc:  # noqa: BLE001  (any failure is the sandbox's to report)
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write, json.dumps(answer).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as fh:
            answer = json.loads(fh.read() or b'{"error": "the sandbox child said nothing"}')
        os.waitpid(pid, 0)  # its ranks are ours from here on
    finally:
        subreaper(False)
    if "error" in answer:
        raise subprocess.SubprocessError(answer["error"])
    return answer["pids"]
