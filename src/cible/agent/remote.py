"""What the `ssh` node provider runs on an attached host, from the bundle (stdlib only):

    python3 -m cible.agent.remote status ROOT...        one line of JSON: each node root's agent
    python3 -m cible.agent.remote stop ROOT [--kill]    end the node's agent and all it runs, then
                                                        remove ROOT (--kill: at once, as an eviction)

A node root holds the agent's `agent.json` (pid and start time, written by cible.agent.detach), so
a pid reused by another process is never taken for the agent, nor signalled."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from pathlib import Path

from cible.launch.procs import signal_tree
from cible.node import proc
from cible.node.files import AGENT_FILE, PREEMPTED_FILE, SELF_STOP_FILE

STOP_GRACE_S = 10.0


def _agent_pid(root: Path) -> int | None:
    """The node's agent pid while that very process runs, else None."""
    try:
        record = json.loads((root / AGENT_FILE).read_text())
        pid, started = int(record["pid"]), float(record["create_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if proc.alive(pid, started) else None


def status(roots: list[Path]) -> dict[str, dict]:
    out = {}
    for root in roots:
        stopped = root / SELF_STOP_FILE
        out[str(root)] = {"known": (root / AGENT_FILE).exists(), "alive": _agent_pid(root) is not None,
                          "preempted": (root / PREEMPTED_FILE).exists(),
                          "stopped_itself": stopped.read_text().strip() if stopped.exists() else None}
    return out


def stop(root: Path, kill: bool) -> None:
    pid = _agent_pid(root)
    if kill:
        (root / PREEMPTED_FILE).touch()
        if pid is not None:
            signal_tree(pid, signal.SIGKILL, session=True)
        return  # an evicted node's root stays for its provider to see it preempted; stop removes it
    if pid is not None:  # the agent ends its jobs (their launchers report Canceled) before it exits
        signal_tree(pid, signal.SIGTERM, wait_s=STOP_GRACE_S)
        if _agent_pid(root) is not None:
            signal_tree(pid, signal.SIGKILL, session=True)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cible.agent.remote")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("status").add_argument("roots", nargs="*", type=Path)
    stopping = verbs.add_parser("stop")
    stopping.add_argument("root", type=Path)
    stopping.add_argument("--kill", action="store_true")
    args = parser.parse_args(argv)
    if args.verb == "status":
        print(json.dumps(status(args.roots)))
    else:
        stop(args.root, args.kill)
    return 0


if __name__ == "__main__":
    sys.exit(main())
