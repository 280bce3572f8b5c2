"""The `local` node provider: each node an agent process on the server's machine (see provider.py)."""

from __future__ import annotations

from cible.backends.base.contract import NodeProvider, ProviderContext, sharing_workspace


def make_provider(context: ProviderContext) -> NodeProvider:
    """The registry's factory (entry point `local = "cible.backends.local:make_provider"`). Its nodes
    share the workspace (they run on this machine) unless the option `shared_workspace` is false:
    a test of the path an SSH host's files take. `warm_nodes`: agents kept started ahead of need
    (warm.py), their lifetimes kept in `warm_ledger`."""
    from cible.backends.local.provider import LocalNodeProvider

    options = context.options
    provider = LocalNodeProvider(context.nodes_root, context.home, context.url, context.node_token,
                                 warm_nodes=int(options.get("warm_nodes") or 0), warm_ledger=options.get("warm_ledger"))
    return sharing_workspace(provider, options)
