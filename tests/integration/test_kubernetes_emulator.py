"""The emulated Kubernetes test harness itself (cible.testing.kubernetes): an emulated API server (kmock)
with the test as kubelet and scheduler, NOT a real cluster. These tests check the harness through the
official `kubernetes` client and a kubeconfig, as the code under test will reach it: that pods run as
local processes and their statuses, scheduling, deletion and eviction look as Kubernetes shows them, and
that the API answers (namespaces, RBAC refusals, selectors, an unreachable server) as a real one does."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")
pytest.importorskip("kmock")

from kubernetes.client import ApiException
from urllib3.exceptions import HTTPError as UrllibError

from cible.testing.kubernetes import EmulatedKubernetes, EmulatedNode

NODES = (EmulatedNode("node-a", cpu="1", memory="2Gi", labels={"pool": "cpu"}),
         EmulatedNode("node-g", cpu="2", memory="4Gi", gpus=1, labels={"pool": "gpu"}))


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[EmulatedKubernetes]:
    with EmulatedKubernetes(tmp_path, namespaces=("default", "ml"), nodes=NODES, python=sys.executable,
                            grace_s=0.5) as cluster:
        yield cluster


@pytest.fixture
def api(k8s: EmulatedKubernetes) -> Any:
    client = kubernetes.config.new_client_from_config(str(k8s.kubeconfig), context="emulated")
    yield kubernetes.client.CoreV1Api(client)
    client.close()


def pod(name: str, code: str, *, cpu: str = "100m", labels: dict[str, str] | None = None,
        env: list[dict[str, Any]] | None = None, selector: dict[str, str] | None = None,
        args: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "main", "image": "python:3.11-slim", "command": ["python3", "-c", textwrap.dedent(code)],
                        "args": args or [], "env": env or [], "workingDir": "/work",
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                        "resources": {"requests": {"cpu": cpu, "memory": "128Mi"},
                                      "limits": {"cpu": cpu, "memory": "128Mi"}}}],
        "volumes": [{"name": "work", "emptyDir": {}}]}
    if selector:
        spec["nodeSelector"] = selector
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


SLEEPER = """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only the SIGKILL after the grace ends it
    child = subprocess.Popen(["sleep", "60"])
    print("ready", child.pid, flush=True)
    time.sleep(60)
"""


def status(api: Any, name: str, namespace: str = "ml") -> dict[str, Any]:
    return api.api_client.sanitize_for_serialization(api.read_namespaced_pod(name, namespace)).get("status") or {}


def phase(api: Any, name: str, namespace: str = "ml") -> str | None:
    return status(api, name, namespace).get("phase")


def said(exc: ApiException) -> str:
    """The message of the Status an API error came with."""
    return json.loads(exc.body)["message"]


def exists(pid: int) -> bool:
    """Whether the pid is there at all (a killed container process the kubelet has not reaped yet is)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an orphan's zombie may wait for PID 1 to reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_emulated_pod_runs_python_and_succeeds_with_its_output(k8s: EmulatedKubernetes, api: Any) -> None:
    api.create_namespaced_pod("ml", pod("hello", "import os; print('hello from', os.getcwd()); open('f', 'w')"))
    k8s.wait_for(lambda: phase(api, "hello") == "Succeeded", 20, "pod hello to succeed")
    seen = status(api, "hello")
    assert seen["podIP"].startswith("127.0.0.") and int(seen["podIP"].rsplit(".", 1)[1]) >= 100
    assert seen["hostIP"] == "127.0.0.1"
    assert {"type": "PodScheduled", "status": "True"} in seen["conditions"]
    terminated = seen["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    work = k8s.root / "pods" / "ml" / "hello" / "volumes" / "work"
    assert f"hello from {work}" in k8s.log("ml", "hello")
    assert (work / "f").exists()
    assert "hello from" in api.read_namespaced_pod_log("hello", "ml")
    got = api.read_namespaced_pod("hello", "ml")
    assert got.metadata.uid and got.metadata.creation_timestamp and got.spec.node_name in ("node-a", "node-g")

    api.create_namespaced_pod("ml", pod("fails", "import sys; print('oops', file=sys.stderr); sys.exit(3)"))
    k8s.wait_for(lambda: phase(api, "fails") == "Failed", 20, "pod fails to fail")
    terminated = status(api, "fails")["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert "oops" in k8s.log("ml", "fails")


def test_emulated_pod_env_from_secret_pod_ip_and_var_expansion(k8s: EmulatedKubernetes, api: Any) -> None:
    api.create_namespaced_secret("ml", {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}})
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "GREETING", "value": "hi"}, {"name": "BOTH", "value": "$(GREETING)-$(POD_NAME)"}]
    code = """
        import os, socket, sys
        s = socket.socket(); s.bind((os.environ["POD_IP"], 0))  # the pod's own address is bindable
        print("argv", sys.argv[1:], "token", os.environ["TOKEN"], "ip", os.environ["POD_IP"],
              "both", os.environ["BOTH"], "home", os.environ["HOME"], flush=True)
    """
    api.create_namespaced_pod("ml", pod("envy", code, env=env, args=["$(GREETING)", "$$(GREETING)", "$(UNKNOWN)"]))
    k8s.wait_for(lambda: phase(api, "envy") == "Succeeded", 20, "pod envy to succeed")
    ip = status(api, "envy")["podIP"]
    home = k8s.root / "pods" / "ml" / "envy" / "home"
    assert (f"argv ['hi', '$(GREETING)', '$(UNKNOWN)'] token s3cret ip {ip} both hi-envy home {home}"
            in k8s.log("ml", "envy"))


def test_emulated_pod_with_missing_secret_waits_in_create_container_config_error(k8s: EmulatedKubernetes,
                                                                                 api: Any) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    api.create_namespaced_pod("ml", pod("waits", "import os; print(os.environ['TOKEN'])", env=env))

    def waiting() -> dict[str, Any] | None:
        statuses = status(api, "waits").get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting")

    reason = k8s.wait_for(waiting, 20, "the container to wait for its secret")
    assert reason == {"reason": "CreateContainerConfigError", "message": 'secret "later" not found'}
    assert phase(api, "waits") == "Pending"
    api.create_namespaced_secret("ml", {"metadata": {"name": "later"}, "data": {"token": "dG9rZW4tdmFsdWU="}})
    k8s.wait_for(lambda: phase(api, "waits") == "Succeeded", 20, "pod waits to run once its secret exists")
    assert "token-value" in k8s.log("ml", "waits")


def test_emulated_scheduler_keeps_a_pod_too_large_pending_until_a_node_has_room(k8s: EmulatedKubernetes,
                                                                               api: Any) -> None:
    api.create_namespaced_pod("ml", pod("big", SLEEPER, cpu="1500m"))  # only node-g (2 cpu) fits it
    k8s.wait_for(lambda: phase(api, "big") == "Running", 20, "pod big to run")
    assert api.read_namespaced_pod("big", "ml").spec.node_name == "node-g"
    api.create_namespaced_pod("ml", pod("second", "print('second ran')", cpu="1200m"))

    def unschedulable() -> dict[str, Any] | None:
        found = [c for c in status(api, "second").get("conditions") or [] if c["type"] == "PodScheduled"]
        return found[0] if found and found[0]["status"] == "False" else None

    condition = k8s.wait_for(unschedulable, 20, "pod second to be unschedulable")
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == "0/2 nodes are available: 2 Insufficient cpu."
    assert phase(api, "second") == "Pending"
    k8s.delete_pod("ml", "big")
    k8s.wait_for(lambda: phase(api, "second") == "Succeeded", 20, "pod second to run once node-g has room")
    assert "second ran" in k8s.log("ml", "second")


def test_emulated_scheduler_leaves_a_pod_whose_node_selector_matches_no_node_pending(k8s: EmulatedKubernetes,
                                                                                   api: Any) -> None:
    api.create_namespaced_pod("ml", pod("nowhere", "print(1)", selector={"pool": "tpu"}))
    api.create_namespaced_pod("ml", pod("gpu", "import time; time.sleep(0.2)", selector={"pool": "gpu"}))
    k8s.wait_for(lambda: phase(api, "gpu") == "Succeeded", 20, "the gpu pool's pod to run")
    assert api.read_namespaced_pod("gpu", "ml").spec.node_name == "node-g"
    message = k8s.wait_for(lambda: [c.get("message") for c in status(api, "nowhere").get("conditions") or []], 20)
    assert message == ["0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."]
    assert phase(api, "nowhere") == "Pending" and k8s.pid("ml", "nowhere") is None


def test_emulated_gpu_requests_count_against_a_nodes_gpus(k8s: EmulatedKubernetes, api: Any) -> None:
    for name in ("gpu-1", "gpu-2"):
        manifest = pod(name, SLEEPER)
        manifest["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
        api.create_namespaced_pod("ml", manifest)
    k8s.wait_for(lambda: phase(api, "gpu-1") == "Running", 20, "the first GPU pod to run")
    message = k8s.wait_for(lambda: [c.get("message") for c in status(api, "gpu-2").get("conditions") or []], 20)
    assert message == ["0/2 nodes are available: 2 Insufficient nvidia.com/gpu."]
    assert api.read_namespaced_pod("gpu-1", "ml").spec.node_name == "node-g"


def test_emulated_delete_kills_the_pods_processes_after_the_grace(k8s: EmulatedKubernetes, api: Any) -> None:
    api.create_namespaced_pod("ml", pod("doomed", SLEEPER))
    line = k8s.wait_for(lambda: [x for x in k8s.log("ml", "doomed").splitlines() if x.startswith("ready")], 20)
    child, main = int(line[0].split()[1]), k8s.pid("ml", "doomed")
    assert main is not None and alive(main) and alive(child)
    api.delete_namespaced_pod("doomed", "ml")
    with pytest.raises(ApiException) as gone:
        api.read_namespaced_pod("doomed", "ml")
    assert (gone.value.status, said(gone.value)) == (404, 'pods "doomed" not found')
    k8s.wait_for(lambda: not exists(main) and not alive(child), 10, "the deleted pod's processes to be killed")


def test_emulated_eviction_fails_the_pod_as_evicted(k8s: EmulatedKubernetes, api: Any) -> None:
    api.create_namespaced_pod("ml", pod("evictee", SLEEPER))
    k8s.wait_for(lambda: "ready" in k8s.log("ml", "evictee"), 20, "pod evictee to start")
    main = k8s.pid("ml", "evictee")
    k8s.evict("ml", "evictee", message="The node was low on resource: memory.")
    seen = status(api, "evictee")
    assert (seen["phase"], seen["reason"], seen["message"]) == ("Failed", "Evicted",
                                                                "The node was low on resource: memory.")
    assert seen["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    assert main is not None and not alive(main)


def test_emulated_namespaces_are_read_and_creates_elsewhere_are_404(k8s: EmulatedKubernetes, api: Any) -> None:
    assert api.read_namespace("ml").status.phase == "Active"
    assert {ns.metadata.name for ns in api.list_namespace().items} == {"default", "ml"}
    with pytest.raises(ApiException) as missing:
        api.read_namespace("nope")
    assert (missing.value.status, said(missing.value)) == (404, 'namespaces "nope" not found')
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_pod("nope", pod("p", "print(1)"))
    assert (refused.value.status, said(refused.value)) == (404, 'namespaces "nope" not found')
    assert k8s.pods() == []


def test_emulated_forbid_answers_403_with_the_rbac_message(k8s: EmulatedKubernetes, api: Any) -> None:
    k8s.forbid("ml", resource="pods", verb="create")
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_pod("ml", pod("p", "print(1)"))
    assert refused.value.status == 403
    assert said(refused.value) == ('pods is forbidden: User "cible-test" cannot create resource "pods" in API group "" '
                                   'in the namespace "ml"')
    assert k8s.pods("ml") == []
    api.create_namespaced_pod("default", pod("p", "print(1)"))  # other namespaces are not refused
    k8s.allow("ml")
    api.create_namespaced_pod("ml", pod("p", "print(1)"))


def test_emulated_api_errors_say_what_a_real_server_says(k8s: EmulatedKubernetes, api: Any) -> None:
    api.create_namespaced_secret("ml", {"metadata": {"name": "dup"}, "stringData": {"a": "b"}})
    with pytest.raises(ApiException) as conflict:
        api.create_namespaced_secret("ml", {"metadata": {"name": "dup"}, "stringData": {"a": "b"}})
    assert (conflict.value.status, said(conflict.value)) == (409, 'secrets "dup" already exists')
    api.delete_namespaced_secret("dup", "ml")
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_secret("dup", "ml")
    assert missing.value.status == 404
    assert api.list_namespaced_secret("ml").items == []
    stranger = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=k8s.url))
    with pytest.raises(ApiException) as unauthorized:
        kubernetes.client.CoreV1Api(stranger).list_namespaced_pod("ml")
    assert unauthorized.value.status == 401
    stranger.close()


def test_emulated_label_and_field_selectors_filter_lists_and_watches(k8s: EmulatedKubernetes, api: Any) -> None:
    for name, labels in (("a", {"app": "x", "tier": "web"}), ("b", {"app": "x"}), ("c", {"app": "y"})):
        api.create_namespaced_pod("ml", pod(name, "print(1)", labels=labels))
    api.create_namespaced_pod("default", pod("d", "print(1)", labels={"app": "x"}))

    def names(selector: str, namespace: str | None = "ml", field: str | None = None) -> list[str]:
        if namespace is None:
            found = api.list_pod_for_all_namespaces(label_selector=selector, field_selector=field).items
        else:
            found = api.list_namespaced_pod(namespace, label_selector=selector, field_selector=field).items
        return sorted(p.metadata.name for p in found)

    assert names("app=x") == ["a", "b"]
    assert names("app=x,tier=web") == ["a"]
    assert names("app!=x") == ["c"]
    assert names("tier") == ["a"] and names("!tier") == ["b", "c"]
    assert names("app in (y, z)") == ["c"] and names("app notin (x)") == ["c"]
    assert names("app=x", namespace=None) == ["a", "b", "d"]
    assert names("", field="metadata.name=b") == ["b"]
    assert [p["metadata"]["name"] for p in k8s.pods("ml", selector="tier=web")] == ["a"]
    events = kubernetes.watch.Watch().stream(api.list_namespaced_pod, "ml", label_selector="app=y", timeout_seconds=1)
    assert {e["object"].metadata.name for e in events} == {"c"}


def test_emulated_instance_types_are_cluster_scoped_custom_objects(k8s: EmulatedKubernetes) -> None:
    spec = {"resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "nodeSelector": {"pool": "cpu"}}
    k8s.add_instance_type("small", spec)
    custom = kubernetes.client.CustomObjectsApi(k8s.core.api_client)
    listed = custom.list_cluster_custom_object("amlarc.azureml.com", "v1alpha1", "instancetypes")
    assert [(i["kind"], i["metadata"]["name"], i["spec"]) for i in listed["items"]] == [("InstanceType", "small", spec)]
    assert custom.get_cluster_custom_object("amlarc.azureml.com", "v1alpha1", "instancetypes", "small")["spec"] == spec
    assert {n.metadata.name for n in k8s.core.list_node().items} == {"node-a", "node-g"}


def test_emulated_api_can_stop_and_start_while_pods_keep_running(k8s: EmulatedKubernetes, api: Any) -> None:
    api.create_namespaced_pod("ml", pod("steady", "import time; print('up', flush=True); time.sleep(0.5)"))
    k8s.wait_for(lambda: "up" in k8s.log("ml", "steady"), 20, "pod steady to start")
    port = k8s.port
    k8s.stop_api()
    with pytest.raises(UrllibError) as down:
        api.list_namespaced_pod("ml", _request_timeout=5)
    assert "refused" in str(down.value).lower()
    k8s.wait_for(lambda: (k8s.pod("ml", "steady") or {}).get("status", {}).get("phase") == "Succeeded", 20,
                 "pod steady to finish while the API is down")
    k8s.start_api()
    assert k8s.port == port and phase(api, "steady") == "Succeeded"


def test_emulated_kubeconfigs_elsewhere_context_is_unreachable(k8s: EmulatedKubernetes) -> None:
    client = kubernetes.config.new_client_from_config(str(k8s.kubeconfig), context="elsewhere")
    with pytest.raises(UrllibError):
        kubernetes.client.CoreV1Api(client).read_namespace("ml", _request_timeout=5)
    client.close()
    default = kubernetes.config.new_client_from_config(str(k8s.kubeconfig))  # current-context: emulated
    assert default.configuration.host == k8s.url
    default.close()


def test_emulated_wait_for_says_what_it_waited_for(k8s: EmulatedKubernetes) -> None:
    with pytest.raises(AssertionError, match="waited-for thing"):
        k8s.wait_for(lambda: None, timeout=0.2, what="the waited-for thing")
