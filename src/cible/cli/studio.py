"""`cible studio`: a sign-in link to the workspace in a browser."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cible.cli.output import emit, err_console


def studio(
    page: Annotated[Optional[str], typer.Argument(help="the page to open, e.g. /jobs/NAME or /computes/NAME")] = None,
    open_: Annotated[bool, typer.Option("--open", help="open the link in this machine's browser")] = False,
) -> None:
    """Print a link that signs a browser in to the workspace's studio (it works once, within minutes)."""
    import webbrowser

    from cible.sdk import MLClient

    link = MLClient().studio_link(page or "/jobs")
    emit({"url": link}, lambda answer: print(answer["url"]))  # alone on stdout: `cible studio | xargs open`
    err_console.print("The link signs one browser in, once, within minutes.", highlight=False)
    if open_ and not webbrowser.open(link):
        err_console.print("No browser could be opened here: open the link above in yours.", highlight=False)
