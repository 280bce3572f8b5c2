"""Files a list route of the API names, written under a local folder in the listing's layout
(`job download`, `model download`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cible.client.http import WorkspaceClient
from cible.core.safepaths import under


def download_listed(client: WorkspaceClient, route: str, download_path: str | Path,
                    params: dict[str, Any] | None = None) -> list[Path]:
    """Every file `route` lists, fetched from `route/<path>` to `download_path/<path>`; each is written
    whole or not at all (a `.part` file renamed), so a failed download leaves no half file."""
    written = []
    for entry in client.items(route, params):
        target = under(Path(download_path), entry["path"], field="path")  # never outside download_path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with open(tmp, "wb") as fh:
            client.stream_to(f"{route}/{entry['path']}", fh)
        tmp.replace(target)
        written.append(target)
    return written
