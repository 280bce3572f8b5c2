"""The node-provider conformance suite (cible.testing.conformance) on the `ray` provider, against a
real Ray started here as tests/e2e/test_ray.py starts it (cible.testing.ray_cluster): a head with
no CPUs for work and one worker on 127.0.0.3 with room for several of the suite's small nodes.

One provider (one Ray driver: Ray allows one per process) serves the whole module. Its nodes'
agents are told of a server that is not there: they wait for it, which is all the suite needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from cible.backends.ray.provider import RayNodeProvider  # noqa: E402
from cible.testing import wait_until  # noqa: E402
from cible.testing.conformance import NodeProviderConformance  # noqa: E402
from cible.testing.ray_cluster import RayTestCluster  # noqa: E402

NO_SERVER = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayTestCluster]:
    cluster = RayTestCluster()
    try:
        cluster.start(num_cpus=0, memory_gb=1)  # the head takes no cible node
        cluster.add_node("127.0.0.3", num_cpus=4, memory_gb=8)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ray_provider(ray_cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayNodeProvider]:
    home: Path = tmp_path_factory.mktemp("ray-conformance") / "ws"
    home.mkdir()
    provider = RayNodeProvider(ray_cluster.address, nodes_root=home / "nodes", home=home, url=NO_SERVER,
                               node_token=lambda node_id: "token", ray_token=ray_cluster.token)
    provider.prepare()
    try:
        wait_until(lambda: provider.status().reachable and provider.list_nodes() is not None
                   and provider.status().ray_nodes == 2, 120, interval=0.25,
                   message=f"the ray provider to see Ray ({provider.status().error})")
        yield provider
    finally:
        provider.close()


class TestRayProvider(NodeProviderConformance):
    timeout_s = 90.0

    @pytest.fixture
    def provider(self, ray_provider: RayNodeProvider) -> Iterator[RayNodeProvider]:
        yield ray_provider

    def test_each_node_moves_through_the_table_with_a_history(self, provider: RayNodeProvider) -> None:
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)
        self.settle(lambda: provider.history(request.node_id)[-1].target.value == "gone", "its last move")
        moves = [(c.source and c.source.value, c.target.value) for c in provider.history(request.node_id)]
        assert moves == [(None, "queued"), ("queued", "placing"), ("placing", "starting"), ("starting", "running"),
                         ("running", "stopping"), ("stopping", "gone")]
