"""`cible compute create|update|delete|list-nodes`, with `az ml compute`'s flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli import attach
from cible.cli.groups import new_group
from cible.cli.output import (
    console, emit, print_fields, print_gpus, print_table, warn, warn_answered, warn_loaded,
)


def _compute_ops():  # noqa: ANN202
    from cible.sdk import MLClient

    return MLClient().compute


def _draw(item: dict) -> None:
    print_fields(item, [k for k in item if k != "gpu_usage"])
    print_gpus(item.get("gpu_usage"))


def register(app: typer.Typer) -> None:
    @app.command("create")
    def create(
        file: Annotated[Optional[Path], typer.Option("--file", "-f", help="compute YAML")] = None,
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
        type_: Annotated[Optional[str], typer.Option("--type", "-t", help="amlcompute, kubernetes, …")] = None,
        size: Annotated[Optional[str], typer.Option("--size")] = None,
        min_instances: Annotated[Optional[int], typer.Option("--min-instances")] = None,
        max_instances: Annotated[Optional[int], typer.Option("--max-instances")] = None,
        idle: Annotated[Optional[int], typer.Option("--idle-time-before-scale-down", help="seconds")] = None,
        tier: Annotated[Optional[str], typer.Option("--tier", help="dedicated or low_priority")] = None,
        overcommit: Annotated[bool, typer.Option(
            "--overcommit", help="start nodes of a size this machine cannot hold (cible: {overcommit: true})")] = False,
        user_object_id: Annotated[Optional[str], typer.Option(
            "--user-object-id", help="a compute instance: assign it to this user (create_on_behalf_of)")] = None,
        user_tenant_id: Annotated[Optional[str], typer.Option("--user-tenant-id")] = None,
        provider: Annotated[Optional[str], typer.Option(
            "--provider", help="where its nodes come from: local or ray (cible: {provider: …}; default: the "
                               "workspace's)")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set")] = None,
    ) -> None:
        """Create a compute from YAML or flags (flags win), checked against the size catalog."""
        from cible.core.specs.azureml.loader import load_spec, load_spec_dict

        flags = {"type": type_, "size": size, "min_instances": min_instances, "max_instances": max_instances,
                 "idle_time_before_scale_down": idle, "tier": tier}
        flags = {k: v for k, v in flags.items() if v is not None}
        if overcommit:
            flags["cible.overcommit"] = True
        if provider:
            flags["cible.provider"] = provider
        if user_object_id:
            flags["create_on_behalf_of.user_object_id"] = user_object_id
            flags["create_on_behalf_of.user_tenant_id"] = user_tenant_id or "local"
        if file is not None:
            overrides = [*(set_ or ()), *(f"{k}={v}" for k, v in flags.items())]
            loaded = load_spec(file, "compute", set_overrides=overrides, name=name)
        else:
            nested = {k: v for k, v in flags.items() if "." not in k}
            cible = {k.split(".", 1)[1]: v for k, v in flags.items() if k.startswith("cible.")}
            if cible:
                nested["cible"] = cible
            if user_object_id:
                nested["create_on_behalf_of"] = {"user_object_id": user_object_id,
                                                 "user_tenant_id": user_tenant_id or "local"}
            loaded = load_spec_dict({"name": name, **nested}, "compute", source="flags")
        warn_loaded(loaded)
        created = _compute_ops().begin_create_or_update(loaded.entity).result()
        shown = warn_answered(created, loaded)  # e.g. vCPUs shared with the host, on stderr
        emit(created, lambda _: _draw(shown))

    @app.command("update")
    def update(
        name: Annotated[str, typer.Option("--name", "-n")],
        min_instances: Annotated[Optional[int], typer.Option("--min-instances")] = None,
        max_instances: Annotated[Optional[int], typer.Option("--max-instances")] = None,
        idle: Annotated[Optional[int], typer.Option("--idle-time-before-scale-down")] = None,
    ) -> None:
        """Change a cluster's scale settings (applied live)."""
        changes = {"min_instances": min_instances, "max_instances": max_instances, "idle_time_before_scale_down": idle}
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            raise typer.BadParameter("give --min-instances, --max-instances or --idle-time-before-scale-down")
        emit(_compute_ops().begin_update(name, **changes).result(), _draw)

    @app.command("delete")
    def delete(
        name: Annotated[str, typer.Option("--name", "-n")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    ) -> None:
        """Delete a compute."""
        ops = _compute_ops()
        ops.get(name)  # a name that does not exist is said before asking anything
        if not yes:
            typer.confirm(f"delete compute '{name}'?", abort=True)
        draining = ops.begin_delete(name).result()
        emit(draining or {"name": name, "deleted": True}, lambda _: console.print(
            f"deleted compute '{name}'" if draining is None else
            f"deleting compute '{name}': it takes no new jobs; its {draining['current_node_count']} node(s) leave "
            f"once idle ({draining.get('node_state_counts', {}).get('running', 0)} running a job), then it is gone",
            highlight=False))

    @app.command("preempt-node")
    def preempt_node(
        name: Annotated[str, typer.Option("--name", "-n", help="a low-priority cluster")],
        node_id: Annotated[str, typer.Option("--node-id", help="a node of list-nodes")],
    ) -> None:
        """Evict a node of a low-priority cluster now, as Azure takes a low-priority VM back (drills, tests):
        its job goes back to the queue and restarts on another node."""
        emit(_compute_ops().preempt_node(name, node_id), _draw)

    @app.command("list-nodes")
    def list_nodes(name: Annotated[str, typer.Option("--name", "-n")]) -> None:
        """A cluster's nodes: node_id, node_state, current_job_name."""
        emit(_compute_ops().list_nodes(name), lambda nodes: print_table(
            nodes, [("node_id", "node_id"), ("node_state", "node_state"), ("job", "current_job_name")]))

    @app.command("start")
    def start(name: Annotated[str, typer.Option("--name", "-n", help="a compute instance")]) -> None:
        """Start a compute instance."""
        emit(_compute_ops().begin_start(name).result(), lambda _: console.print(
            f"starting compute instance '{name}' (`cible compute show -n {name}` gives its state)", highlight=False))

    @app.command("stop")
    def stop(name: Annotated[str, typer.Option("--name", "-n", help="a compute instance")]) -> None:
        """Stop a compute instance (refused while a job runs on it). Its home folder is kept."""
        emit(_compute_ops().begin_stop(name).result(),
             lambda _: console.print(f"stopping compute instance '{name}'", highlight=False))

    @app.command("restart")
    def restart(name: Annotated[str, typer.Option("--name", "-n", help="a compute instance")]) -> None:
        """Restart a compute instance: a fresh node, the same home folder."""
        emit(_compute_ops().begin_restart(name).result(),
             lambda _: console.print(f"restarting compute instance '{name}'", highlight=False))

    @app.command("snooze")
    def snooze(
        name: Annotated[str, typer.Option("--name", "-n", help="a compute instance")],
        minutes: Annotated[float, typer.Option("--minutes", "-m", help="postpone the idle shutdown this long")] = 60,
    ) -> None:
        """Postpone a compute instance's idle shutdown."""
        emit(_compute_ops().snooze(name, minutes), lambda result: console.print(
            f"compute instance '{name}' will not stop for idleness before {result['snoozed_until']}", highlight=False))

    @app.command("connect-ssh")
    def connect_ssh(
        name: Annotated[str, typer.Option("--name", "-n", help="a compute instance")],
        command: Annotated[Optional[str], typer.Option("--command", "-c", help="run this, not an interactive shell")] = None,
    ) -> None:
        """Open a shell on a compute instance's node, in its home folder. While it is open the
        instance is not idle."""
        import os

        from cible.agent.presence import session_file

        info = _compute_ops().terminal(name)
        root, home = Path(info["root"]), Path(info["home"])
        if info["provider"] != "local" or not root.is_dir():
            raise typer.BadParameter(f"the node of '{name}' is not on this machine ({info['provider']} provider)")
        if info.get("note"):
            warn(info["note"])
        home.mkdir(parents=True, exist_ok=True)
        marker = session_file(root, "terminal", os.getpid())  # this pid becomes the shell: the agent sees it
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(name)
        env = {**os.environ, "HOME": str(home), "CIBLE_COMPUTE": name, "CIBLE_NODE_ID": info["node_id"]}
        os.chdir(home)
        os.execvpe("bash", ["bash", "-c", command] if command else ["bash", "-i"], env)

    @app.command("list")
    def list_() -> None:
        """List the workspace's compute targets."""
        emit(_compute_ops().list(), lambda items: print_table(
            [listed_row(item) for item in items],
            [("name", "name"), ("type", "type"), ("size", "size"), ("nodes", "nodes"), ("state", "state"),
             ("provisioning", "provisioning_state"), ("description", "description")]))

    @app.command("show")
    def show(name: Annotated[str, typer.Option("--name", "-n")]) -> None:
        """Show one compute target."""
        emit(_compute_ops().get(name), _draw)

    @app.command("list-sizes")
    def list_sizes(
        type_: Annotated[Optional[str], typer.Option("--type", help="amlcompute or computeinstance")] = None,
        gpu: Annotated[Optional[bool], typer.Option("--gpu/--cpu", help="only GPU (or only CPU) sizes")] = None,
        include_retired: Annotated[bool, typer.Option("--include-retired", help="also sizes of retired series")] = False,
    ) -> None:
        """VM sizes (vCPUs, memory, GPUs, indicative price), as `az ml compute list-sizes`."""
        emit(_compute_ops().list_sizes(type=type_, gpu=gpu, include_retired=include_retired), lambda sizes: print_table(
            [{**s, "gpus": _gpu_count(s)} for s in sizes],
            [("name", "name"), ("vCPUs", "vCPUs"), ("memory GB", "memoryGB"), ("GPUs", "gpus"),
             ("GPU", "gpu_model"), ("arch", "gpu_architecture"), ("category", "category"),
             ("$/h", "price_per_hour"), ("retired", "retired_on")]))

    @app.command("show-size")
    def show_size(name: Annotated[str, typer.Argument(help="e.g. Standard_DS3_v2")]) -> None:
        """One VM size: shape, GPU architecture and the CUDA it needs, retirement, price."""
        emit(_compute_ops().show_size(name), _draw_size)

    def _gpu_count(size: dict) -> str | int:
        """A size's GPUs as the spec pages write them: 8, or 1/6 for a share of one GPU."""
        from cible.core.catalog import share_text

        share = size.get("gpu_share") or 1
        return share_text(share) if size.get("gpus") and share < 1 else size.get("gpus", 0)

    def _draw_size(size: dict) -> None:
        """show-size for people: after the memory, the GPU fields read as lines (count and memory,
        architecture and chip, the toolkit it needs, the interconnect); the other fields as they come."""
        gpu_keys = {"gpus", "gpu_model", "gpu_memory_gb", "gpu_share", "gpu_vendor", "gpu_architecture",
                    "compute_capability", "gpu_target", "min_cuda", "min_rocm", "interconnect"}
        shown: dict = {}
        for key, value in size.items():
            if key not in gpu_keys:
                shown[key] = value
            if key == "memoryGB":
                shown.update(_gpu_lines(size))
        print_fields(shown, list(shown))

    def _gpu_lines(size: dict) -> dict[str, str | None]:
        if not size.get("gpus"):
            return {"GPUs": "none"}
        memory = size.get("gpu_memory_gb")
        each = "" if (size.get("gpu_share") or 1) < 1 or size["gpus"] == 1 else " each"
        lines = {"GPUs": f"{_gpu_count(size)} x {size.get('gpu_model')}" + (f", {memory:g} GB{each}" if memory else "")}
        chip = (f"compute capability {size['compute_capability']}" if size.get("compute_capability")
                else size.get("gpu_target"))
        if size.get("gpu_architecture"):
            lines["GPU architecture"] = f"{size['gpu_architecture']}" + (f", {chip}" if chip else "")
        if size.get("min_cuda"):
            lines["needs"] = f"CUDA {size['min_cuda']} or newer"
        elif size.get("min_rocm"):
            lines["needs"] = f"ROCm {size['min_rocm']} or newer (not CUDA)"
        lines["interconnect"] = size.get("interconnect")
        return lines

    @app.command("list-providers")
    def list_providers() -> None:
        """Where cluster and instance nodes can come from (local, ray): usable or not, and the fix when not."""
        emit(_compute_ops().list_providers(), _draw_providers)

    def _draw_providers(rows: list[dict]) -> None:
        shown = [{"name": r["name"], "available": "yes" if r["available"] else "no",
                  "reachable": "yes" if r.get("reachable") else "no",
                  "where": r.get("address") or ("this machine" if r["name"] == "local" else ""),
                  "note": r.get("error") or r.get("hint") or ""} for r in rows]
        print_table(shown, [("provider", "name"), ("available", "available"), ("reachable", "reachable"),
                            ("where", "where"), ("note", "note")])

    @app.command("list-usage")
    def list_usage() -> None:
        """vCPU use against the workspace's quotas, per VM family and in total (`az ml compute list-usage`)."""
        emit(_compute_ops().list_usage(), _draw_usage)

    def _draw_usage(rows: list[dict]) -> None:
        shown = [{"name": r["name"]["localizedValue"], "current": r["currentValue"],
                  "limit": "no limit" if r["limit"] == -1 else r["limit"]}
                 for r in rows if r["currentValue"] or r["limit"] != -1 or "Total" in r["name"]["localizedValue"]]
        print_table(shown, [("quota", "name"), ("in use", "current"), ("limit", "limit")])


app = new_group()
register(app)
attach.register(app)


def listed_row(compute: dict[str, Any]) -> dict[str, Any]:
    """A compute as `compute list` shows it: a cluster's state is its allocation (Steady, Resizing) and
    its nodes now of its maximum, as Azure's studio lists them; an instance keeps its own state."""
    row = dict(compute)
    if "current_node_count" in compute:
        most = compute.get("max_instances")
        row["nodes"] = f"{compute['current_node_count']}" + (f" of {most}" if most is not None else "")
        row["state"] = compute.get("state") or compute.get("allocation_state")
    return row
