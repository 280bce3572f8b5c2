"""`python -m cible.agent --node-id … --root … (--home … | --url … | --url-file …)`: run one node's agent.
`python -m cible.agent --warm`: an agent started ahead of need, told its node later (cible.agent.warm).

The node's token comes on stdin (see cible.node.token), or from CIBLE_AGENT_TOKEN when started by
hand: never from the command line, where any user could read it, and never the workspace's token
(a node's token reaches only that node's agent routes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from cible.agent.agent import Agent, read_url_file
from cible.agent.presence import Presence
from cible.agent.warm import WarmStart
from cible.node import gpus
from cible.node.limits import LimitError, NodeLimits, Shape
from cible.node.token import token_from_stdin


def _path(text: str) -> Path:
    return Path(text).expanduser()  # `~/.cible-agent/…` as a provider may pass it, unexpanded by a shell


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cible agent", description="run a compute node's agent")
    p.add_argument("--node-id", required=True)
    p.add_argument("--compute", required=True)
    p.add_argument("--root", required=True, type=_path, help="the node's working root")
    p.add_argument("--home", type=Path, help="the workspace directory (server.json, token)")
    p.add_argument("--url", help="the workspace server's URL (default: from --url-file, else --home's server.json)")
    p.add_argument("--url-file", type=_path,
                   help="a file whose first line is the server's URL, read at start and again whenever the "
                        "server cannot be reached (its provider rewrites it when the server moves)")
    p.add_argument("--size", default="this size")
    p.add_argument("--vcpus", type=int, required=True)
    p.add_argument("--memory-gb", type=float, required=True)
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--gpu-ids", help="the GPUs the node is given: UUIDs or indices, comma-separated, or 'none' "
                                     "(default: those it inherits, as a Ray actor's)")
    p.add_argument("--overcommit", action="store_true",
                   help="start even where this machine lacks the size's memory or GPUs "
                        "(vCPUs beyond its own are always shared)")
    p.add_argument("--disk-gb", type=float, help="the OS disk the node reports its use against (instances)")
    p.add_argument("--idle-shutdown", type=float,
                   help="seconds idle after which the node stops itself when it cannot reach the server")
    p.add_argument("--persistent-dir", type=Path, help="a folder that outlives the node (an instance's home)")
    p.add_argument("--advertise-address", help="the address other nodes reach this node at (default: the server's view)")
    p.add_argument("--orphan-after", type=float, default=float(os.environ.get("CIBLE_AGENT_ORPHAN_S", 600)),
                   help="seconds without the server before the node stops itself")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, warm: WarmStart | None = None) -> int:
    """Run the agent `argv` describes (`warm`: what a warm agent started, see cible.agent.warm)."""
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = args.url
    try:
        if url is None and args.url_file is not None:
            url = read_url_file(args.url_file)
        elif url is None and args.home is not None:
            url = json.loads((args.home / "server.json").read_text())["url"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"cible agent: cannot read the server's URL: {exc}", file=sys.stderr)
        return 2
    token = os.environ.pop("CIBLE_AGENT_TOKEN", None) or token_from_stdin()
    if not url or not token:
        print("cible agent: give the node's token (on stdin, or CIBLE_AGENT_TOKEN) and --url, --url-file "
              "or --home (a workspace)", file=sys.stderr)
        return 2
    shape = Shape(vcpus=args.vcpus, memory_gb=args.memory_gb, gpus=args.gpus)
    gpu_ids = gpus.parse_idents(args.gpu_ids)
    try:
        denied = gpus.denied_minors(gpus.discover(), gpu_ids) if gpu_ids is not None else None
        limits = NodeLimits(args.node_id, shape, overcommit=args.overcommit, size=args.size,
                            mechanism=warm.mechanism if warm else None, denied_gpus=denied)
        presence = None
        if args.disk_gb is not None or args.idle_shutdown is not None:
            if args.persistent_dir is not None:
                args.persistent_dir.mkdir(parents=True, exist_ok=True)
            presence = Presence(args.root, args.persistent_dir, args.disk_gb, args.idle_shutdown)
        agent = Agent(node_id=args.node_id, root=args.root, url=url, token=token, limits=limits,
                      home=args.home, orphan_after_s=args.orphan_after, presence=presence,
                      address=args.advertise_address, url_file=args.url_file, gpu_ids=gpu_ids)
        return agent.serve(warm)
    except (LimitError, gpus.GpuError) as exc:
        print(f"cible agent: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--warm"]:  # started ahead of need: told its node on stdin (cible.agent.warm)
        from cible.agent.warm import serve_when_told

        sys.exit(serve_when_told(main))
    sys.exit(main())
