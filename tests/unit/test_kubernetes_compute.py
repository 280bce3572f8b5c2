"""A Kubernetes compute's pure parts: quantities, instance types (Azure's CRD shape), the pool a job
runs on, and the node pod as the API server is sent it (no cluster: see tests/e2e/test_kubernetes*.py)."""

from __future__ import annotations

import json
import re

import pytest

from cible.backends.base.contract import NodeRequest
from cible.backends.kubernetes.api import ClusterAccess, PodTemplate
from cible.backends.kubernetes.pods import BOOTSTRAP, pod_manifest, pod_name, pod_state, secret_manifest, secret_name
from cible.core.errors import InvalidRequestError, InvalidSpecError
from cible.core.models.computes import KubernetesCompute
from cible.core.models.kubernetes import DEFAULT_INSTANCE_TYPE, InstanceType, quantity
from cible.core.specs.azureml.loader import load_spec_text
from cible.server.services.kubernetes import pool_size, pool_spec

SMALL = {"nodeSelector": {"pool": "cpu"},
         "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "1.5", "memory": "1Gi"}}}


@pytest.mark.parametrize(("text", "value"), [("700m", 0.7), ("2", 2.0), (2, 2.0), ("1500Mi", 1500 * 2**20),
                                             ("2Gi", 2 * 2**30), ("1G", 1e9), ("1e3", 1000.0), ("0.5", 0.5)])
def test_quantities_read_as_kubernetes_writes_them(text: object, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["two", "1Zi", "1 Gi", "-1", True])
def test_a_bad_quantity_says_what_to_write(text: object) -> None:
    with pytest.raises(ValueError, match="quantity"):
        quantity(text)


def test_an_instance_type_is_sized_by_its_limits() -> None:
    chosen = InstanceType.model_validate({**SMALL, "resources": {**SMALL["resources"], "limits": {
        "cpu": "1.5", "memory": "1Gi", "nvidia.com/gpu": 1}}})
    assert (chosen.vcpus, chosen.memory_gb, chosen.gpus) == (2, 1.0, 1)
    assert chosen.node_selector == {"pool": "cpu"}


@pytest.mark.parametrize(("resources", "says"), [
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}, "limits needs cpu and memory"),
    ({"requests": {"cpu": "2"}, "limits": {"cpu": "1", "memory": "1Gi"}}, "requests.cpu (2) is above"),
    ({"requests": {"nvidia.com/gpu": 1}, "limits": {"cpu": "1", "memory": "1Gi"}}, "limits only"),
])
def test_an_instance_type_azure_would_refuse_is_refused(resources: dict, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        InstanceType.model_validate({"resources": resources})


def test_the_compute_yaml_takes_azures_fields_and_names_a_bad_one_at_its_line() -> None:
    loaded = load_spec_text("type: kubernetes\nname: k8s\nnamespace: ml\ncible:\n  kubeconfig: /etc/kube.conf\n"
                            "  instance_types:\n    small:\n      nodeSelector: {pool: cpu}\n      resources:\n"
                            "        limits: {cpu: '1', memory: 1Gi}\n", "compute", source="k8s.yml")
    compute = loaded.entity
    assert isinstance(compute, KubernetesCompute) and compute.namespace == "ml"
    assert set(compute.instance_types()) == {DEFAULT_INSTANCE_TYPE, "small"}
    with pytest.raises(InvalidSpecError, match=r"k8s.yml:\d+.*limits"):
        load_spec_text("type: kubernetes\nname: k8s\ncible:\n  instance_types:\n    small:\n      resources:\n"
                       "        limits: {cpu: '1'}\n", "compute", source="k8s.yml")


def test_the_yaml_instance_types_replace_the_clusters_and_the_default_is_azures() -> None:
    compute = KubernetesCompute(name="k8s", cluster_instance_types={"small": InstanceType.model_validate(SMALL)},
                                cible={"instance_types": {"small": {"resources": {"limits": {"cpu": "4",
                                                                                             "memory": "8Gi"}}}}})
    types = compute.instance_types()
    assert types["small"].vcpus == 4
    default = types[DEFAULT_INSTANCE_TYPE]
    assert (default.resources.requests.cpu, default.resources.limits.cpu, default.resources.limits.memory) == (
        "100m", "2", "2Gi")


def test_a_job_runs_on_the_pool_of_its_instance_type_or_is_refused_naming_those_there_are() -> None:
    compute = KubernetesCompute(name="k8s", namespace="ml", cluster_instance_types={
        "small": InstanceType.model_validate(SMALL)}, cible={"max_instances": 3, "kubeconfig": "/k"})
    pool = pool_spec(compute, "small", 2)
    assert pool["instance_type"] == "small" and pool["max_instances"] == 3
    assert pool["access"] == {"compute": "k8s", "namespace": "ml", "kubeconfig": "/k", "context": None}
    size = pool_size(pool)
    assert (size.vcpus, size.memory_gb, size.price_per_hour) == (2, 1.0, 0.0)
    assert pool_spec(compute, None, 1)["instance_type"] == DEFAULT_INSTANCE_TYPE
    with pytest.raises(InvalidRequestError, match="no instance type 'large' .*defaultinstancetype, small"):
        pool_spec(compute, "large", 1)
    with pytest.raises(InvalidRequestError, match="at most 3"):
        pool_spec(compute, "small", 4)


def _template() -> PodTemplate:
    return PodTemplate(access=ClusterAccess(compute="k8s", namespace="ml"), pool="k8s:small", instance_type="small",
                       spec=InstanceType.model_validate(SMALL), image="python:3.12-slim", python="python3",
                       image_pull_secrets=("regcred",))


def test_a_node_pod_has_its_types_resources_and_its_token_only_by_reference() -> None:
    request = NodeRequest(node_id="tvmps_00112233445566778899aabb_d", compute="k8s:small", size="small (k8s)",
                          vcpus=2, memory_gb=1.0, overcommit=True)
    pod = pod_manifest("ws-1", _template(), request, "http://10.0.0.1:8080")
    assert pod["metadata"]["name"] == "cible-tvmps-00112233445566778899aabb-d" == pod_name(request.node_id)
    assert pod["metadata"]["labels"]["cible.dev/workspace"] == "ws-1"
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"},
                                      "limits": {"cpu": "1.5", "memory": "1Gi"}}
    assert pod["spec"]["nodeSelector"] == {"pool": "cpu"} and pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    env = {e["name"]: e for e in container["env"]}
    assert env["CIBLE_AGENT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == secret_name(request.node_id)
    assert env["CIBLE_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "--overcommit" in json.loads(env["CIBLE_AGENT_ARGS"]["value"])
    assert "secret" not in json.dumps(pod).lower().replace("imagepullsecrets", "").replace("secretkeyref", "")
    assert container["command"] == ["python3", "-c", BOOTSTRAP]
    compile(BOOTSTRAP, "bootstrap", "exec")  # the pod's Python runs it as it is
    secret = secret_manifest("ws-1", _template(), request, "the-token")
    assert secret["stringData"] == {"token": "the-token"} and secret["metadata"]["namespace"] == "ml"


def test_a_long_node_id_still_makes_a_pod_name_kubernetes_takes() -> None:
    name = pod_name("x" * 80)
    assert len(name) <= 63 and name.startswith("cible-")


@pytest.mark.parametrize(("status", "phase", "says"), [
    ({}, "Pending", None),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/1 nodes are available: 1 Insufficient cpu."}]},
     "Pending", "0/1 nodes are available: 1 Insufficient cpu. (Unschedulable)"),
    ({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff",
                                                                        "message": "pull failed"}}}]},
     "Pending", "ImagePullBackOff: pull failed"),
    ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
     "Failed", "Evicted: The node was low on resource: memory."),
    ({"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]},
     "Failed", "its agent exited with 1 (Error)"),
])
def test_a_pods_state_says_why_it_waits_or_ended(status: dict, phase: str, says: str | None) -> None:
    assert pod_state({"status": status}) == (phase, says)


@pytest.mark.parametrize(("path", "kind"), [("attached/kubernetes.yml", "compute"),
                                            ("endpoints/kubernetes/endpoint.yml", "online-endpoint"),
                                            ("endpoints/kubernetes/deployment.yml", "online-deployment")])
def test_the_kubernetes_examples_load(path: str, kind: str) -> None:
    from pathlib import Path

    from cible.core.specs.azureml.loader import load_spec

    loaded = load_spec(Path(__file__).resolve().parents[2] / "examples" / path, kind)
    assert loaded.entity.name


class _Available:
    url = "http://10.0.0.5:8080"

    def status(self):  # noqa: ANN201
        from cible.backends.base.contract import ProviderStatus

        return ProviderStatus(name="kubernetes", available=True, reachable=True)


@pytest.mark.parametrize(("content", "says"), [
    ("secret-line: [unclosed\n  token: s3cr3t-value\n", "it is not valid YAML (line 2)"),
    ("s3cr3t-value\n", "it is not a kubeconfig"),
])
def test_a_file_that_is_no_kubeconfig_is_refused_without_quoting_it(tmp_path, content: str, says: str) -> None:
    from cible.server.services.kubernetes import attach_kubernetes

    path = tmp_path / "kubeconfig"
    path.write_text(content)
    compute = KubernetesCompute(name="k8s", namespace="ml", cible={"kubeconfig": str(path)})
    with pytest.raises(InvalidRequestError) as refused:
        attach_kubernetes(compute, _Available())
    assert refused.value.details == {"field": "cible.kubeconfig", "reason": "kubeconfig"}
    assert says in refused.value.message and "s3cr3t" not in refused.value.message
