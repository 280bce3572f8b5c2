"""Attached machines over SSH: connecting with a pinned host key, probing a host, shipping the
node-side code (the bundle) and starting an agent there."""

from __future__ import annotations

from cible.backends.base.contract import NodeProvider, ProviderContext


def make_provider(context: ProviderContext) -> NodeProvider:
    """The registry's factory: `context.options` holds `attached` (the attached machines by name,
    read from the store at each call) and `hosts_of` (a compute's machines)."""
    from cible.backends.ssh.provider import SshNodeProvider

    options = context.options
    return SshNodeProvider(context.nodes_root, context.url, context.node_token,
                           attached=options.get("attached") or dict, hosts_of=options.get("hosts_of") or (lambda _: ()),
                           bundle_cache=context.home / "cache" / "bundles")
