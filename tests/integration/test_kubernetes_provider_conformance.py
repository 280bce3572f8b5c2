"""The node-provider conformance suite (cible.testing.conformance) on the `kubernetes` provider, against an
EMULATED Kubernetes API server: kmock's KubernetesEmulator on loopback HTTP, with the test playing the
scheduler and kubelet (cible.testing.kubernetes). No real API server can run on these machines; the
provider talks to it with the official `kubernetes` client and a kubeconfig, as to a real cluster.

Each node is a pod whose bootstrap fetches the agent from the server; the server is not there (the suite
checks the contract, not jobs), so the bootstrap waits for it, which keeps the pod Running."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from cible.backends.kubernetes.api import ClusterAccess, PodTemplate
from cible.backends.kubernetes.provider import KubernetesNodeProvider
from cible.core.models.kubernetes import InstanceType
from cible.testing import wait_until
from cible.testing.conformance import NodeProviderConformance
from cible.testing.kubelet import EmulatedNode
from cible.testing.kubernetes import EmulatedKubernetes

NO_SERVER = "http://127.0.0.1:9"
SMALL = InstanceType.model_validate({"resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                   "limits": {"cpu": "1", "memory": "1Gi"}}})
HUGE = InstanceType.model_validate({"resources": {"requests": {"cpu": "64", "memory": "1Gi"},
                                                  "limits": {"cpu": "64", "memory": "1Gi"}}})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedKubernetes]:
    with EmulatedKubernetes(tmp_path_factory.mktemp("emulated-k8s"), namespaces=("default", "ml", "locked"),
                            nodes=(EmulatedNode("node-a", cpu="8", memory="16Gi"),)) as k8s:
        k8s.forbid("locked", resource="pods", verb="create")
        yield k8s


def _template(k8s: EmulatedKubernetes, pool: str, namespace: str = "ml", spec: InstanceType = SMALL) -> PodTemplate:
    return PodTemplate(access=ClusterAccess(compute="k8s", namespace=namespace, kubeconfig=str(k8s.kubeconfig),
                                            context="emulated"),
                       pool=pool, instance_type="small", spec=spec, image="python:3.12-slim", python="python3")


@pytest.fixture(scope="module")
def k8s_provider(cluster: EmulatedKubernetes, tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[KubernetesNodeProvider]:
    home: Path = tmp_path_factory.mktemp("k8s-provider")

    def template_of(pool: str) -> PodTemplate:
        if pool.startswith("locked"):
            return _template(cluster, pool, namespace="locked")
        if pool.startswith("nowhere"):
            return _template(cluster, pool, namespace="nowhere")
        return _template(cluster, pool, spec=HUGE if pool.startswith("huge") else SMALL)

    provider = KubernetesNodeProvider(home / "nodes", NO_SERVER, lambda node_id: f"token-of-{node_id}",
                                      template_of=template_of, workspace="ws-conformance",
                                      instance_types=lambda: {"k8s/small": SMALL})
    provider.prepare()
    try:
        yield provider
    finally:
        provider.terminate(list(provider.list_nodes() or {}))
        wait_until(lambda: not provider.list_nodes(), 60, interval=0.1, message="every node to go")
        provider.close()


class TestKubernetesProvider(NodeProviderConformance):
    timeout_s = 60.0

    @pytest.fixture
    def provider(self, k8s_provider: KubernetesNodeProvider) -> Iterator[KubernetesNodeProvider]:
        yield k8s_provider

    def test_a_node_is_a_pod_of_its_instance_type_with_its_token_in_a_secret(
            self, provider: KubernetesNodeProvider, cluster: EmulatedKubernetes) -> None:
        request = self.request()
        self.launch(provider, request)
        node = self.up(provider, request.node_id)
        pods = cluster.pods("ml", selector=f"cible.dev/node={request.node_id}")
        assert len(pods) == 1 and node.address == pods[0]["status"]["podIP"]
        assert pods[0]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
        secret = cluster.core.read_namespaced_secret(f"cible-node-{pods[0]['metadata']['name'][6:]}", "ml")
        assert base64.b64decode(secret.data["token"]).decode() == f"token-of-{request.node_id}"
        assert f"token-of-{request.node_id}" not in str(pods[0])  # by reference only
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)
        cluster.wait_for(lambda: not cluster.pods("ml", selector=f"cible.dev/node={request.node_id}"),
                         what="the pod to be deleted")

    def test_a_deleted_pod_is_a_lost_node_with_why(self, provider: KubernetesNodeProvider,
                                                  cluster: EmulatedKubernetes) -> None:
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        pod = cluster.pods("ml", selector=f"cible.dev/node={request.node_id}")[0]["metadata"]["name"]
        cluster.delete_pod("ml", pod)
        self.gone(provider, request.node_id)
        errors = self.settle(lambda: provider.poll_errors() or None, "the loss to be said")
        assert errors[request.node_id] == f"its pod ml/{pod} was deleted"

    def test_an_evicted_pod_is_a_lost_node_with_the_kubelets_words(self, provider: KubernetesNodeProvider,
                                                                  cluster: EmulatedKubernetes) -> None:
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        pod = cluster.pods("ml", selector=f"cible.dev/node={request.node_id}")[0]["metadata"]["name"]
        cluster.evict("ml", pod, message="The node was low on resource: memory.")
        self.gone(provider, request.node_id)
        errors = self.settle(lambda: provider.poll_errors() or None, "the eviction to be said")
        assert "Evicted: The node was low on resource: memory." in errors[request.node_id]

    def test_a_forbidden_create_fails_the_node_with_the_rbac_fix(self, provider: KubernetesNodeProvider) -> None:
        request = self.request(compute="locked-pool")
        self.launch(provider, request)
        errors = self.settle(lambda: provider.poll_errors() or None, "the refusal to be said")
        assert "refused creating pod" in errors[request.node_id] and "forbidden" in errors[request.node_id]
        assert "RoleBinding" in errors[request.node_id]
        assert request.node_id not in self.listing(provider)

    def test_a_namespace_that_does_not_exist_fails_the_node_saying_so(self, provider: KubernetesNodeProvider) -> None:
        request = self.request(compute="nowhere-pool")
        self.launch(provider, request)
        errors = self.settle(lambda: provider.poll_errors() or None, "the refusal to be said")
        assert "namespace nowhere does not exist" in errors[request.node_id]

    def test_an_unschedulable_pod_waits_with_the_schedulers_reason(self, provider: KubernetesNodeProvider) -> None:
        request = self.request(compute="huge-pool")
        self.launch(provider, request)
        waiting = self.settle(lambda: (provider.status().waiting or {}).get("huge-pool"), "the pool's wait reason")
        assert "Pending" in waiting and "Insufficient cpu" in waiting
        assert self.listing(provider)[request.node_id].alive  # a starting node: the prepare timeout decides
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)

    def test_an_api_server_that_does_not_answer_keeps_the_nodes_and_says_so(
            self, provider: KubernetesNodeProvider, cluster: EmulatedKubernetes) -> None:
        request = self.request()
        self.launch(provider, request)
        self.up(provider, request.node_id)
        cluster.stop_api()
        try:
            status = self.settle(lambda: (s := provider.status()).error and s, "the outage to be said")
            assert not status.reachable and "does not answer" in status.error
            assert self.listing(provider)[request.node_id].alive  # the heartbeat timeout decides, not a listing
        finally:
            cluster.start_api()
        self.settle(lambda: provider.status().reachable, "the API server to be reached again")
        provider.terminate([request.node_id])
        self.gone(provider, request.node_id)

    def test_a_pod_of_this_workspace_that_no_node_names_is_deleted(self, provider: KubernetesNodeProvider,
                                                                   cluster: EmulatedKubernetes) -> None:
        request = self.request()
        self.launch(provider, request)  # a node there: the provider lists that namespace
        self.up(provider, request.node_id)
        orphan = {"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": "cible-lost-record", "labels": {"cible.dev/workspace": "ws-conformance"},
                               "annotations": {"cible.dev/node-id": "tvmps_lost_d"}},
                  "spec": {"restartPolicy": "Never", "containers": [{"name": "agent", "image": "python:3.12-slim",
                                                                     "command": ["python3", "-c", "input()"]}]}}
        other = {**orphan, "metadata": {"name": "someone-elses", "labels": {"cible.dev/workspace": "ws-other"}}}
        cluster.core.create_namespaced_pod("ml", orphan)
        cluster.core.create_namespaced_pod("ml", other)
        cluster.wait_for(lambda: cluster.pod("ml", "cible-lost-record") is None, what="the orphan pod to be deleted")
        assert cluster.pod("ml", "someone-elses") is not None  # another workspace's pods are its own
        assert self.listing(provider)[request.node_id].alive
        cluster.delete_pod("ml", "someone-elses")
