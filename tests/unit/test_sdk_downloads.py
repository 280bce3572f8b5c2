"""`download_listed` (job and model download): each file whole or not at all, and any file name
fetched by its own URL (a `#`, `?` or `%` in a name is quoted, not read as a fragment or query)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from cible.core.errors import ServerUnavailableError
from cible.sdk.downloads import download_listed


class FakeClient:
    """Lists `files`; each transfer writes the file's bytes, or half of them and then fails."""

    def __init__(self, files: dict[str, bytes], failing: str | None = None) -> None:
        self.files = files
        self.failing = failing
        self.fetched: list[str] = []

    def items(self, route: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [{"path": path, "size": len(data)} for path, data in self.files.items()]

    def stream_to(self, url: str, fh) -> None:  # noqa: ANN001
        self.fetched.append(url)
        path = next(p for p in self.files if unquote(url).endswith("/" + p))
        data = self.files[path]
        if path == self.failing:
            fh.write(data[: len(data) // 2])
            raise ServerUnavailableError("cannot reach the cible server: connection reset")
        fh.write(data)


def test_a_failed_transfer_leaves_no_part_file(tmp_path: Path):
    client = FakeClient({"m/ok.bin": b"ok", "m/broken.bin": b"0123456789"}, failing="m/broken.bin")
    with pytest.raises(ServerUnavailableError):
        download_listed(client, "/models/m/versions/1/files", tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == ["m/ok.bin"]


def test_file_and_route_names_are_quoted_in_the_url(tmp_path: Path):
    names = {"m/a#b": b"1", "m/x?y": b"2", "m/100%.txt": b"3", "m/sp ace/z": b"4"}
    client = FakeClient(names)
    written = download_listed(client, "/models/m/versions/1/files", tmp_path)
    assert client.fetched == ["/models/m/versions/1/files/m/a%23b", "/models/m/versions/1/files/m/x%3Fy",
                              "/models/m/versions/1/files/m/100%25.txt", "/models/m/versions/1/files/m/sp%20ace/z"]
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in written} == names
