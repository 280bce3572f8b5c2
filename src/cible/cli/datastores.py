"""`cible datastore list|show|upload`: the workspace's datastores, and files put at a datastore path.

`upload` is the cible side of Azure's `az storage blob upload` (a file) and `upload-batch` (a folder):
what it writes, a job reads as `azureml://datastores/<datastore>/paths/<dest>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cible.cli.groups import new_group
from cible.cli.output import console, emit, print_fields, print_table

NameOpt = Annotated[str, typer.Option("--name", "-n", help="the datastore (`cible datastore list`), e.g. "
                                                           "workspaceblobstore")]
COLUMNS = [("name", "name"), ("type", "type"), ("default", "is_default"), ("root", "root")]
UPLOAD_HELP = """Put a local file or folder at a path of a datastore, for jobs to read as
azureml://datastores/<name>/paths/<dest> (Azure's `az storage blob upload` / `upload-batch`).

A file lands at DEST (the file's new path), or at DEST/<its name> when DEST ends with '/'. A folder's
files land under DEST, keeping their tree (the folder's own name is not kept, as upload-batch's
--destination-path). .amlignore / .gitignore files are honoured, as for a job's code. A file there
already is replaced only with --overwrite. DEST is relative to the datastore: no '..', no leading
'/', nothing under LocalUpload/ (cible's own). Each file is written whole or not at all.

\b
Examples:
  cible datastore upload -n workspaceblobstore --src data.csv --dest raw/data.csv
  cible datastore upload -n workspaceblobstore --src data.csv --dest raw/        # raw/data.csv
  cible datastore upload -n workspaceblobstore --src ./images --dest raw/images  # raw/images/<tree>
"""


def _datastores():
    from cible.sdk import MLClient

    return MLClient().datastores


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"  # unreachable


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_() -> None:
        """The workspace's datastores."""
        emit(_datastores().list(), lambda stores: print_table(stores, COLUMNS))

    @app.command("show")
    def show(name: NameOpt) -> None:
        """One datastore: its type and its folder on the server's machine."""
        emit(_datastores().get(name), lambda store: print_fields(store, list(store)))

    @app.command("upload", help=UPLOAD_HELP)
    def upload(
        name: NameOpt,
        src: Annotated[Path, typer.Option("--src", "-s", help="the local file or folder to upload")],
        dest: Annotated[str, typer.Option("--dest", "-d", help="the path in the datastore (end it with '/' to "
                                                               "upload a file into a folder)")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace files there already")] = False,
    ) -> None:
        emit(_datastores().upload(name, src, dest, overwrite=overwrite), _draw_upload)

    def _draw_upload(done: dict) -> None:
        console.print(f"uploaded {done['count']} file(s), {_size(done['bytes'])}, to {done['uri']}",
                      highlight=False, soft_wrap=True)


app = new_group()
register(app)
