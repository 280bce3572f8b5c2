"""Kubernetes as a node provider: an attached cluster (`type: kubernetes`) whose nodes are pods.

The server makes one pool per instance type a job names (`<compute>:<instance type>`, a cluster
of pods of that type, cible's cluster reconciler scaling it); `provider.py` makes and watches the
pods with the official `kubernetes` client; `pods.py` is what a pod is; `api.py` the way to a
cluster and its failures in words. Installed with `pip install 'cible[kubernetes]'`.
"""

from __future__ import annotations

from cible.backends.base.contract import NodeProvider, ProviderContext


def make_provider(context: ProviderContext) -> NodeProvider:
    """The registry's factory: `context.options["template_of"]` gives a pool's pod template,
    `instance_types` every attached cluster's (the server reads both from the store) and `workspace`
    the label value of this workspace's pods. Needs the `kubernetes` client installed."""
    import kubernetes  # noqa: F401  (missing: the provider is listed as unavailable, with why)

    from cible.backends.kubernetes.provider import KubernetesNodeProvider

    def no_template(pool: str):  # noqa: ANN202
        raise RuntimeError(f"pool {pool}: the kubernetes provider was built without the server's computes")

    return KubernetesNodeProvider(context.nodes_root, context.url, context.node_token,
                                  template_of=context.options.get("template_of") or no_template,
                                  workspace=context.options.get("workspace") or "ws-unnamed",
                                  instance_types=context.options.get("instance_types") or dict)
