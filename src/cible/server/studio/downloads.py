"""A user's file (a job's output, a model's file) sent from the studio's origin: always a download.

Such a file is the user's, not the studio's: served with its own type (`.html`, `.js`, `.svg`) it would
run as a page of the studio. So its type is application/octet-stream and it is an attachment, whatever
its name; the security headers (nosniff, the CSP) go with it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse

from cible.server.studio.web import SECURITY_HEADERS


def download(path: Path) -> FileResponse:
    """`path` (already checked to be inside its job's or model's folder) as an attachment of no type."""
    return FileResponse(path, filename=path.name, media_type="application/octet-stream",
                        content_disposition_type="attachment", headers=SECURITY_HEADERS)


__all__ = ["download"]
