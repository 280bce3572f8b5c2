"""Staging a job's code and data on the node, and publishing its outputs.

Snapshots are content-addressed: a manifest blob maps relative paths to file
blobs, all kept under the datastore's blob root. Stdlib only (and cible.core.safepaths,
which is too): every path from a manifest, a URL or a listing stays under its folder.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from cible.core.safepaths import under
from cible.runfiles import blob_path, read_manifest

DOWNLOAD_TIMEOUT_S = 60
AZURE_BLOB_SUFFIX = ".blob.core.windows.net"


def materialise_snapshot(blob_root: Path, snapshot_id: str, dest: Path, subpath: str = "") -> Path:
    """Copy a snapshot (or the part under `subpath`) into `dest`; return the staged path."""
    manifest = read_manifest(blob_root, snapshot_id)
    prefix = subpath.strip("/")
    for rel, entry in manifest["files"].items():
        if prefix and rel != prefix and not rel.startswith(prefix + "/"):
            continue
        target = under(dest, rel, field="files")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob_path(blob_root, entry["sha256"]), target)
        if entry.get("mode", 0) & stat.S_IXUSR:
            target.chmod(0o755)
    dest.mkdir(parents=True, exist_ok=True)
    return under(dest, prefix, field="path") if prefix else dest


def copy_path(src: Path, dest_dir: Path) -> Path:
    """Copy a local file or folder into `dest_dir`, keeping its basename. Links are copied as links,
    never followed: a job's output may hold one that points at what the job itself could not see."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / src.name
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
    else:
        shutil.copyfile(src, target, follow_symlinks=False)
    return target


def make_read_only(path: Path) -> None:
    """ro_mount: the job sees its input, but cannot change it."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def download_url(url: str, dest_dir: Path, folder: bool) -> Path:
    """Fetch a public http(s) file, or every file an index page links to for a folder."""
    import urllib.parse
    import urllib.request  # here, not at the top: it costs the launcher's start ~25 ms

    dest_dir.mkdir(parents=True, exist_ok=True)
    if not folder:
        name = Path(urllib.parse.urlparse(url).path).name or "download"
        target = under(dest_dir, name, field="path")  # a URL ending in `..` names no file here
        _fetch(url, target)
        return target
    base = url if url.endswith("/") else url + "/"
    if urllib.parse.urlparse(base).hostname.endswith(AZURE_BLOB_SUFFIX):
        for rel, blob_url in azure_blob_files(base):
            _fetch(blob_url, under(dest_dir, rel, field="path"))  # blob names are the account's to choose
        return dest_dir
    with urllib.request.urlopen(base, timeout=DOWNLOAD_TIMEOUT_S) as resp:
        page = resp.read().decode("utf-8", "replace")
    for href in _links(page):
        full = urllib.parse.urljoin(base, href)
        if not full.startswith(base) or full == base:
            continue  # parent links, absolute links elsewhere, sort links
        rel = urllib.parse.unquote(full[len(base):])  # `%2e%2e/` is `../` again: hence `under`
        if rel.endswith("/"):
            download_url(full, under(dest_dir, rel, field="path"), folder=True)
        elif "?" not in rel:
            _fetch(full, under(dest_dir, rel, field="path"))
    return dest_dir


def azure_blob_files(folder_url: str) -> list[tuple[str, str]]:
    """(relative path, URL) of every blob under a public container folder, via the Blob List API."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlparse(folder_url)
    container, _, prefix = parts.path.lstrip("/").partition("/")
    root = f"{parts.scheme}://{parts.netloc}/{container}"
    files, marker = [], ""
    while True:
        query = urllib.parse.urlencode({"restype": "container", "comp": "list", "prefix": prefix, "marker": marker})
        with urllib.request.urlopen(f"{root}?{query}", timeout=DOWNLOAD_TIMEOUT_S) as resp:
            names, marker = parse_blob_listing(resp.read())
        files += [(name[len(prefix):], f"{root}/{urllib.parse.quote(name)}") for name in names]
        if not marker:
            return files


def parse_blob_listing(page: bytes) -> tuple[list[str], str]:
    """Blob names and the NextMarker of one page of an Azure `List Blobs` answer."""
    import xml.etree.ElementTree as ET

    tree = ET.fromstring(page)
    names = [el.text for el in tree.iter("Name") if el.text and not el.text.endswith("/")]
    return names, (tree.findtext("NextMarker") or "")


def _fetch(url: str, target: Path) -> None:
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    os.replace(tmp, target)


def _links(page: str) -> list[str]:
    """The href of every <a> in an index page (python -m http.server, nginx autoindex …)."""
    from html.parser import HTMLParser

    links: list[str] = []

    class LinkParser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "a":
                links.extend(v for k, v in attrs if k == "href" and v)

    LinkParser().feed(page)
    return links


def publish_output(staged: Path, destination: Path) -> None:
    """`upload` mode: copy what the job wrote to the output's datastore path."""
    destination.mkdir(parents=True, exist_ok=True)
    if staged.exists():  # links as links (see copy_path)
        shutil.copytree(staged, destination, dirs_exist_ok=True, symlinks=True)
