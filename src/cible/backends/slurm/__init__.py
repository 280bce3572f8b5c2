"""Slurm as a target that schedules by itself: cible writes an sbatch script for a job's attempt
(`script.render`), submits it with `sbatch --parsable`, and reads what Slurm says of it from
`squeue`, `scontrol show job` and, where accounting is on, `sacct` (`commands`). Slurm queues and
places the job; cible maps Slurm's states onto its own (`commands.verdict`).

The `slurm` node provider (provider.py) is the other way in: a cible cluster whose nodes are Slurm
jobs running cible's agent."""

from __future__ import annotations

from cible.backends.base.contract import NodeProvider, ProviderContext


def make_provider(context: ProviderContext) -> NodeProvider:
    """The registry's factory: `context.options` holds `access_of` (a cluster's name -> how to reach
    the Slurm compute it draws from, as the cluster's creator), `computes` (every Slurm compute, as
    its attaching user) and `bundle` (the node code)."""
    from cible.backends.slurm.provider import SlurmNodeProvider

    options = context.options

    def no_access(compute: str):  # noqa: ANN202
        raise RuntimeError(f"cluster {compute}: the slurm provider was built without the server's Slurm computes")

    def bundle():  # noqa: ANN202
        from cible.backends.ssh.bundle import build_bundle

        return build_bundle(context.home / "cache" / "bundles")

    return SlurmNodeProvider(context.nodes_root, context.url, context.node_token,
                             access_of=options.get("access_of") or no_access, bundle=options.get("bundle") or bundle,
                             computes=options.get("computes") or list)
