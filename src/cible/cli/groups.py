"""The CLI's command groups, each imported only when a command line names it.

`cible job list` imports the job commands and what they need, not the endpoint, compute-attach
or asset commands (with their YAML loaders and SSH code): start-up is most of a short command's
time, and every poll of a script pays it. `cible --help` imports none of them: each group's one-line
help is said here, where the top-level listing reads it.

Help is click's plain text, not typer's rich panels (which import rich, markdown and pygments,
about 0.2 s, for every `--help`): `new_group` is how a module makes its group.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup


def new_group(no_args_is_help: bool = True) -> typer.Typer:
    """A command group with plain help; by default, its help when it is given no command."""
    return typer.Typer(no_args_is_help=no_args_is_help, rich_markup_mode=None, add_completion=False)


def _attribute(path: str) -> Callable[[], typer.Typer]:
    """A loader of "module:attribute", the attribute being a group (typer.Typer)."""
    module, attribute = path.split(":")
    return lambda: getattr(import_module(module), attribute)


# name -> (its one-line help, where its group is): the order of `cible --help`.
GROUPS: dict[str, tuple[str, Callable[[], typer.Typer]]] = {
    "job": ("Submit, follow, cancel and download jobs.", _attribute("cible.cli.jobs:app")),
    "compute": ("Compute targets: clusters, instances, attached machines, Slurm; their nodes and VM sizes.",
                _attribute("cible.cli.computes:app")),
    "quota": ("Workspace vCPU quotas and increase requests.", _attribute("cible.cli.quotas:quota_app")),
    "cost": ("What compute costs (indicative catalog prices).", _attribute("cible.cli.quotas:cost_app")),
    "server": ("Run or manage the workspace server.", _attribute("cible.cli.server:app")),
    "user": ("The workspace's users and their roles.", _attribute("cible.cli.users:user_app")),
    "token": ("Personal tokens (CIBLE_TOKEN): create, list, revoke.", _attribute("cible.cli.users:token_app")),
    "environment": ("Versioned environments.", _attribute("cible.cli.assets:environment_app")),
    "data": ("Versioned data assets.", _attribute("cible.cli.assets:data_app")),
    "model": ("Versioned models.", _attribute("cible.cli.assets:model_app")),
    "datastore": ("Datastores, and files put at a datastore path (upload).", _attribute("cible.cli.datastores:app")),
    "component": ("Versioned components: command, pipeline, spark.", _attribute("cible.cli.components:app")),
    "online-endpoint": ("Online endpoints: a URL, auth and a traffic split over deployments.",
                        _attribute("cible.cli.endpoints:app")),
    "online-deployment": ("Online deployments: a model, its scoring code and replicas behind an endpoint.",
                          _attribute("cible.cli.deployments:app")),
    "batch-endpoint": ("Batch endpoints: score folders of data in mini-batches on a cluster.",
                       _attribute("cible.cli.batch_endpoints:app")),
    "batch-deployment": ("Batch deployments: a model (or pipeline) and how its endpoint's jobs score.",
                         _attribute("cible.cli.batch_deployments:app")),
}


class LazyGroups(TyperGroup):
    """The top-level command: the groups of GROUPS are loaded when named, beside the commands
    registered on it as usual (studio, quickstart, agent)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*GROUPS, *self._own(ctx)]

    def _own(self, ctx: Any) -> list[str]:
        """The commands registered on it, not the groups loaded into it."""
        return [name for name in super().list_commands(ctx) if name not in GROUPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in GROUPS and cmd_name not in self.commands:
            from cible.cli.output import add_global_options

            help_text, load = GROUPS[cmd_name]
            group = load()
            add_global_options(group)
            command = typer.main.get_group(group)  # a group even of one command (cost: report)
            command.name, command.help = cmd_name, command.help or help_text  # server: its callback's
            self.commands[cmd_name] = command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The listing, with GROUPS' help as said above (no group imported for it)."""
        rows = [(name, help_text) for name, (help_text, _) in GROUPS.items()]
        for name in self._own(ctx):
            command = self.commands[name]
            if not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
