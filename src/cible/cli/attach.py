"""`cible compute attach|detach`, with `az ml compute attach`'s flags: a machine reached over SSH
(`--type virtualmachine`). The server pins the host's key at attach and says so here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.output import console, emit, err_console, print_fields, warn_loaded

ATTACHABLE = ("virtualmachine",)


def _key_path(path: str, base: Path) -> str:
    """The key as the server reads it: `~` expanded, a relative path taken from `base` (the current
    folder for a flag, the YAML's folder for the file), made absolute."""
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else (base / expanded).absolute())


def _pinned_notice(compute: dict[str, Any], expected: str | None) -> None:
    how = ("matches the fingerprint you gave" if expected else
           "was trusted on first use; compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host "
           "(or attach with --host-key-fingerprint to have it checked)")
    err_console.print(f"host key {compute.get('host_key_fingerprint')} of {compute.get('resource_id')} {how}. It is "
                      "pinned: a host offering another key is refused.", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("attach")
    def attach(
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
        file: Annotated[Optional[Path], typer.Option(
            "--file", "-f", help="compute YAML (type: virtualmachine)")] = None,
        type_: Annotated[Optional[str], typer.Option("--type", "-t", help="virtualmachine")] = None,
        resource_id: Annotated[Optional[str], typer.Option(
            "--resource-id", "--host", help="the machine's host name or address, or ssh://host:port")] = None,
        ssh_port: Annotated[Optional[int], typer.Option("--ssh-port", help="default 22")] = None,
        admin_username: Annotated[Optional[str], typer.Option(
            "--admin-username", help="the user cible logs in as")] = None,
        key_file: Annotated[Optional[str], typer.Option(
            "--ssh-private-key-file", help="a private key on the workspace server's machine (its path is stored, "
                                           "never the key)")] = None,
        admin_password: Annotated[Optional[str], typer.Option(
            "--admin-password", hidden=True, help="refused: cible logs in with keys only")] = None,
        use_ssh_agent: Annotated[bool, typer.Option(
            "--use-ssh-agent", help="log in with the keys of the server's ssh-agent (SSH_AUTH_SOCK)")] = False,
        python: Annotated[Optional[str], typer.Option(
            "--python", help="the host's interpreter (default python3)")] = None,
        fingerprint: Annotated[Optional[str], typer.Option(
            "--host-key-fingerprint", help="check the host's key against this SHA256:… instead of trusting it on "
                                           "first use")] = None,
        replace_host_key: Annotated[bool, typer.Option(
            "--replace-host-key", help="an attached machine whose host key changed on purpose (a reinstall): pin "
                                       "the key it offers now")] = False,
        tunnel: Annotated[Optional[str], typer.Option(
            "--tunnel", help="how its agent reaches the server: auto (directly if it can, else over SSH), always, "
                             "never")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE: set a field of the spec")] = None,
    ) -> None:
        """Attach a machine you run yourself: cible logs in over SSH with your key, pins the host's key and
        probes it (Python 3 is all it needs there)."""
        from cible.cli.computes import _compute_ops
        import yaml

        from cible.core.specs.azureml.loader import load_spec, load_spec_text

        if admin_password is not None:
            raise typer.BadParameter("cible logs in with SSH keys only and never stores a password; give "
                                     "--ssh-private-key-file (or --use-ssh-agent)", param_hint="--admin-password")
        ops = _compute_ops()
        if replace_host_key:
            if not name:
                raise typer.BadParameter("name the attached machine whose host key to replace", param_hint="--name")
            result = ops.replace_host_key(name, fingerprint)
            emit(result, lambda r: console.print(
                f"compute '{name}': host key {r.get('previous_host_key_fingerprint')} replaced by "
                f"{r.get('host_key_fingerprint')}", highlight=False))
            return
        if type_ is not None and type_.lower() not in ATTACHABLE:
            raise typer.BadParameter(f"'{type_}' cannot be attached here; attachable: {', '.join(ATTACHABLE)}",
                                     param_hint="--type")
        ssh = {"admin_username": admin_username, "ssh_port": ssh_port,
               "ssh_private_key_file": _key_path(key_file, Path.cwd()) if key_file else None}
        flags = {"type": type_.lower() if type_ else None, "resource_id": resource_id,
                 **{f"ssh_settings.{k}": v for k, v in ssh.items() if v is not None}}
        cible = {"use_ssh_agent": True if use_ssh_agent else None, "python": python,
                 "expected_host_key_fingerprint": fingerprint, "tunnel": tunnel}
        flags.update({f"cible.{k}": v for k, v in cible.items() if v is not None})
        flags = {k: v for k, v in flags.items() if v is not None}
        if file is not None:
            overrides = [*(set_ or ()), *(f"{k}={v}" for k, v in flags.items())]
            loaded = load_spec(file, "compute", set_overrides=overrides, name=name)
            entity = loaded.entity
            if key_file is None and getattr(entity, "ssh_settings", None) and entity.ssh_settings.ssh_private_key_file:
                entity.ssh_settings.ssh_private_key_file = _key_path(entity.ssh_settings.ssh_private_key_file,
                                                                     file.parent)
        else:
            nested: dict[str, Any] = {"type": "virtualmachine"}
            for key, value in flags.items():
                head, _, tail = key.partition(".")
                if tail:
                    nested.setdefault(head, {})[tail] = value
                else:
                    nested[key] = value
            nested.setdefault("ssh_settings", {})
            loaded = load_spec_text(yaml.safe_dump({"name": name, **nested}), "compute", source="flags",
                                    set_overrides=set_ or ())
            entity = loaded.entity
        if entity.type not in ATTACHABLE:
            raise typer.BadParameter(f"the file describes a {entity.type} compute; `cible compute create` makes it",
                                     param_hint="--file")
        warn_loaded(loaded)
        attached = ops.begin_create_or_update(entity).result()
        _pinned_notice(attached, fingerprint or (entity.cible.expected_host_key_fingerprint if entity.cible else None))
        emit(attached, lambda item: print_fields(item, [k for k in item if k != "host_key"]))

    @app.command("detach")
    def detach(
        name: Annotated[str, typer.Option("--name", "-n")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    ) -> None:
        """Detach an attached machine: cible forgets it (nothing on the machine is deleted)."""
        from cible.cli.computes import _compute_ops

        ops = _compute_ops()
        compute = ops.get(name)
        if compute["type"] not in ATTACHABLE:
            raise typer.BadParameter(f"compute '{name}' is a {compute['type']}, not an attached machine; "
                                     "`cible compute delete` removes it", param_hint="--name")
        if not yes:
            typer.confirm(f"detach compute '{name}'?", abort=True)
        ops.begin_delete(name).result()
        emit({"name": name, "detached": True}, lambda _: console.print(f"detached compute '{name}'", highlight=False))
