"""The `local` node provider: each node an agent process on the server's machine (see provider.py)."""

from __future__ import annotations

from cible.backends.base.contract import NodeProvider, ProviderContext


def make_provider(context: ProviderContext) -> NodeProvider:
    """The registry's factory (entry point `local = "cible.backends.local:make_provider"`)."""
    from cible.backends.local.provider import LocalNodeProvider

    return LocalNodeProvider(context.nodes_root, context.home, context.url, context.node_token)
