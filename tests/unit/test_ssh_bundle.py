"""The node side's bundle (cible.backends.ssh.bundle): built once per content, the same bytes for the
same content, a new folder when a file changes, stand-ins for the packages it only passes through.
That it runs on a bare Python is tests/integration/test_agent_bundle.py; that it imports nothing
third-party is tests/unit/test_import_rules.py."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from cible.backends.ssh.bundle import build_bundle


def test_built_once_per_content_and_sent_as_the_same_bytes(tmp_path: Path):
    bundle = build_bundle(tmp_path / "cache")
    assert bundle.path == tmp_path / "cache" / f"agent-{bundle.sha}" and (bundle.path / "cible").is_dir()
    assert {"cible/agent/detach.py", "cible/node/proc.py", "cible/launch/launcher.py"} <= set(bundle.files)
    assert not any(rel.startswith(("cible/server/", "cible/sdk/", "cible/cli/", "cible/backends/"))
                   for rel in bundle.files)
    assert sorted(p.relative_to(bundle.path).as_posix() for p in bundle.path.rglob("*") if p.is_file()) \
        == sorted(bundle.files)
    again = build_bundle(tmp_path / "cache")
    assert again == bundle and [p.name for p in (tmp_path / "cache").iterdir()] == [bundle.path.name]
    data = bundle.tar_bytes()
    assert data == again.tar_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == sorted(bundle.files)
        init = tar.extractfile("cible/__init__.py").read().decode()
    assert "Stand-in" in init and "__version__ = " in init and "sdk" not in init  # no SDK, no third party
    stand_in = (bundle.path / "cible" / "core" / "environments" / "__init__.py").read_text()
    assert "Stand-in" in stand_in and "import" not in stand_in.split('"""')[-1]


def test_a_changed_file_makes_another_bundle(tmp_path: Path):
    first = build_bundle(tmp_path / "cache")
    source = tmp_path / "src" / "cible"
    shutil.copytree(first.path / "cible", source)
    (source / "node" / "files.py").write_text((source / "node" / "files.py").read_text() + "\nEXTRA = 1\n")
    second = build_bundle(tmp_path / "cache", package=source)
    assert second.sha != first.sha and second.path.is_dir() and first.path.is_dir()
    assert (second.path / "cible" / "node" / "files.py").read_text().endswith("EXTRA = 1\n")


def test_the_bundle_is_python_3_10(tmp_path: Path):
    """An attached machine needs Python 3.10 (pyproject's requires-python), whatever the server runs:
    no syntax and no standard-library module newer than 3.10 in the node side."""
    import ast

    newer_modules = {"tomllib", "wsgiref.types"}  # the standard library's additions in 3.11 and 3.12
    bundle = build_bundle(tmp_path)
    for rel in bundle.files:
        if not rel.endswith(".py"):
            continue
        source = (bundle.path / rel).read_text()
        tree = ast.parse(source, filename=rel, feature_version=(3, 10))  # SyntaxError for 3.11+ syntax
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not newer_modules & set(names), f"{rel}:{node.lineno} imports {names}: not in Python 3.10"
