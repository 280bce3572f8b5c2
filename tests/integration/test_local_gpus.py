"""The `local` provider hands out the machine's GPUs (a two-GPU device list, CIBLE_FAKE_GPUS): real agent
processes, told of a server that is not there (they wait for it, which is all this needs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cible.backends.base.contract import NodeRequest
from cible.backends.local.provider import GPUS_FILE, LocalNodeProvider
from cible.node import gpus
from cible.testing import kill_nodes, wait_until

NO_SERVER = "http://127.0.0.1:9"


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalNodeProvider]:
    monkeypatch.setenv(gpus.ENV_FAKE, json.dumps([{"uuid": "GPU-a", "minor": 0}, {"uuid": "GPU-b", "minor": 1}]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    home = tmp_path / "ws"
    home.mkdir()
    try:
        yield LocalNodeProvider(home / "nodes", home, NO_SERVER, node_token=lambda node_id: "token")
    finally:
        kill_nodes(home)


def request(node_id: str, count: int) -> NodeRequest:
    size = "Standard_NC4as_T4_v3" if count else "Standard_DS1_v2"
    return NodeRequest(node_id=node_id, compute="c", size=size, vcpus=1, memory_gb=0.25, gpus=count)


def given(provider: LocalNodeProvider, node_id: str) -> list[str]:
    return json.loads((provider.nodes_root / node_id / GPUS_FILE).read_text())


def test_each_node_gets_gpus_no_other_live_node_holds(provider: LocalNodeProvider) -> None:
    provider.launch([request("a", 1), request("b", 1), request("cpu", 0)])
    assert {tuple(given(provider, "a")), tuple(given(provider, "b"))} == {("GPU-a",), ("GPU-b",)}
    assert given(provider, "cpu") == []  # what each agent is told (--gpu-ids): tests/e2e/test_gpu_nodes.py

    provider.launch([request("c", 1)])  # both GPUs are held: it cannot start, and says by whom
    error = provider.poll_errors()["c"]
    assert "it cannot start on this machine" in error and "0 of this machine's 2 are free" in error
    assert "by node a" in error and "by node b" in error
    assert "c" not in provider.list_nodes()

    held_by_a = given(provider, "a")
    provider.terminate(["a"])
    wait_until(lambda: "a" not in provider.list_nodes(), 30, message="node a to be gone")
    provider.launch([request("c", 1)])  # once a node holding one is gone, its GPU is free again
    assert given(provider, "c") == held_by_a
    assert provider.poll_errors() == {}
