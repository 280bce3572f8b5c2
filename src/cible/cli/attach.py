"""`cible compute attach|detach`, with `az ml compute attach`'s flags: a machine reached over SSH
(`--type virtualmachine`), or a Slurm cluster (`--type slurm`: through its login host over SSH
with `--host`, or through the server machine's own Slurm commands without). The server pins the
host's key at attach and says so here.

`cible compute set-credential|remove-credential|list-credentials` (cible's own verbs): each user's
own login to a Slurm cluster's login host, as which their jobs there run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.output import console, emit, err_console, print_fields, warn_loaded

# A synapsespark compute: a Spark cible does not own (cible.master_url), or a pool cible makes of its nodes.
ATTACHABLE = ("virtualmachine", "slurm", "synapsespark", "kubernetes")
SLURM_ONLY = ("--partition", "--qos", "--account")
KUBERNETES_ONLY = ("--kubeconfig", "--context", "--namespace")
SSH_ONLY = ("--admin-username", "--ssh-private-key-file", "--ssh-port", "--host-key-fingerprint", "--tunnel")


def _key_path(path: str, base: Path) -> str:
    """The key as the server reads it: `~` expanded, a relative path taken from `base` (the current
    folder for a flag, the YAML's folder for the file), made absolute."""
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else (base / expanded).absolute())


def _pinned_notice(compute: dict[str, Any], expected: str | None) -> None:
    if compute.get("type") == "kubernetes":
        types = ", ".join(compute.get("instance_types") or {})
        err_console.print(f"Kubernetes cluster at {compute.get('api_server')}, namespace {compute.get('namespace')}; "
                          f"instance types: {types}. Its jobs' pods reach the server at "
                          f"{(compute.get('cible') or {}).get('server_url') or 'the server’s own URL'}",
                          highlight=False, soft_wrap=True)
        return
    if compute.get("type") == "slurm":
        partitions = ", ".join(compute.get("partitions") or [])
        if not compute.get("login"):
            err_console.print(f"Slurm cluster through this machine's Slurm commands (jobs run as the server's user); "
                              f"partitions: {partitions}", highlight=False, soft_wrap=True)
            return
        err_console.print(f"Slurm cluster through login host {compute['login']}; partitions: {partitions}. Your "
                          "login is recorded as your credential: each other user sets theirs with `cible compute "
                          f"set-credential {compute.get('name')}`", highlight=False, soft_wrap=True)
    where = compute.get("resource_id") or compute.get("login")
    how = ("matches the fingerprint you gave" if expected else
           "was trusted on first use; compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host "
           "(or attach with --host-key-fingerprint to have it checked)")
    err_console.print(f"host key {compute.get('host_key_fingerprint')} of {where} {how}. It is "
                      "pinned: a host offering another key is refused.", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("attach")
    def attach(
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
        file: Annotated[Optional[Path], typer.Option(
            "--file", "-f", help="compute YAML (type: virtualmachine, slurm, synapsespark or kubernetes)")] = None,
        type_: Annotated[Optional[str], typer.Option(
            "--type", "-t", help="virtualmachine, slurm, synapsespark or kubernetes")] = None,
        resource_id: Annotated[Optional[str], typer.Option(
            "--resource-id", "--host", help="the machine's host name or address, or ssh://host:port (slurm: its "
                                            "login host; left out: the server machine's own Slurm commands)")] = None,
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
        partition: Annotated[Optional[str], typer.Option(
            "--partition", help="slurm: the default partition of its jobs")] = None,
        qos: Annotated[Optional[str], typer.Option("--qos", help="slurm: the default QOS of its jobs")] = None,
        account: Annotated[Optional[str], typer.Option(
            "--account", help="slurm: the default account of its jobs")] = None,
        master_url: Annotated[Optional[str], typer.Option(
            "--master-url", help="synapsespark: the spark://host:port of a Spark cible does not own (its jobs' "
                                 "drivers run on the workspace's machine); without, cible makes the pool of its "
                                 "own nodes")] = None,
        kubeconfig: Annotated[Optional[str], typer.Option(
            "--kubeconfig", help="kubernetes: a kubeconfig on the workspace server's machine (its path is stored, never "
                                 "its content; default $KUBECONFIG or ~/.kube/config)")] = None,
        context: Annotated[Optional[str], typer.Option(
            "--context", help="kubernetes: the kubeconfig's context (default its current one)")] = None,
        namespace: Annotated[Optional[str], typer.Option(
            "--namespace", help="kubernetes: where its pods go (it must exist; default: default)")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE: set a field of the spec")] = None,
    ) -> None:
        """Attach a machine you run yourself (cible logs in over SSH with your key, pins the host's key and
        probes it: Python 3 is all it needs there), or a Slurm cluster (through its login host with --host, or
        this server machine's own Slurm commands), or a Spark: Azure's synapsespark YAML, with --master-url (or
        cible.master_url) naming a Spark standalone master cible does not own, or without it a Spark pool cible
        makes of its own nodes (node_size, scale_settings, auto_pause_settings), or a Kubernetes cluster
        (--type kubernetes --kubeconfig FILE --namespace NS): its jobs and deployments run in pods of the
        instance type they name."""
        from cible.cli.computes import _compute_ops
        import yaml

        from cible.core.specs.azureml.loader import load_spec, load_spec_text

        if admin_password is not None:
            raise typer.BadParameter("cible logs in with SSH keys only and never stores a password; give "
                                     "--ssh-private-key-file (or --use-ssh-agent)", param_hint="--admin-password")
        if replace_host_key:
            if not name:
                raise typer.BadParameter("name the attached machine whose host key to replace", param_hint="--name")
            result = _compute_ops().replace_host_key(name, fingerprint)
            emit(result, lambda r: console.print(
                f"compute '{name}': host key {r.get('previous_host_key_fingerprint')} replaced by "
                f"{r.get('host_key_fingerprint')}", highlight=False))
            return
        if type_ is not None and type_.lower() not in ATTACHABLE:
            raise typer.BadParameter(f"'{type_}' cannot be attached here; attachable: {', '.join(ATTACHABLE)}",
                                     param_hint="--type")
        kind = type_.lower() if type_ else None
        if file is not None and kind is None:
            kind = _file_type(file)
        slurm = kind == "slurm"
        given = [flag for flag, value in zip(SLURM_ONLY, (partition, qos, account)) if value is not None]
        if given and not slurm:
            raise typer.BadParameter(f"{', '.join(given)}: only for a Slurm cluster (--type slurm)",
                                     param_hint=given[0])
        if slurm and tunnel is not None:
            raise typer.BadParameter("a Slurm cluster's jobs reach the server from its nodes, not through the login "
                                     "host: give cible.server_url instead (--set cible.server_url=…)",
                                     param_hint="--tunnel")
        given = [flag for flag, value in zip(KUBERNETES_ONLY, (kubeconfig, context, namespace)) if value is not None]
        if given and kind != "kubernetes":
            raise typer.BadParameter(f"{', '.join(given)}: only for a Kubernetes cluster (--type kubernetes)",
                                     param_hint=given[0])
        given = [flag for flag, value in zip(SSH_ONLY, (admin_username, key_file, ssh_port, fingerprint, tunnel))
                 if value is not None]
        if given and kind == "kubernetes":
            raise typer.BadParameter(f"{', '.join(given)}: a Kubernetes cluster is reached through its kubeconfig "
                                     "(--kubeconfig), not over SSH", param_hint=given[0])
        ssh = {"admin_username": admin_username, "ssh_port": ssh_port,
               "ssh_private_key_file": _key_path(key_file, Path.cwd()) if key_file else None}
        flags = {"type": kind, "login" if slurm else "resource_id": resource_id,
                 "partition": partition, "qos": qos, "account": account,
                 **{f"ssh_settings.{k}": v for k, v in ssh.items() if v is not None}}
        cible = {"use_ssh_agent": True if use_ssh_agent else None, "python": python, "master_url": master_url,
                 "expected_host_key_fingerprint": fingerprint, "tunnel": tunnel, "context": context,
                 "kubeconfig": _key_path(kubeconfig, Path.cwd()) if kubeconfig else None}
        flags["namespace"] = namespace
        flags.update({f"cible.{k}": v for k, v in cible.items() if v is not None})
        flags = {k: v for k, v in flags.items() if v is not None}
        if file is not None:
            overrides = [*(set_ or ()), *(f"{k}={v}" for k, v in flags.items())]
            loaded = load_spec(file, "compute", set_overrides=overrides, name=name)
            entity = loaded.entity
            if key_file is None and getattr(entity, "ssh_settings", None) and entity.ssh_settings.ssh_private_key_file:
                entity.ssh_settings.ssh_private_key_file = _key_path(entity.ssh_settings.ssh_private_key_file,
                                                                     file.parent)
            if kubeconfig is None and entity.type == "kubernetes" and entity.cible and entity.cible.kubeconfig:
                entity.cible.kubeconfig = _key_path(entity.cible.kubeconfig, file.parent)
        else:
            nested: dict[str, Any] = {"type": "virtualmachine"}
            for key, value in flags.items():
                head, _, tail = key.partition(".")
                if tail:
                    nested.setdefault(head, {})[tail] = value
                else:
                    nested[key] = value
            if kind in (None, "virtualmachine"):  # a Slurm cluster (no login host) and a Kubernetes one have none
                nested.setdefault("ssh_settings", {})
            elif "ssh_settings" in nested and resource_id is None:
                raise typer.BadParameter("--admin-username, --ssh-private-key-file and --ssh-port log in to a login "
                                         "host: give it with --host (or leave them out to use this server machine's "
                                         "own Slurm commands)", param_hint="--host")
            loaded = load_spec_text(yaml.safe_dump({"name": name, **nested}), "compute", source="flags",
                                    set_overrides=set_ or ())
            entity = loaded.entity
        if entity.type not in ATTACHABLE:
            raise typer.BadParameter(f"the file describes a {entity.type} compute; `cible compute create` makes it",
                                     param_hint="--file")
        warn_loaded(loaded)
        attached = _compute_ops().begin_create_or_update(entity).result()
        _pinned_notice(attached, fingerprint or getattr(entity.cible, "expected_host_key_fingerprint", None))
        emit(attached, lambda item: print_fields(item, [k for k in item if k != "host_key"]))

    @app.command("detach")
    def detach(
        name_arg: Annotated[Optional[str], typer.Argument(metavar="[NAME]", help="the compute (or --name)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    ) -> None:
        """Detach an attached machine, Slurm, Spark or Kubernetes cluster: cible forgets it (nothing on it is
        deleted but the pods cible made there, which go once idle)."""
        from cible.cli.computes import _compute_ops

        name = _one_name(name_arg, name)
        ops = _compute_ops()
        compute = ops.get(name)
        if compute["type"] not in ATTACHABLE:
            raise typer.BadParameter(f"compute '{name}' is a {compute['type']}, not an attached machine or cluster; "
                                     "`cible compute delete` removes it", param_hint="--name")
        if not yes:
            typer.confirm(f"detach compute '{name}'?", abort=True)
        ops.begin_delete(name).result()
        emit({"name": name, "detached": True}, lambda _: console.print(f"detached compute '{name}'", highlight=False))

    @app.command("set-credential")
    def set_credential(
        name_arg: Annotated[Optional[str], typer.Argument(
            metavar="[NAME]", help="the Slurm compute (or --name)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
        username: Annotated[Optional[str], typer.Option(
            "--username", help="your user on the cluster's login host: your jobs run as it")] = None,
        key_file: Annotated[Optional[str], typer.Option(
            "--ssh-private-key-file", help="a private key on the workspace server's machine that logs in as you (its "
                                           "path is stored, never the key)")] = None,
        use_ssh_agent: Annotated[bool, typer.Option(
            "--use-ssh-agent", help="log in with the keys of the server's ssh-agent (SSH_AUTH_SOCK)")] = False,
    ) -> None:
        """Set your own login to a Slurm cluster (cible's own verb): the jobs you submit to it run as that
        Slurm user. cible logs in with it once to check it."""
        from cible.cli.computes import _compute_ops

        name = _one_name(name_arg, name)
        if not username:
            raise typer.BadParameter("give your user on the login host", param_hint="--username")
        if key_file and use_ssh_agent:
            raise typer.BadParameter("give a key file or --use-ssh-agent, not both", param_hint="--use-ssh-agent")
        if not key_file and not use_ssh_agent:
            raise typer.BadParameter("give a private key on the workspace server's machine, or --use-ssh-agent",
                                     param_hint="--ssh-private-key-file")
        result = _compute_ops().set_credential(name, username, _key_path(key_file, Path.cwd()) if key_file else None,
                                               use_ssh_agent=use_ssh_agent)
        emit(result, lambda r: console.print(f"compute '{name}': your jobs run as {r.get('username')} (user "
                                             f"{r.get('user') or '(none)'})", highlight=False))

    @app.command("remove-credential")
    def remove_credential(
        name_arg: Annotated[Optional[str], typer.Argument(
            metavar="[NAME]", help="the Slurm compute (or --name)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
    ) -> None:
        """Forget your own login to a Slurm cluster (your jobs there are then refused at submit)."""
        from cible.cli.computes import _compute_ops

        name = _one_name(name_arg, name)
        _compute_ops().remove_credential(name)
        emit({"name": name, "credential_removed": True},
             lambda _: console.print(f"compute '{name}': your credential is removed", highlight=False))

    @app.command("list-credentials")
    def list_credentials(
        name_arg: Annotated[Optional[str], typer.Argument(
            metavar="[NAME]", help="the Slurm compute (or --name)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
    ) -> None:
        """Who has a login to a Slurm cluster, and as which user (never a key)."""
        from cible.cli.computes import _compute_ops
        from cible.cli.output import print_table

        name = _one_name(name_arg, name)
        emit(_compute_ops().list_credentials(name), lambda rows: print_table(
            [{"user": r.get("user") or "(none)", "username": r.get("username")} for r in rows],
            [("USER", "user"), ("USERNAME", "username")]))


def _one_name(positional: str | None, option: str | None) -> str:
    """The compute named as an argument or with --name (the same, if both)."""
    if positional and option and positional != option:
        raise typer.BadParameter(f"two names: '{positional}' and --name '{option}'", param_hint="--name")
    name = positional or option
    if not name:
        raise typer.BadParameter("name the compute", param_hint="--name")
    return name


def _file_type(file: Path) -> str | None:
    """The `type:` a compute YAML names (to read the flags that depend on it), or None."""
    import yaml

    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError):
        return None  # the loader says what is wrong with it
    kind = data.get("type") if isinstance(data, dict) else None
    return kind.lower() if isinstance(kind, str) else None
