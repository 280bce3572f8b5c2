"""Running the processes of a distributed job on one node: start them all, wait for all.

Each rank is the job's command in a shell of its own session (so its whole tree
can be ended), with its own log: global rank 0 writes user_logs/std_log.txt (the
file `--stream` follows; Azure names it std_log_process_0.txt and its SDK streams
it), rank k >= 1 writes user_logs/std_log_process_<k>.txt. The first rank to exit
non-zero fails the job and every other rank's tree is ended. Stdlib only.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cible.launch.procs import end_group, kill_tree


def log_name(rank: int) -> str:
    return "std_log.txt" if rank == 0 else f"std_log_process_{rank}.txt"


class Rank:
    def __init__(self, rank: int, proc: subprocess.Popen, log: Path) -> None:
        self.rank, self.proc, self.log = rank, proc, log


class Ranks:
    """The processes of one node of a distributed job."""

    def __init__(self, shell: str, command: str, cwd: Path, env: dict[str, str],
                 processes: list[tuple[int, dict[str, str]]], log_dir: Path,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.ranks: list[Rank] = []
        self.exits: queue.Queue[Rank] = queue.Queue()
        try:
            for rank, extra in processes:
                path = log_dir / log_name(rank)
                with open(path, "ab", buffering=0) as log:
                    proc = subprocess.Popen(
                        [shell, "-c", command], cwd=cwd, env={**env, **extra}, stdin=subprocess.DEVNULL,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec_fn,
                    )
                self.ranks.append(Rank(rank, proc, path))
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
