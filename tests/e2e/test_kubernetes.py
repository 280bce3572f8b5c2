"""Kubernetes computes end to end: the CLI against a real server whose nodes are pods of an EMULATED
Kubernetes cluster. No real API server can run on these machines (../shared/reference/backends.md §4):
the API server is kmock's KubernetesEmulator on loopback HTTP, and the test plays the scheduler and the
kubelet (cible.testing.kubernetes: pods scheduled against emulated nodes' capacity, their containers
run as local processes, each pod at an address of its own, 127.0.0.1xx). cible talks to it with the
official `kubernetes` client and a kubeconfig, as to a real cluster: nothing in cible knows it is emulated.

The pods' image is the test's Python (the emulated kubelet runs `python3` as this interpreter); each
pod fetches cible's node code from the server, as on a real cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import REPO, Workspace, wait_until, write_yaml

from cible.testing.kubelet import EmulatedNode
from cible.testing.kubernetes import EmulatedKubernetes

EXAMPLES = REPO / "examples"
HOST_ENV = "environment: {image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest}"  # the pod's Python
SMALL = {"nodeSelector": {"pool": "cpu"},
         "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}
HUGE = {"resources": {"requests": {"cpu": "32", "memory": "1Gi"}, "limits": {"cpu": "32", "memory": "1Gi"}}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedKubernetes]:
    nodes = tuple(EmulatedNode(f"node-{n}", cpu="4", memory="8Gi", labels={"pool": "cpu"}) for n in "ab")
    with EmulatedKubernetes(tmp_path_factory.mktemp("emulated-k8s"), namespaces=("default", "ml", "locked"),
                            nodes=nodes) as k8s:
        k8s.add_instance_type("small", SMALL)
        k8s.add_instance_type("huge", HUGE)
        k8s.forbid("locked", resource="pods", verb="create")
        yield k8s


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, cluster: EmulatedKubernetes) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("ws"), tracking=True)  # sweep trials log their metric
    workspace.env["CIBLE_NODE_HEARTBEAT_TIMEOUT"] = "10"
    workspace.cible("compute", "attach", "--type", "kubernetes", "--name", "k8s", "--kubeconfig", cluster.kubeconfig,
                    "--namespace", "ml", "--set", "cible.idle_time_before_scale_down=3")
    yield workspace
    workspace.stop()


def _pods_of(cluster: EmulatedKubernetes, job: dict) -> list[dict]:
    nodes = set(job.get("nodes") or [])
    return [p for p in cluster.pods("ml") if p["metadata"]["annotations"].get("cible.dev/node-id") in nodes]


def test_attach_reads_the_clusters_instance_types_and_says_where_it_is(ws: Workspace,
                                                                         cluster: EmulatedKubernetes) -> None:
    compute = ws.json("compute", "show", "-n", "k8s")
    assert compute["type"] == "kubernetes" and compute["namespace"] == "ml" and compute["api_server"] == cluster.url
    types = compute["instance_types"]
    assert types["small"]["source"] == "cluster" and types["small"]["nodeSelector"] == {"pool": "cpu"}
    assert types["defaultinstancetype"]["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert compute["provider_status"]["name"] == "kubernetes" and compute["provider_status"]["available"]
    # The example file (Azure's attach YAML with cible's keys): its own `small` replaces the cluster's, saying so.
    attached = ws.json("compute", "attach", "-f", EXAMPLES / "attached" / "kubernetes.yml", "--name", "k8s-file",
                       "--set", f"cible.kubeconfig={cluster.kubeconfig}")
    assert attached["instance_types"]["small"]["source"] == "cible.instance_types"
    assert attached["instance_types"]["gpu"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any("replaces the cluster's InstanceType" in w for w in attached["warnings"])
    ws.cible("compute", "detach", "-n", "k8s-file", "--yes")


def test_a_hello_world_job_runs_in_a_pod_of_its_instance_type_which_goes_after_it(
        ws: Workspace, cluster: EmulatedKubernetes) -> None:
    spec = write_yaml(ws.cwd, "hello-k8s.yml", f"""
        command: echo "hello from $(hostname -I 2>/dev/null || echo a pod)"; python -c "import os; print('node', os.environ['AZUREML_CR_NODE_RANK'] if 'AZUREML_CR_NODE_RANK' in os.environ else 0)"
        {HOST_ENV}
        compute: azureml:k8s
        resources: {{instance_type: small}}
    """)
    name = ws.json("job", "create", "-f", spec)["name"]
    job = ws.wait_status(name, timeout=120)
    assert job["status"] == "Completed", ws.run_log(name)
    assert "hello from" in ws.run_log(name)
    assert job["target"] == "k8s:small" and job["compute"] == "azureml:k8s"
    history = ws.json("compute", "show", "-n", "k8s")["pools"]
    assert [p["instance_type"] for p in history] == ["small"]
    # Its pod had the type's requests and limits, and goes once idle (cible.idle_time_before_scale_down: 3).
    wait_until(lambda: not cluster.pods("ml"), 60, interval=0.2, message="the idle pod to be deleted")


def test_a_two_node_distributed_job_spans_two_pods_with_rank_0s_ip_as_master(
        ws: Workspace, cluster: EmulatedKubernetes) -> None:
    """Azure's distributed PyTorch example, unchanged but for its compute: an all-reduce over gloo between
    two pods (2 processes each), MASTER_ADDR the rank-0 pod's IP."""
    name = ws.json("job", "create", "-f", EXAMPLES / "clusters" / "distributed-pytorch.yml", "--set",
                   "compute=azureml:k8s", "--set", "resources.instance_type=small", "--set",
                   "command=python allreduce.py && echo master=$MASTER_ADDR")["name"]
    running = wait_until(lambda: (j := ws.job(name))["status"] in ("Running", "Completed", "Failed") and j, 120,
                         interval=0.2, message="the job to start")
    pods = {p["metadata"]["annotations"]["cible.dev/node-id"]: p for p in cluster.pods("ml")}
    job = ws.wait_status(name, timeout=240)
    logs = ws.home / "runs" / name / "artifacts" / "user_logs"
    found = {p.name: p.read_text() for p in logs.glob("*.txt")}
    assert job["status"] == "Completed", (job, found)
    for log, line in {"std_log.txt": "rank=0 world=4 node_rank=0 local_rank=0 sum=10",
                      "std_log_process_3.txt": "rank=3 world=4 node_rank=1 local_rank=1 sum=10"}.items():
        assert line in found.get(log, ""), (log, found)
    ips = [pods[node]["status"]["podIP"] for node in running["nodes"]]
    assert len(set(ips)) == 2
    assert f"master={ips[0]}" in found["std_log_process_3.txt"]  # node rank 1 joined rank 0's pod


def test_sweep_trials_and_pipeline_steps_run_in_pods(ws: Workspace) -> None:
    """Azure's examples, unchanged but for their compute: each trial and each step is a job of its own on the
    Kubernetes compute (the default instance type: none is named)."""
    sweep = ws.json("job", "create", "-f", EXAMPLES / "sweeps" / "hello-sweep.yml", "--set", "compute=azureml:k8s",
                    "--set", "limits.max_total_trials=2")["name"]
    pipeline = ws.json("job", "create", "-f", EXAMPLES / "pipelines" / "hello-pipeline.yml", "--set",
                       "settings.default_compute=azureml:k8s")["name"]
    for parent in (sweep, pipeline):
        assert ws.wait_status(parent, timeout=240)["status"] == "Completed", ws.job(parent)
        children = ws.json("job", "list", "--parent-job-name", parent)
        assert children and {c["target"] for c in children} == {"k8s:defaultinstancetype"}, children


def test_a_warm_pod_outlives_a_server_restart_takes_the_next_job_and_goes_with_a_detach(
        ws: Workspace, cluster: EmulatedKubernetes) -> None:
    ws.cible("compute", "attach", "--type", "kubernetes", "--name", "k8s-warm", "--kubeconfig", cluster.kubeconfig,
             "--namespace", "default", "--set", "cible.idle_time_before_scale_down=600")
    spec = write_yaml(ws.cwd, "warm-k8s.yml", f"""
        command: echo warm
        {HOST_ENV}
        compute: azureml:k8s-warm
    """)
    first = ws.json("job", "create", "-f", spec)["name"]
    assert ws.wait_status(first, timeout=120)["status"] == "Completed"
    node = ws.job(first)["nodes"][0]
    ws.stop()  # the pod and its agent go on; the restarted server finds them from their records
    second = ws.json("job", "create", "-f", spec)["name"]
    assert ws.wait_status(second, timeout=120)["status"] == "Completed"
    assert ws.job(second)["nodes"] == [node]  # the same pod, no new one
    assert len(cluster.pods("default")) == 1
    ws.cible("compute", "detach", "-n", "k8s-warm", "--yes")  # its pool drains: the idle pod is deleted
    wait_until(lambda: not cluster.pods("default"), 60, interval=0.2, message="the detached compute's pod to go")


def test_a_deleted_pod_requeues_its_job_saying_why(ws: Workspace, cluster: EmulatedKubernetes) -> None:
    spec = write_yaml(ws.cwd, "long-k8s.yml", f"""
        command: python -c "import time; print('up', flush=True); time.sleep(600)"
        {HOST_ENV}
        compute: azureml:k8s
        resources: {{instance_type: small}}
    """)
    name = ws.json("job", "create", "-f", spec)["name"]
    job = wait_until(lambda: (j := ws.job(name))["status"] == "Running" and j, 120, interval=0.2,
                     message="the job to run")
    pod = _pods_of(cluster, job)[0]["metadata"]["name"]
    cluster.delete_pod("ml", pod)
    again = wait_until(lambda: (j := ws.job(name)).get("requeues") and j, 60, interval=0.2,
                       message="the job to be requeued")
    assert f"its pod ml/{pod} was deleted" in again["requeues"][0]["reason"]
    wait_until(lambda: (j := ws.job(name))["status"] == "Running" and j.get("attempt") == 2, 120, interval=0.2,
               message="the second attempt to run on a new pod")
    ws.cible("job", "cancel", "-n", name)
    assert ws.wait_status(name, timeout=60)["status"] == "Canceled"


def test_an_online_deployment_of_type_kubernetes_answers_through_the_gateway(ws: Workspace) -> None:
    code = ws.cwd / "k8s-score"
    code.mkdir()
    (code / "score.py").write_text("import json, os\n\ndef init():\n    pass\n\n"
                                   "def run(raw):\n    data = json.loads(raw)['data']\n"
                                   "    return {'sum': sum(data), 'pod': os.environ.get('CIBLE_NODE_ID', '?')[:6]}\n")
    endpoint = write_yaml(ws.cwd, "k8s-endpoint.yml", """
        name: on-k8s
        compute: azureml:k8s
        auth_mode: key
    """)
    deployment = write_yaml(ws.cwd, "k8s-deployment.yml", f"""
        name: blue
        type: kubernetes
        endpoint_name: on-k8s
        code_configuration: {{code: {code}, scoring_script: score.py}}
        {HOST_ENV}
        instance_type: small
        scale_settings: {{type: target_utilization, min_instances: 1, max_instances: 2}}
        resources: {{requests: {{cpu: "0.1", memory: 0.2Gi}}, limits: {{cpu: "0.5", memory: 1Gi}}}}
    """)
    ws.cible("online-endpoint", "create", "-f", endpoint)
    created = ws.json("online-deployment", "create", "-f", deployment, "--all-traffic")
    assert created["provisioning_state"] == "Succeeded"
    request = write_yaml(ws.cwd, "k8s-request.json", '{"data": [1, 2, 3]}')
    answer = json.loads(ws.cible("online-endpoint", "invoke", "-n", "on-k8s", "--request-file", request).stdout)
    assert answer["sum"] == 6
    ws.cible("online-endpoint", "delete", "-n", "on-k8s", "--yes")


def test_an_api_server_that_does_not_answer_holds_the_job_saying_so_until_it_answers(
        ws: Workspace, cluster: EmulatedKubernetes) -> None:
    wait_until(lambda: not cluster.pods("ml"), 60, interval=0.2, message="the earlier tests' pods to go")
    cluster.stop_api()
    try:
        spec = write_yaml(ws.cwd, "outage-k8s.yml", f"""
            command: echo after the outage
            {HOST_ENV}
            compute: azureml:k8s
            resources: {{instance_type: small}}
        """)
        name = ws.json("job", "create", "-f", spec)["name"]
        reason = wait_until(lambda: "does not answer" in ((r := ws.job(name).get("queue_reason")) or "") and r, 60,
                            interval=0.2, message="the outage in the job's reason")
        assert cluster.url.removeprefix("http://") in reason
    finally:
        cluster.start_api()
    job = ws.wait_status(name, timeout=180)  # started once the API server answers (after the start back-off)
    assert job["status"] == "Completed" and "after the outage" in ws.run_log(name)


def test_bad_input_and_faults_say_what_is_wrong(ws: Workspace, cluster: EmulatedKubernetes, tmp_path: Path) -> None:
    missing = ws.cible("compute", "attach", "--type", "kubernetes", "--name", "k8s-none", "--kubeconfig",
                       cluster.kubeconfig, "--namespace", "nope", check=False)
    assert missing.returncode != 0 and "namespace nope does not exist" in missing.stderr
    away = ws.cible("compute", "attach", "--type", "kubernetes", "--name", "k8s-away", "--kubeconfig",
                    cluster.kubeconfig, "--context", "elsewhere", "--namespace", "ml", check=False)
    assert away.returncode != 0 and "does not answer" in away.stderr
    no_file = ws.cible("compute", "attach", "--type", "kubernetes", "--name", "k8s-nofile", "--kubeconfig",
                       tmp_path / "nothing", "--namespace", "ml", check=False)
    assert no_file.returncode != 0 and "is not a file" in no_file.stderr
    assert "k8s-none" not in ws.cible("compute", "list").stdout  # nothing stored by a refused attach
    unknown = write_yaml(ws.cwd, "unknown-type.yml", f"""
        command: echo never
        {HOST_ENV}
        compute: azureml:k8s
        resources: {{instance_type: medium}}
    """)
    refused = ws.cible("job", "create", "-f", unknown, check=False)
    assert refused.returncode != 0 and "no instance type 'medium'" in refused.stderr
    assert "defaultinstancetype, huge, small" in refused.stderr

    # An instance type no node can hold: its pod is Pending (FailedScheduling), said in the job's reason.
    huge = write_yaml(ws.cwd, "huge-k8s.yml", f"""
        command: echo never
        {HOST_ENV}
        compute: azureml:k8s
        resources: {{instance_type: huge}}
    """)
    name = ws.json("job", "create", "-f", huge)["name"]
    reason = wait_until(lambda: "Insufficient cpu" in ((r := ws.job(name).get("queue_reason")) or "") and r, 60,
                        interval=0.2, message="the scheduler's reason in the job's")
    assert "Pending" in reason
    ws.cible("job", "cancel", "-n", name)

    # A namespace where the kubeconfig's user may not create pods (RBAC): the compute says so.
    ws.cible("compute", "attach", "--type", "kubernetes", "--name", "k8s-locked", "--kubeconfig", cluster.kubeconfig,
             "--namespace", "locked")
    locked = write_yaml(ws.cwd, "locked-k8s.yml", f"""
        command: echo never
        {HOST_ENV}
        compute: azureml:k8s-locked
    """)
    name = ws.json("job", "create", "-f", locked)["name"]
    reason = wait_until(lambda: "forbidden" in ((r := ws.job(name).get("queue_reason")) or "") and r, 60,
                        interval=0.2, message="the refusal in the job's reason")
    assert "RoleBinding" in reason
    ws.cible("job", "cancel", "-n", name)
