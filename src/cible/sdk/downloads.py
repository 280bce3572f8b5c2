"""Files a list route of the API names, written under a local folder in the listing's layout
(`job download`, `model download`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from cible.client.http import WorkspaceClient
from cible.core.safepaths import under


def segment(value: str) -> str:
    """One URL path segment: a name with `/`, `#`, `?` or `%` stays one segment, the name itself."""
    return quote(str(value), safe="")


def download_listed(client: WorkspaceClient, route: str, download_path: str | Path,
                    params: dict[str, Any] | None = None) -> list[Path]:
    """Every file `route` lists, fetched from `route/<path>` to `download_path/<path>`; each is written
    whole or not at all (a `.part` file renamed, removed if the transfer fails), so a failed download
    leaves no half file. `route` is already quoted (build it with `segment`)."""
    written = []
    for entry in client.items(route, params):
        target = under(Path(download_path), entry["path"], field="path")  # never outside download_path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        try:
            with open(tmp, "wb") as fh:
                # `/` separates the listing's folders; anything else in a name (`#`, `?`, `%`) is quoted,
                # or the URL would end at it.
                client.stream_to(f"{route}/{quote(entry['path'], safe='/')}", fh)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)  # after a failure; after the rename there is nothing left
        written.append(target)
    return written
