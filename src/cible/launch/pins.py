"""Relaxing a venv's exact pins for the interpreter it is built on: the node side of
cible.core.environments.pins, which decides.

Where the requested Python is not on the node, the environment is built on the nearest one. Before
`uv pip install`, each exact pin is checked against the index's files (the PEP 691 JSON simple API
of the index uv uses: UV_DEFAULT_INDEX, UV_INDEX_URL, PIP_INDEX_URL, else PyPI; PEP 503 HTML where
an index has no JSON) and the interpreter's own wheel tags (asked of the interpreter). A pin the
index cannot be asked about is kept as written.

Standard library only at import time: the launcher imports this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

DEFAULT_INDEX = "https://pypi.org/simple"
INDEX_TIMEOUT_S = 20.0
_JSON = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"

# Run by the interpreter itself (-I: its own site-packages only): packaging's tags where it can
# import packaging, else the facts cible.core.environments.pins works the tags out from.
PROBE = r"""
import json, os, platform, sys
facts = {"implementation": sys.implementation.name, "version": list(sys.version_info[:3]),
         "abiflags": getattr(sys, "abiflags", ""), "machine": platform.machine(), "system": platform.system().lower()}
try:
    facts["glibc"] = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (AttributeError, ValueError, OSError):
    pass
try:
    from packaging.tags import sys_tags
    facts["tags"] = [str(t) for t in sys_tags()]
except Exception:
    pass
print(json.dumps(facts))
"""


@dataclass
class Relaxation:
    """What relaxing did: the lines to install, what the log says, what uv must not build."""

    requirements: list[str]
    deviations: list[str] = field(default_factory=list)  # "scikit-learn==1.1.2 has no wheel for ...; using 1.1.3"
    notes: list[str] = field(default_factory=list)  # kept pins and pins the index could not be asked about
    no_build: list[str] = field(default_factory=list)  # `uv pip install --only-binary` each
    relaxed: list[tuple[str, str]] = field(default_factory=list)  # (planned line, installed line)


def index_url(environ: dict[str, str] | None = None, requirements: list[str] | None = None) -> str:
    """The index uv installs from: the requirements' own --index-url/-i/--default-index, else uv's
    and pip's variables, else PyPI."""
    for line in requirements or []:
        parts = line.strip().replace("=", " ", 1).split() if line.strip().startswith("-") else []
        if len(parts) >= 2 and parts[0] in ("--index-url", "-i", "--default-index"):
            return parts[1]
    environ = dict(os.environ) if environ is None else environ
    for name in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        value = (environ.get(name) or "").strip()
        if value:
            return value.split()[0]
    return DEFAULT_INDEX


def shown_url(url: str) -> str:
    """The URL without its credentials, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def interpreter_facts(exe: str, timeout: float = 30.0) -> dict[str, Any] | None:
    try:
        out = subprocess.run([exe, "-I", "-c", PROBE], check=False, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        facts = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return facts if isinstance(facts, dict) and facts.get("version") else None


def describe(facts: dict[str, Any]) -> str:
    """"CPython 3.11 (linux x86_64)"."""
    impl = {"cpython": "CPython", "pypy": "PyPy"}.get(str(facts.get("implementation")), str(facts.get("implementation")))
    major, minor = list(facts["version"])[:2]
    return f"{impl} {major}.{minor} ({facts.get('system') or 'linux'} {facts.get('machine') or '?'})"


def _anchors(html: str) -> list[dict[str, Any]]:
    """PEP 503: one <a> per file, its text the file name."""
    from html.parser import HTMLParser  # lazily, as urllib.request: only a build on another Python asks an index

    files: list[dict[str, Any]] = []

    class Anchors(HTMLParser):
        current: dict[str, Any] | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "a":
                a = dict(attrs)
                self.current = {"requires-python": a.get("data-requires-python"), "yanked": "data-yanked" in a,
                                "href": a.get("href") or "", "filename": ""}

        def handle_data(self, data: str) -> None:
            if self.current is not None:
                self.current["filename"] += data

        def handle_endtag(self, tag: str) -> None:
            if tag == "a" and self.current is not None:
                current, self.current = self.current, None
                name = current["filename"].strip() or urllib.parse.urlsplit(current["href"]).path.rsplit("/", 1)[-1]
                files.append({**current, "filename": name})

    parser = Anchors()
    parser.feed(html)
    parser.close()
    return files


def project_files(index: str, project: str, timeout: float = INDEX_TIMEOUT_S) -> list[dict[str, Any]]:
    """The project's files on the index as PEP 691 dicts (filename, requires-python, yanked)."""
    import base64
    import urllib.request

    parts = urllib.parse.urlsplit(index.rstrip("/") + f"/{project}/")
    headers = {"Accept": _ACCEPT, "User-Agent": "cible-environment-builder"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    url = shown_url(urllib.parse.urlunsplit(parts))
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the configured index
        body = response.read()
        kind = response.headers.get("Content-Type", "")
    if _JSON in kind or body.lstrip().startswith(b"{"):
        return list(json.loads(body).get("files") or [])
    return _anchors(body.decode("utf-8", "replace"))


def relax(requirements: list[str], interpreter: str, timeout: float = INDEX_TIMEOUT_S) -> Relaxation:
    """The requirements to install on `interpreter`, every exact pin without a wheel for it moved."""
    from concurrent.futures import ThreadPoolExecutor

    from cible.core.environments import pins  # lazily: the launcher's import stays stdlib-only

    exact = pins.exact_pins(requirements)
    result = Relaxation(list(requirements))
    if not exact:
        return result
    facts = interpreter_facts(interpreter)
    if facts is None:
        result.notes.append(f"could not ask {interpreter} for its wheel tags; the pins are kept as written")
        return result
    tags = pins.interpreter_tags(facts)
    target = describe(facts)
    index = index_url(requirements=requirements)
    names = sorted({pins.normalise(p.name) for p in exact})
    found: dict[str, list[pins.IndexFile]] = {}

    def ask(name: str) -> tuple[str, list[pins.IndexFile] | None, str]:
        try:
            raw = project_files(index, name, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the pin; the log says why
            return name, None, f"{type(exc).__name__}: {exc}"
        files = [pins.IndexFile(str(f.get("filename") or ""), f.get("requires-python"), bool(f.get("yanked")))
                 for f in raw if isinstance(f, dict)]
        return name, files, ""

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        for name, files, error in pool.map(ask, names):
            if files is None:
                result.notes.append(f"could not read {name}'s files on {shown_url(index)} ({error}); its pin is kept")
            else:
                found[name] = files
    plan = pins.relax_requirements(requirements, found, tags, tuple(facts["version"]), target)
    result.requirements = plan.requirements
    result.no_build = plan.no_build
    for decision in plan.decisions:
        if decision.outcome == pins.RELAXED:
            result.deviations.append(decision.reason)
            result.relaxed.append((decision.pin.line, decision.line))
        else:
            result.notes.append(decision.reason)
    return result
