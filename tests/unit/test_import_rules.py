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


# -- the node side's bundle: what an attached host with nothing but Python 3 runs ------------------
def test_the_node_side_imports_only_the_standard_library_and_itself() -> None:
    """Every module copied to an attached host (cible.backends.ssh.bundle: the agent, the launcher and
    all they import, lazily too) imports only the standard library and modules of the bundle. A
    third-party import there (psutil, httpx, yaml…) fails on a host at run time, so it fails here."""
    from cible.backends.ssh.bundle import OPTIONAL_IMPORTS, node_side

    side = node_side(PACKAGE)
    assert not side.problems, "\n".join(side.problems)
    assert not side.outside, (
        "the node side runs on attached hosts with nothing but Python 3; use the standard library "
        "(cible.node.proc for processes, cible.agent.http for HTTP) or list a guarded import in "
        "cible.backends.ssh.bundle.OPTIONAL_IMPORTS:\n" + "\n".join(side.outside))
    bundled = set(side.sources) | set(side.stand_ins)
    for module, path in side.sources.items():  # the same, read by this module's own walk
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            if top == "cible":
                assert imported in bundled or imported.rpartition(".")[0] in bundled, \
                    f"{path.relative_to(SRC)}:{line} imports {imported}, which is not in the bundle"
            else:
                assert top in sys.stdlib_module_names or top == "__future__" or (module, top) in OPTIONAL_IMPORTS, \
                    f"{path.relative_to(SRC)}:{line} imports {imported}"
        ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 10))  # requires-python >= 3.10


def test_the_node_side_walk_sees_what_it_judges(tmp_path: Path) -> None:
    """The rule above can fail: a lazy third-party import deep in the node side is found and named."""
    from cible.backends.ssh.bundle import node_side

    side = node_side(PACKAGE)
    expected = {"cible.agent.http", "cible.node.proc", "cible.launch.ranks", "cible.core.environments.pins"}
    assert expected <= set(side.sources)
    assert set(side.stand_ins) == {"cible", "cible.core.environments"}  # they import the SDK and PyYAML
    fake = tmp_path / "cible"
    for rel, text in {"__init__.py": "", "agent/__init__.py": "", "agent/main.py": "from . import helper\n",
                      "agent/helper.py": "def later():\n    import psutil\n"}.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    found = node_side(fake, entry_points=("cible.agent.main",))
    assert found.outside == ["cible/agent/helper.py:2 imports psutil"]
