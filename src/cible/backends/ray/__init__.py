"""The `ray` node provider (needs the `ray` extra: `pip install 'cible[ray]'`).

Its entry point (`cible.node_providers`: `ray = "cible.backends.ray:make_provider"`) imports no
Ray: Ray is imported when the provider connects, so a server without Ray lists it as unavailable."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from cible.backends.base.contract import NodeProvider, ProviderContext, sharing_workspace
from cible.backends.base.unavailable import UnavailableProvider

INSTALL_HINT = "Ray is not installed on the server: pip install 'cible[ray]'"
CONFIGURE_HINT = ("no Ray cluster is configured: start the server with CIBLE_RAY_ADDRESS=<head>:<gcs port> "
                  "(or ray://<head>:10001), and CIBLE_RAY_TOKEN when the cluster has token auth on")


def make_provider(context: ProviderContext) -> NodeProvider:
    """The registry's factory: `context.options` holds `address`, `token`, `autoscaling` and
    `shared_workspace`."""
    options = context.options
    provider = make_ray_provider(options.get("address"), ray_token=options.get("token"), nodes_root=context.nodes_root,
                                 home=context.home, url=context.url, node_token=context.node_token,
                                 autoscaling=bool(options.get("autoscaling", False)))
    # Its nodes see the workspace (one machine, or a shared filesystem) unless `shared_workspace` is false.
    return provider if isinstance(provider, UnavailableProvider) else sharing_workspace(provider, options)


def make_ray_provider(address: str | None, *, ray_token: str | None, nodes_root: Path, home: Path,
                      url: str | None, node_token: Callable[[str], str], autoscaling: bool = False) -> NodeProvider:
    """The Ray provider for the workspace, or an unavailable one that says what is missing."""
    if importlib.util.find_spec("ray") is None:
        return UnavailableProvider("ray", INSTALL_HINT)
    if not address:
        return UnavailableProvider("ray", CONFIGURE_HINT)
    from cible.backends.ray.provider import RayNodeProvider

    return RayNodeProvider(address, nodes_root=nodes_root, home=home, url=url, node_token=node_token,
                           ray_token=ray_token, autoscaling=autoscaling)
