"""The node-provider conformance suite (cible.testing.conformance) on the `slurm` provider, against
a real Slurm (cible.testing.slurm: slurmctld and three slurmd at 127.0.0.2-4): each node is a Slurm
job running cible's agent from the shipped node code, its token read from a file removed as it
starts. The agents are told of a server that is not there: they wait for it, which is all the
suite needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cible.backends.slurm.access import SlurmAccess
from cible.backends.slurm.provider import SlurmNodeProvider
from cible.backends.ssh.bundle import build_bundle
from cible.core.models.computes import CibleSlurmSettings, SlurmCompute
from cible.testing import wait_until
from cible.testing.conformance import NodeProviderConformance
from cible.testing.slurm import SlurmTestCluster, needs_slurm, running_cluster

NO_SERVER = "http://127.0.0.1:9"


@pytest.fixture(scope="module", autouse=True)
def _needs_slurm() -> None:
    needs_slurm()


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmTestCluster]:
    with running_cluster() as slurm:
        yield slurm


@pytest.fixture(scope="module")
def slurm_provider(cluster: SlurmTestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmNodeProvider]:
    home: Path = tmp_path_factory.mktemp("slurm-provider") / "ws"
    spec = SlurmCompute(name="hpc", partition="debug", cible=CibleSlurmSettings(
        agent_dir=str(home / "agent"), environment={"SLURM_CONF": str(cluster.slurm_conf)}))
    bundle = build_bundle(home / "cache")
    provider = SlurmNodeProvider(home / "nodes", NO_SERVER, lambda node_id: f"token-of-{node_id}",
                                 access_of=lambda cluster_name: SlurmAccess(spec, None, "alice"),
                                 bundle=lambda: bundle, computes=lambda: [SlurmAccess(spec, None, "alice")])
    try:
        yield provider
    finally:
        provider.terminate(list(provider.list_nodes() or {}))
        wait_until(lambda: not provider.list_nodes(), 60, interval=0.2, message="every node to go")
        provider.close()


class TestSlurmProvider(NodeProviderConformance):
    timeout_s = 60.0

    @pytest.fixture
    def provider(self, slurm_provider: SlurmNodeProvider) -> Iterator[SlurmNodeProvider]:
        yield slurm_provider

    def test_a_node_is_a_slurm_job_whose_agent_got_its_token_and_left_no_file(
            self, provider: SlurmNodeProvider, cluster: SlurmTestCluster) -> None:
        request = self.request()
        self.launch(provider, request)
        node = self.up(provider, request.node_id)
        assert node.address in ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # a Slurm node's NodeAddr
        record = provider._record(request.node_id)
        jobs = cluster.run(["squeue", "-h", "-o", "%i|%j|%T", "-j", record["slurm_job_id"]]).stdout
        assert f"|cible-{request.node_id}|RUNNING" in jobs
        root = Path(record["root"])
        wait_until(lambda: not (root / "token").exists() or None, 30, interval=0.1, message="the token file to go")
        script = (root / "node.sbatch").read_text()
        assert f"token-of-{request.node_id}" not in script and "cible.agent" in script

    def test_a_node_slurm_refuses_says_why_and_is_never_listed(self, provider: SlurmNodeProvider) -> None:
        request = self.request(vcpus=64)  # more CPUs than any node: EnforcePartLimits refuses at sbatch
        self.launch(provider, request)
        errors = provider.poll_errors()
        assert "sbatch refused" in errors[request.node_id] and request.node_id not in self.listing(provider)
        assert provider.cannot_hold("Big", 64, 1.0, 0, overcommit=True).startswith("no Slurm node holds Big")

    def test_a_cluster_whose_slurm_cannot_be_asked_does_not_blind_the_others(
            self, provider: SlurmNodeProvider, tmp_path: Path) -> None:
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        # A record of a node of a cluster whose Slurm compute is gone (access_of raises), and one unreadable.
        provider._write_record("tvmps_gone_d", {"compute": "gone", "slurm_job_id": "999999", "root": "/nowhere"})
        (provider.nodes_root / "tvmps_bad_d").mkdir()
        (provider.nodes_root / "tvmps_bad_d" / "slurm.json").write_text("[not a record")
        real = provider.access_of
        provider.access_of = lambda compute: real(compute) if compute != "gone" else (_ for _ in ()).throw(
            RuntimeError("no such cluster"))
        provider._listed = None
        try:
            listed = provider.list_nodes()
            assert listed is not None and request.node_id in listed and "tvmps_gone_d" not in listed
            assert "cluster gone" in provider.status().error
        finally:
            provider.access_of = real
            provider._forget("tvmps_gone_d")
            provider._forget("tvmps_bad_d")
