"""A warm agent: started by its provider before any node needs it (`CIBLE_WARM_NODES`), it has done
its imports, started its launchers' fork server and found the limits mechanism, and waits on stdin to
be told which node to be.

What it is told: one JSON line, `{"root": …, "argv": […]}` (the node's working root, and the
arguments `python -m cible.agent` would get, as `NodeRequest.agent_args` makes them), then the
node's token on the next line, as any agent gets it (cible.node.token). From there it is that node's
agent: its output goes to the root's agent.log, and its launchers are put under the node's limits.
EOF on stdin (its provider is gone, or stopping the pool) ends it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cible.node.limits import NodeLimits, detect_mechanism, preexec_for
from cible.node.runner import LocalProcessRunner

AGENT_LOG = "agent.log"


@dataclass(frozen=True)
class WarmStart:
    """What a warm agent did before it knew its node (serve_when_told): its launchers (start_launchers)
    and the limits mechanism, found while it waited (finding it makes and removes a test group)."""

    news: int
    runner: LocalProcessRunner
    mechanism: str


def start_launchers(runs_root: Path, limits: NodeLimits | None) -> tuple[int, LocalProcessRunner]:
    """The launchers' runner with its fork server started, and the read end of the pipe each launcher
    writes a byte to on each status (the watcher's wake-up). Under `limits` from the start when
    given; a warm agent's, made before its node is known, are put under them by `adopt`."""
    news, wake_fd = os.pipe()
    os.set_blocking(news, False)
    held = {} if limits is None else {"preexec_fn": preexec_for(limits), "on_spawn": limits.add}
    runner = LocalProcessRunner(runs_root, wake_fd=wake_fd, **held)
    runner.prepare()
    return news, runner


def serve_when_told(run_agent: Callable[[list[str], WarmStart], int]) -> int:
    news, runner = start_launchers(Path(os.devnull), None)  # its runs' folder and limits come with its node
    warm = WarmStart(news, runner, detect_mechanism())
    line = sys.stdin.readline()
    if not line.strip():
        runner.close()
        return 0
    try:
        order = json.loads(line)
        root, argv = Path(order["root"]), [str(a) for a in order["argv"]]
    except (ValueError, KeyError, TypeError) as exc:
        print(f"cible agent --warm: cannot read the node it is told to be: {exc}", file=sys.stderr)
        return 2
    _move_to(root)
    return run_agent(["--root", str(root), *argv], warm)


def _move_to(root: Path) -> None:
    """Work in the node's root and write to its agent.log, as an agent started for that node does."""
    os.chdir(root)
    log = os.open(root / AGENT_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
