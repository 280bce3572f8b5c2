"""A node pod as the API server is sent it (pure: manifests and names, no calls).

One pod per cible node, `restartPolicy: Never` (a node that ends is a node lost: the cluster
reconciler replaces it and requeues its job by its policy). Its one container runs the image's
Python on BOOTSTRAP: fetch the node code (the stdlib-only bundle an attached machine gets) and,
where the architectures match, the server's `uv` from the server, over the node's own agent routes
with the node's token, then become `python -m cible.agent`. So the image needs Python 3.10+ only.

The token is a Secret of its own (`cible-node-<id>`), given to the container as an environment
variable; the bootstrap hands it to the agent on stdin and execs the agent without it, so it is in
no process's environment or command line once the agent runs. The agent works in the container's
`/cible` (an emptyDir) and advertises the pod's IP (the downward API), which is MASTER_ADDR for a
distributed job whose rank 0 runs there.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from cible.backends.base.contract import NodeRequest
from cible.backends.kubernetes.api import PodTemplate

MANAGED_BY = ("app.kubernetes.io/managed-by", "cible")
WORKSPACE_LABEL = "cible.dev/workspace"
NODE_LABEL = "cible.dev/node"
COMPUTE_LABEL = "cible.dev/compute"
TYPE_LABEL = "cible.dev/instance-type"
NODE_ANNOTATION = "cible.dev/node-id"
WORK_DIR = "/cible"
TOKEN_KEY = "token"

# Runs in the pod (the image's Python, stdlib only). Retries while the server is not reachable yet
# (a pod may start before the network is ready); fails, with why, on a refusal.
BOOTSTRAP = r'''
import io, json, os, platform, sys, tarfile, time, urllib.error, urllib.request
url = os.environ["CIBLE_SERVER_URL"].rstrip("/")
token = os.environ["CIBLE_AGENT_TOKEN"]
base = url + "/api/v1/agent/nodes/" + os.environ["CIBLE_NODE_ID"]
work = os.getcwd()
def get(path, optional=False):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    for attempt in range(40):
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.read()
        except urllib.error.HTTPError as error:
            if optional and error.code == 404:
                return None
            sys.exit("cible node: the server refused %s: %s %s" % (path, error.code, error.read()[:300]))
        except OSError as error:
            print("cible node: the server at %s cannot be reached yet (%s)" % (url, error), file=sys.stderr)
            time.sleep(min(2 ** attempt, 15))
    sys.exit("cible node: the server at %s could not be reached; set cible.server_url on the compute" % url)
bundle = os.path.join(work, "bundle")
with tarfile.open(fileobj=io.BytesIO(get("/bundle")), mode="r:gz") as tar:
    tar.extractall(bundle, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
env = {k: v for k, v in os.environ.items() if k not in ("CIBLE_AGENT_TOKEN", "CIBLE_AGENT_ARGS")}
uv = get("/tools/uv?machine=" + platform.machine(), optional=True)
if uv:
    tools = os.path.join(work, "tools")
    os.makedirs(tools, exist_ok=True)
    with open(os.path.join(tools, "uv"), "wb") as out:
        out.write(uv)
    os.chmod(os.path.join(tools, "uv"), 0o755)
    env["PATH"] = tools + os.pathsep + env.get("PATH", "/usr/bin:/bin")
env["PYTHONPATH"] = bundle
args = json.loads(os.environ["CIBLE_AGENT_ARGS"]) + ["--root", os.path.join(work, "node"), "--url", url]
if os.environ.get("CIBLE_POD_IP"):
    args += ["--advertise-address", os.environ["CIBLE_POD_IP"]]
read, write = os.pipe()
os.write(write, (token + "\n").encode())
os.close(write)
os.dup2(read, 0)
os.execve(sys.executable, [sys.executable, "-m", "cible.agent"] + args, env)
'''


def pod_name(node_id: str) -> str:
    """`cible-<node id>` made a DNS label (lowercase, '-'), at most 63 characters."""
    base = re.sub(r"[^a-z0-9-]+", "-", node_id.lower()).strip("-")
    name = f"cible-{base}"
    if len(name) > 63:
        name = f"{name[:50]}-{hashlib.sha256(node_id.encode()).hexdigest()[:12]}"
    return name


def secret_name(node_id: str) -> str:
    return pod_name(node_id).replace("cible-", "cible-node-", 1)[:63].rstrip("-")


def labels(workspace: str, template: PodTemplate, node_id: str) -> dict[str, str]:
    return {MANAGED_BY[0]: MANAGED_BY[1], WORKSPACE_LABEL: workspace, NODE_LABEL: _label_value(node_id),
            COMPUTE_LABEL: _label_value(template.access.compute), TYPE_LABEL: _label_value(template.instance_type)}


def secret_manifest(workspace: str, template: PodTemplate, request: NodeRequest, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name(request.node_id), "namespace": template.access.namespace,
                         "labels": labels(workspace, template, request.node_id),
                         "annotations": {NODE_ANNOTATION: request.node_id}},
            "stringData": {TOKEN_KEY: token}}


def pod_manifest(workspace: str, template: PodTemplate, request: NodeRequest, server_url: str) -> dict[str, Any]:
    """The node's pod: the instance type's requests, limits and node selector; the agent's arguments
    (the node's size is the instance type's limits, which Kubernetes itself enforces)."""
    spec = template.spec
    agent_args = request.agent_args(None, None)
    env = [{"name": "CIBLE_SERVER_URL", "value": server_url},
           {"name": "CIBLE_NODE_ID", "value": request.node_id},
           {"name": "CIBLE_AGENT_ARGS", "value": json.dumps(agent_args)},
           {"name": "CIBLE_AGENT_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name(request.node_id), "key": TOKEN_KEY}}},
           {"name": "CIBLE_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "PYTHONUNBUFFERED", "value": "1"}]
    container = {"name": "agent", "image": template.image, "command": [template.python, "-c", BOOTSTRAP],
                 "workingDir": WORK_DIR, "env": env,
                 "resources": {"requests": spec.resources.requests.as_kubernetes(),
                               "limits": spec.resources.limits.as_kubernetes()},
                 "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}]}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container],
                                "volumes": [{"name": "work", "emptyDir": {}}],
                                "terminationGracePeriodSeconds": 30, "automountServiceAccountToken": False}
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if template.service_account:
        pod_spec["serviceAccountName"] = template.service_account
    if template.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in template.image_pull_secrets]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(request.node_id), "namespace": template.access.namespace,
                         "labels": labels(workspace, template, request.node_id),
                         "annotations": {NODE_ANNOTATION: request.node_id}},
            "spec": pod_spec}


def pod_state(pod: dict[str, Any]) -> tuple[str, str | None]:
    """(phase, why) of a pod as listed: why it waits (unschedulable, an image that cannot be pulled)
    or why it ended (evicted, its container's exit)."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return phase, f"{condition.get('message') or 'not scheduled'} ({condition.get('reason') or 'Unschedulable'})"
    if status.get("reason"):  # the pod's own (Evicted, by the kubelet): more than its container's end says
        return phase, f"{status['reason']}: {status.get('message') or ''}".rstrip(": ")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            return phase, f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
        ended = state.get("terminated") or {}
        if ended:
            return phase, (f"its agent exited with {ended.get('exitCode')} ({ended.get('reason') or 'Error'})"
                           + (f": {ended['message']}" if ended.get("message") else ""))
    return phase, None


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")
    return value or "x"
