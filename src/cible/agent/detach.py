"""`python3 -m cible.agent.detach <agent arguments…>`: start a node's agent that outlives its caller.

What a remote host runs over SSH (the bundle's folder on the path): it reads the node's token on
stdin, starts `python -m cible.agent <agent arguments…>` with this interpreter in a session of its
own, hands the token on the agent's stdin (never in argv, the environment or a file), writes
`<root>/agent.json` {"pid", "create_time"} and exits 0 once the agent has started; if the agent
dies within `SETTLE_S`, it exits 1 with the reason (its exit code and the end of its log) on stderr.
The agent's own output goes to `<root>/agent.log`.

The agent is started with `start_new_session` rather than a classic double fork: it leads a session
of its own with no terminal (its stdin is a pipe, its output a file), so the SSH session's hangup
never reaches it, and once this process exits it is adopted like a daemon. Staying its parent
until then is what lets this process report the exit code of an agent that dies at once.

It finds the `cible` package the same way as this process (the bundle's folder goes first on the
agent's PYTHONPATH), so the launchers the agent starts find it too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cible
from cible.node.files import AGENT_FILE
from cible.node.proc import create_time
from cible.node.token import hand_token, token_from_stdin
from cible.runfiles import write_json_atomic

SETTLE_S = 1.0  # an agent still running after this long has started (bad arguments or limits end it sooner)
LOG_FILE = "agent.log"


def package_root() -> Path:
    """The folder that holds the `cible` package this process runs (a bundle's, or a source tree's)."""
    return Path(cible.__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    finder = argparse.ArgumentParser(prog="python -m cible.agent.detach", add_help=False, allow_abbrev=False)
    finder.add_argument("--root", type=Path)
    known, rest = finder.parse_known_args(argv)
    if known.root is None:
        print("cible agent.detach: give the agent's arguments, --root among them", file=sys.stderr)
        return 2
    token = token_from_stdin()
    if not token:
        print("cible agent.detach: give the node's token on stdin", file=sys.stderr)
        return 2
    root = known.root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "CIBLE_AGENT_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root()), env.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "cible.agent", "--root", str(root), *rest]
    try:
        with open(root / LOG_FILE, "ab") as log:
            agent = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True, cwd=root, env=env)
    except OSError as exc:
        print(f"cible agent.detach: cannot start the agent ({sys.executable}): {exc}", file=sys.stderr)
        return 1
    hand_token(agent, token)
    write_json_atomic(root / AGENT_FILE, {"pid": agent.pid, "create_time": create_time(agent.pid)})
    try:
        code = agent.wait(timeout=SETTLE_S)
    except subprocess.TimeoutExpired:
        return 0  # started; it goes on once this process exits
    print(f"cible agent.detach: the agent exited at once with code {code}: {_tail(root / LOG_FILE)}",
          file=sys.stderr)
    return 1


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"no {path.name}"
    return " | ".join(text[-lines:]) or f"{path.name} is empty"


if __name__ == "__main__":
    sys.exit(main())
