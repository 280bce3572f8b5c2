"""The package boundaries of docs/architecture.md, read from the code's own imports (an AST walk,
so a lazy import inside a function counts too): a new import across a forbidden edge fails here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "cible"

# (importer prefix, forbidden imported prefixes, why)
RULES = [
    ("cible.core", ("cible.server", "cible.backends", "cible.cli", "cible.client", "cible.sdk", "cible.agent",
                    "cible.launch", "cible.node", "cible.workspace"), "core is pure"),
    ("cible.core.models", ("cible.core.planning",), "domain models do not depend on the planners"),
    ("cible.client", ("cible.server",), "the client talks to a server only over HTTP"),
    ("cible.sdk", ("cible.server",), "the SDK talks to a server only over HTTP"),
    ("cible.agent", ("cible.server", "cible.backends"), "a node's agent uses cible.node, not a provider"),
    ("cible.launch", ("cible.server", "cible.backends", "cible.agent"), "the launcher runs on any node"),
    ("cible.node", ("cible.server", "cible.backends", "cible.agent", "cible.cli"),
     "node tools serve every provider's agent"),
    ("cible.backends", ("cible.server", "cible.cli", "cible.agent"), "providers are plugins of the server"),
    ("cible.server.services", ("cible.server.clusters", "cible.server.reconcilers"),
     "the control loops use the services, not the other way round"),
]
# The CLI's `cible server` command is the one place the CLI starts a server in-process.
CLI_SERVER_COMMAND = "cible.cli.server"
STDLIB_ONLY = ("cible.runfiles", "cible.node.files")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _all_imports() -> list[tuple[str, Path, int, str]]:
    return [(_module_name(path), path, line, imported)
            for path in sorted(PACKAGE.rglob("*.py")) for line, imported in _imports(path)]


def test_the_walk_sees_the_imports_it_judges() -> None:
    """The rules below can fail: the walk finds a known import of each kind (absolute, relative, lazy)."""
    seen = {(module, imported) for module, _, _, imported in _all_imports()}
    assert ("cible.server.app", "cible.server.store.db") in seen
    assert ("cible.core.models.computes", "cible.core.models.common") in seen  # `from .common import`
    assert any(module == "cible.backends.ray" and imported == "cible.backends.ray.provider" for module, imported in seen)


@pytest.mark.parametrize("importer, forbidden, why", RULES, ids=[rule[0] for rule in RULES])
def test_no_import_crosses_a_forbidden_edge(importer: str, forbidden: tuple[str, ...], why: str) -> None:
    crossings = [f"{path.relative_to(SRC)}:{line} imports {imported}"
                 for module, path, line, imported in _all_imports()
                 if _within(module, importer) and any(_within(imported, f) for f in forbidden)]
    assert not crossings, f"{why}:\n" + "\n".join(crossings)


def test_the_cli_reaches_into_the_server_only_for_its_server_command() -> None:
    crossings = [f"{path.relative_to(SRC)}:{line} imports {imported}"
                 for module, path, line, imported in _all_imports()
                 if _within(module, "cible.cli") and _within(imported, "cible.server")
                 and module != CLI_SERVER_COMMAND]
    assert not crossings, "\n".join(crossings)


@pytest.mark.parametrize("module", STDLIB_ONLY)
def test_shared_formats_import_only_the_standard_library(module: str) -> None:
    path = SRC / (module.replace(".", "/") + ".py")
    outside = [f"{path.relative_to(SRC)}:{line} imports {imported}" for line, imported in _imports(path)
               if imported.split(".")[0] not in sys.stdlib_module_names and imported != "__future__"]
    assert not outside, "\n".join(outside)
