"""The `ray` provider's pure parts: a node's size in Ray's resources, keeping a compute's nodes off
the Ray machines it already holds, whether a size fits a Ray machine, the workspace's namespace,
and why a node waits for room."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cible.backends.base.contract import NodeRequest

GB = 2**30


def namespace_for(home: Path) -> str:
    """One Ray namespace per workspace: two workspaces on one Ray never see each other's nodes."""
    return "cible-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def bundle_for(request: NodeRequest) -> dict[str, float]:
    """The Ray resources one node of this size holds (Ray's `memory` is in bytes)."""
    bundle = {"CPU": float(request.vcpus), "memory": float(int(request.memory_gb * GB))}
    if request.gpus:
        bundle["GPU"] = float(request.gpus)
    return bundle


def spread_selector(exclude: set[str], count: int) -> list[dict[str, str]] | None:
    """Keep a launch's bundles off the Ray nodes that already hold a node of its cluster."""
    if not exclude:
        return None
    return [{"ray.io/node-id": f"!in({','.join(sorted(exclude))})"}] * count


def largest_fit(ray_nodes: list[dict[str, float]], vcpus: int, memory_gb: float, gpus: int) -> bool:
    return any(n.get("CPU", 0) >= vcpus and n.get("memory", 0) >= memory_gb * GB and n.get("GPU", 0) >= gpus
               for n in ray_nodes)


def no_room(request: NodeRequest, exclude: set[str], autoscaling: bool) -> str:
    """Why a node waits on Ray: the shape it cannot find room for, and what would help."""
    shape = f"{request.vcpus} CPU, {request.memory_gb:g} GB{f', {request.gpus} GPU' if request.gpus else ''}"
    where = "a Ray machine" + (f" other than the {len(exclude)} already holding its nodes" if exclude else "")
    then = "Ray's autoscaler adds machines for it" if autoscaling else "it starts once Ray has room"
    return f"Ray has no room yet for a node of {shape} on {where}; {then}"
