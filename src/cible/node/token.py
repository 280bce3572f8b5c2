"""How a node's agent gets its token: one line on its stdin, from the provider that starts it.

Not in its environment: /proc/<pid>/environ keeps a process's first environment for its whole life,
and a job's command could read it there; not on its command line, which every user can read.
"""

from __future__ import annotations

import subprocess
import sys


def hand_token(proc: subprocess.Popen, token: str) -> None:
    """Give a just-started agent (Popen with stdin=PIPE) its token, then close the pipe."""
    try:
        proc.stdin.write(token.encode() + b"\n")
        proc.stdin.close()
    except OSError:  # it died at once: its provider reports the exit
        pass


def token_from_stdin() -> str | None:
    """The token its provider wrote on stdin, or None when stdin is a terminal or empty."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    return sys.stdin.readline().strip() or None
