"""End-to-end fixtures: a workspace (CIBLE_HOME) per module or per test; see e2e_support."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import Workspace, files_in


def pytest_collection_modifyitems(config, items):  # noqa: ANN001, ARG001
    """Everything under tests/e2e is an e2e test, marked or not."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """One workspace (and server) shared by a module's tests."""
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    yield ws
    ws.stop()


@pytest.fixture
def fresh_workspace(tmp_path: Path):
    """A workspace of the test's own, for tests that stop, restart or kill the server."""
    ws = Workspace(tmp_path / "ws")
    yield ws
    ws.stop()


@pytest.fixture
def cible(workspace: Workspace):
    """cible(*args, check=True) -> CompletedProcess, against the module's workspace."""
    return workspace.cible


@pytest.fixture
def files_of():
    return files_in
