"""`cible environment|data|model create|list|show`, as `az ml <asset> …`."""


from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_fields, print_table, warn_loaded

COLUMNS = {
    "environment": [("name", "name"), ("version", "version"), ("image", "image"), ("description", "description")],
    "data": [("name", "name"), ("version", "version"), ("type", "type"), ("path", "path")],
    "model": [("name", "name"), ("version", "version"), ("type", "type"), ("path", "path")],
}


def asset_app(spec_kind: str, attribute: str) -> typer.Typer:
    """The same verbs for each asset kind; `attribute` is the MLClient operations name."""
    app = new_group()

    def operations():  # noqa: ANN202
        from cible.sdk import MLClient

        return getattr(MLClient(), attribute)

    @app.command("create")
    def create(
        file: Annotated[Optional[Path], typer.Option("--file", "-f", help=f"{spec_kind} YAML")] = None,
        name: Annotated[Optional[str], typer.Option("--name", "-n")] = None,
        version: Annotated[Optional[str], typer.Option("--version", "-v")] = None,
        path: Annotated[Optional[str], typer.Option("--path", "-p", help="local file or folder, or a URI")] = None,
        type_: Annotated[Optional[str], typer.Option("--type", "-t")] = None,
        image: Annotated[Optional[str], typer.Option("--image", "-i")] = None,
        conda_file: Annotated[Optional[str], typer.Option("--conda-file", "-c")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: a.b=value")] = None,
    ) -> None:
        """Register a new version (from YAML, flags, or both: flags win)."""
        from cible.core.specs.azureml.loader import load_spec, load_spec_dict

        flags = {"version": version, "path": path, "type": type_, "image": image, "conda_file": conda_file}
        flags = {k: v for k, v in flags.items() if v is not None}
        if file is not None:
            overrides = [*(set_ or ()), *(f"{k}={v}" for k, v in flags.items())]
            loaded = load_spec(file, spec_kind, set_overrides=overrides, name=name)
        else:
            loaded = load_spec_dict({"name": name, **flags}, spec_kind, base_dir=Path.cwd(), source="flags")
        warn_loaded(loaded)
        emit(operations().create_or_update(loaded.entity), _draw)

    add_version_commands(app, operations, _draw, COLUMNS[spec_kind], "asset", registry=spec_kind == "environment")

    if spec_kind == "model":
        @app.command("download")
        def download(
            name: Annotated[str, typer.Option("--name", "-n")],
            version: Annotated[Optional[str], typer.Option("--version", "-v", help="default: the latest")] = None,
            label: Annotated[Optional[str], typer.Option("--label", "-l", help="latest")] = None,
            download_path: Annotated[Path, typer.Option("--download-path", "-p")] = Path("."),
        ) -> None:
            """Download a model's files to DOWNLOAD_PATH/<name>/, as `az ml model download`."""
            files = operations().download(name, version, download_path, label=label)
            emit([str(f) for f in files], lambda _: console.print(
                f"downloaded {len(files)} file(s) to {download_path / name}", highlight=False))

    return app


def add_version_commands(app: typer.Typer, operations: Callable[[], Any], draw: Callable[[dict], None],
                         columns: list[tuple[str, str]], noun: str, registry: bool = False) -> None:
    """`show`, `list`, `archive` and `restore` of a versioned registry (assets, components): the
    same verbs over MLClient operations with get/list/archive/restore; `noun` names it in help.
    `registry`: show and list also read Azure's curated environments (`--registry-name azureml`)."""
    registry_help = "azureml: Azure's curated environments, as cible builds them" if registry else None

    @app.command("show")
    def show(
        name: Annotated[str, typer.Option("--name", "-n")],
        version: Annotated[Optional[str], typer.Option("--version", "-v")] = None,
        label: Annotated[Optional[str], typer.Option("--label", "-l", help="latest")] = None,
        registry_name: Annotated[Optional[str], typer.Option("--registry-name", help=registry_help,
                                                             hidden=not registry)] = None,
    ) -> None:
        """Show one version (default: the latest)."""
        if registry_name is not None:
            from cible.core.environments.curated import registry_entry

            emit(registry_entry(name, _registry_of(registry, registry_name)), draw)
            return
        emit(operations().get(name, version=version, label=label), draw)

    @app.command("list")
    def list_(
        name: Annotated[Optional[str], typer.Option("--name", "-n", help=f"list this {noun}'s versions")] = None,
        include_archived: Annotated[bool, typer.Option("--include-archived", help="archived ones too")] = False,
        archived_only: Annotated[bool, typer.Option("--archived-only", help="only archived ones")] = False,
        registry_name: Annotated[Optional[str], typer.Option("--registry-name", help=registry_help,
                                                             hidden=not registry)] = None,
    ) -> None:
        """The latest version of each, or every version of one name."""
        if registry_name is not None:
            from cible.core.environments.curated import check_registry, registry_listing

            check_registry(_registry_of(registry, registry_name))
            emit(registry_listing(), lambda shown: print_table(
                shown, [("name", "name"), ("version", "version"), ("python", "python"),
                        ("description", "description")]))
            return
        from cible.cli.jobs import view_type

        items = operations().list(name=name, list_view_type=view_type(include_archived, archived_only))
        emit(items, lambda shown: print_table(shown, columns))

    whole = f"one version; else the whole {noun}"

    @app.command("archive", help=f"Archive a version, or the whole {noun} (every version, later ones too): hidden "
                 "from `list` and from `@latest`, still usable by explicit version.")
    def archive(
        name: Annotated[str, typer.Option("--name", "-n")],
        version: Annotated[Optional[str], typer.Option("--version", "-v", help=whole)] = None,
        label: Annotated[Optional[str], typer.Option("--label", "-l", help="latest")] = None,
    ) -> None:
        emit(operations().archive(name, version=version, label=label), draw)

    @app.command("restore", help=f"Restore an archived version, or the whole {noun}. (No --label: `latest` is "
                 "never an archived version.)")
    def restore(
        name: Annotated[str, typer.Option("--name", "-n")],
        version: Annotated[Optional[str], typer.Option("--version", "-v", help=whole)] = None,
    ) -> None:
        emit(operations().restore(name, version=version), draw)


def _draw(item: dict) -> None:
    print_fields(item, list(item))


environment_app = asset_app("environment", "environments")
data_app = asset_app("data", "data")
model_app = asset_app("model", "models")


def _registry_of(supported: bool, registry_name: str) -> str:
    """`--registry-name` where it means something: environments (Azure's curated ones)."""
    if not supported:
        raise typer.BadParameter("only environments are read from a registry here (azureml: Azure's curated "
                                 "environments)", param_hint="--registry-name")
    return registry_name
